"""The input layer's core: parse and check one block of CSV text, and write CSV results.

A block is a whole file (``read_table``, the memory engine) or a run of its lines
(``dataset.CsvBlocks``, the stream and dask engines): both go through ``read_block``, so
column choice, cell checks, line numbering and wording are the same whatever the engine.
Every message is one line that starts with the file's display name (the path as given, or
``<stdin>``) and names the line and column if any. Line numbers assume no quoted field
spans several lines.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from gmmcli import files
from gmmcli.errors import GmmError
from gmmcli.limits import FLOAT32_MAX_DEVIATION, FLOAT32_MIN_SPREAD, MAX_MAGNITUDE, MEAN_NOISE
from gmmcli.tableoptions import PREDICT_COLUMNS, PredictColumns, RowCounts, TableOptions

if TYPE_CHECKING:  # pandas is imported where a table needs it: a small plain table does not
    import pandas as pd

_TOKENIZE_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_UNCLOSED_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_LISTED_NAMES = 10
_LINE_END = re.compile(r"[\r\n]")
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")
_DECIMAL_POINT = re.compile(r"[+-]?\d*\.\d+")
MAX_COLUMNS = 10_000  # fields on the first line (a wider one is refused before parsing)
_EXCERPT_LIMIT, _EXCERPT = 60, 40  # a cell or name longer than the limit is shown cut
_HAS_CONTENT = re.compile(r"\S")
_HEXADECIMAL = re.compile(r"\s*[+-]?0[xX]")
_HEXADECIMAL_ANYWHERE = re.compile(r"0[xX]")


@dataclass(frozen=True)
class Table:
    """A table (or one block of it) read from a file: the selected features as floats, and
    the kept rows as read."""

    values: np.ndarray  # float64, shape (n, d), C-contiguous, finite or NaN (missing="em")
    names: list[str]  # the d selected feature names ("1", "2", ... without a header)
    source: str  # display name: the path as given, or "<stdin>"
    n_dropped: int  # rows dropped by missing="drop"
    # all columns of the kept rows as read, index 0..n-1; None for a plain table read
    # without pandas (``_read_plain``: every column is in ``names``)
    frame: pd.DataFrame | None
    skipped_columns: list[str]  # non-numeric columns ignored when no columns were selected
    header: bool = True  # whether the file has a header line (how columns are named)
    lines: np.ndarray | None = None  # the file's line number of each kept row
    kept: np.ndarray | None = None  # per data row read (kept or dropped): whether it is kept
    text: pd.DataFrame | None = None  # every column of every data row, as text (keep_text)
    weights: np.ndarray | None = None  # each kept row's weight (--weights), float64
    missing_rows: int = 0  # kept rows with a missing cell (NaN in values: missing="em")
    missing_cells: int = 0

    @property
    def counts(self) -> RowCounts:
        """Rows dropped, and rows and cells missing, as the notes tell them."""
        return RowCounts(self.n_dropped, self.missing_rows, self.missing_cells)

    @property
    def columns(self) -> list[str]:
        """Every column of the table as read (selected or not)."""
        return list(self.names) if self.frame is None else [str(c) for c in self.frame.columns]


@dataclass(frozen=True)
class BlockPlace:
    """Where a block of lines sits in its file, when it is not the whole file.

    A block after the first is parsed after the table's first line (``first_line``, the
    header or the first row), so that it is read exactly as the whole file would be; its own
    first line is line ``line`` of the file, at byte ``byte``. ``whole``: the block is the
    file. ``lead``: the lines before the table (--skip-lines, comments), which the first
    block's parsed text leaves out.
    """

    first_line: bytes = b""
    line: int = 1
    byte: int = 0
    whole: bool = False
    lead: int = 0

    def file_line(self, text_line: int) -> int:
        """The file's line number of line ``text_line`` of the parsed text."""
        if not self.first_line or text_line == 1:
            return text_line + self.lead
        return text_line + self.line - 2

    def text_line(self, file_line: int) -> int:
        """The line of the parsed text that is line ``file_line`` of the file."""
        return file_line - self.lead if not self.first_line else file_line - self.line + 2


WHOLE_FILE = BlockPlace(whole=True)


def read_table(source: str, *, float32: bool = False, **options: Any) -> Table:
    """Read a CSV table from a path or ``-`` (stdin) and select its numeric feature columns.

    ``options`` are the fields of ``TableOptions``. With ``float32`` (the values will be
    worked on in float32), ``check_float32`` refuses values too far from their column's mean
    and columns that vary too little. The whole file is one block (``read_block``).
    """
    return read_file(source, TableOptions(**options), float32=float32)


def read_file(source: str, options: TableOptions, *, float32: bool = False) -> Table:
    """``read_table`` with the options as one value."""
    name = files.display_name(source)
    options.check(name)
    raw = files.read_bytes(source)
    if raw.startswith(GZIP_MAGIC):
        raw = _gunzip(raw, name)
    if raw.startswith(b"PAR1"):
        table = _read_parquet(raw, name, options)
    else:
        refuse_binary(raw[:8], name)
        table = read_block(transcode(raw, name, options.encoding), name, options)
    if float32:
        check_float32(lambda: [table])
    return table


GZIP_MAGIC = b"\x1f\x8b"
_BINARY = {
    b"BZh": "bzip2-compressed (bzcat FILE | gmm ... -)",
    b"\xfd7zXZ\x00": "xz-compressed (xzcat FILE | gmm ... -)",
    b"\x28\xb5\x2f\xfd": "zstd-compressed (zstdcat FILE | gmm ... -)",
    b"PK\x03\x04": "a zip archive (an .xlsx workbook is one): save it as CSV",
}


def refuse_binary(start: bytes, name: str) -> None:
    """A compressed file gmm does not open itself, named with what to do."""
    for magic, what in _BINARY.items():
        if start.startswith(magic):
            raise GmmError(f"{name}: {what}")


def _gunzip(raw: bytes, name: str) -> bytes:
    """A gzip-compressed input, read transparently (the memory engine)."""
    import gzip
    import zlib

    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise GmmError(f"{name}: gzip-compressed, but cannot be decompressed: {error}") from None


def is_utf8(encoding: str) -> bool:
    """Whether ``encoding`` names UTF-8 (an unknown name is a one-line error)."""
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        raise GmmError(
            f"--encoding {encoding!r}: unknown encoding (e.g. latin-1, cp1252, utf-16)"
        ) from None


def transcode(raw: bytes, name: str, encoding: str) -> bytes:
    """The input as UTF-8 bytes: as it is, or decoded from ``encoding`` (--encoding)."""
    if is_utf8(encoding):
        return raw
    try:
        return raw.decode(encoding).encode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise GmmError(
            f"{name}: not valid {encoding} text (byte 0x{raw[error.start]:02x} on line {line}, "
            f"offset {error.start})"
        ) from None


def _read_parquet(raw: bytes, name: str, options: TableOptions) -> Table:
    """A Parquet file read whole (the memory engine): its numeric columns chosen as the
    Dask engine chooses them (``dataset.parquet_layout``), cells checked as a CSV's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    options.check_parquet(name)
    try:
        arrow = pq.read_table(io.BytesIO(raw))
    except Exception as error:  # pyarrow raises several types for a bad file
        reason = " ".join(str(error).split()) or type(error).__name__
        raise GmmError(f"{name}: cannot read as Parquet ({reason})") from None
    names = [n for n in arrow.column_names if not n.startswith("__")]
    kinds = {n: arrow.schema.field(n).type for n in names}
    numeric = [n for n in names if pa.types.is_integer(kinds[n]) or pa.types.is_floating(kinds[n])]
    frame = arrow.select(names).to_pandas()
    reader = Cells(name, frame, numbered=False)
    selected = choose_columns(reader, options)
    skipped: list[str] = []
    if selected is None:
        selected, skipped = numeric, [n for n in names if n not in numeric]
        if not selected:
            raise GmmError(f"{name}: no numeric columns (columns: {_list_names(names)})")
        if options.n_required is not None:
            reader.check_count(options.n_required, selected, skipped, explicit=False)
    for column in selected:
        if column not in numeric:
            raise GmmError(f"{name}: column {_q(column)} is not numeric ({kinds[column]})")
    values = frame[selected].to_numpy(dtype=np.float64, na_value=np.nan)
    text = frame if options.keep_text else None
    return check_values(values, selected, skipped, reader, options, whole=True, text=text)


def read_block(
    raw: bytes,
    name: str,
    options: TableOptions,
    place: BlockPlace = WHOLE_FILE,
) -> Table:
    """One block of CSV text (a whole file, or the lines at ``place``, after the file's first
    line ``place.first_line`` unless it is the first block) parsed, its columns
    chosen and its cells checked: missing or non-finite values (an error, or rows dropped)
    and values beyond ±``MAX_MAGNITUDE``.

    The whole file must have data rows; a block may have none (an empty ``Table``).
    """
    whole = place.whole
    if not place.first_line and (options.skip_lines or options.comment):
        raw, lead = cut_lead(raw, options)
        place = replace(place, lead=lead)
        if whole and not raw.strip():
            raise GmmError(f"{name}: no table after the first {lead} lines (--skip-lines)")
    if options.comment:
        raw = _blank_comments(raw, options.comment)
    body, text = decode(raw, name, place)
    if whole and not _HAS_CONTENT.search(text):
        raise GmmError(f"{name}: the file is empty")
    if not whole and not _HAS_CONTENT.search(text, len(place.first_line.decode("utf-8"))):
        return _empty_block(name, options)
    if not place.first_line:  # the file's first line is here: judged before any parsing
        _check_first_line(text, name, options, place)
    if whole:
        plain = _read_plain(text, name, options, place)
        if plain is not None:
            return plain
    fast = _parse_fast(body, text, options)
    if fast is not None:
        try:
            frame = _without_first_line(fast, place, options)
            return _select(name, body, text, frame, options, place)
        except GmmError:
            pass  # the exact reader below finds the same problem and names its line
    frame = _parse(body, text, name, options, place)
    frame = _without_first_line(_drop_blank_lines(frame, text, options.header), place, options)
    if frame.empty:
        if not whole:
            return _empty_block(name, options)
        raise GmmError(f"{name}: no data rows" + (" (only a header)" if options.header else ""))
    return _select(name, body, text, frame, options, place)


def cut_lead(raw: bytes, options: TableOptions) -> tuple[bytes, int]:
    """``raw`` (the start of a file) from the table's first line on, without a byte-order
    mark, and how many lines came before it: ``options.skip_lines`` lines, then every comment
    line. ``dataset.table_head`` finds the same line in a file."""
    raw = raw.removeprefix(codecs.BOM_UTF8)
    start = lead = 0
    while start < len(raw):
        end = raw.find(b"\n", start)
        end = len(raw) if end < 0 else end + 1
        if lead >= options.skip_lines and not is_comment(raw[start:end], options.comment):
            break
        start, lead = end, lead + 1
    return raw[start:], lead


def is_comment(line: bytes, comment: str | None) -> bool:
    """Whether a line of the file is a comment line (--comment): its first character other
    than a space or tab is ``comment``."""
    return comment is not None and line.lstrip(b" \t").startswith(comment.encode("utf-8"))


def _blank_comments(raw: bytes, comment: str) -> bytes:
    """The block with each comment line emptied (its line ending kept), so that it is dropped
    as a blank line and the line numbers stay the file's."""
    pattern = rb"(?m)^[ \t]*" + re.escape(comment.encode("utf-8")) + rb"[^\r\n]*"
    return re.sub(pattern, b"", raw)


def _check_first_line(text: str, name: str, options: TableOptions, place: BlockPlace) -> None:
    """Refuse in a few milliseconds what parsing would take minutes and gigabytes to refuse:
    a first line of more than ``MAX_COLUMNS`` fields (a 10 MB line of numbers), and a file
    that is only a header line."""
    end = _LINE_END.search(text)
    stop = len(text) if end is None else end.start()
    n_fields = text.count(options.delimiter, 0, stop) + 1  # quoted delimiters count too
    if n_fields > MAX_COLUMNS:
        raise GmmError(
            f"{name}: line {place.file_line(1)} has more than {MAX_COLUMNS:,} fields; gmm "
            f"reads at most {MAX_COLUMNS:,} columns (wrong delimiter, or not a table?)"
        )
    if place.whole and options.header and not _HAS_CONTENT.search(text, stop):
        raise GmmError(f"{name}: no data rows (only a header)")


def _without_first_line(
    frame: pd.DataFrame, place: BlockPlace, options: TableOptions
) -> pd.DataFrame:
    """A block's rows without the file's first line, parsed again before it (no header)."""
    if not place.first_line or options.header:
        return frame
    return frame.drop(index=0, errors="ignore")


def _empty_block(name: str, options: TableOptions) -> Table:
    import pandas as pd

    names = list(options.required or [])
    return Table(
        values=np.empty((0, len(names))),
        names=names,
        source=name,
        n_dropped=0,
        frame=pd.DataFrame(),
        skipped_columns=[],
        header=options.header,
        lines=np.empty(0, dtype=np.int64),
        kept=np.zeros(0, dtype=bool),
    )


def _select(
    name: str,
    body: bytes,
    text: str,
    frame: pd.DataFrame,
    options: TableOptions,
    place: BlockPlace,
) -> Table:
    """The selected numeric columns of a parsed block, checked and with missing rows handled
    (with ``options.keep_text``, every column of every row as text too)."""
    cells = None
    if options.keep_text or _HEXADECIMAL_ANYWHERE.search(text):
        cells = _text_cells(body, name, options, list(frame.columns)).loc[frame.index]
        frame = _hexadecimal_as_text(frame, cells)
    reader = Cells(
        name, frame, options.header, options.delimiter, text, place, decimal=options.decimal
    )
    explicit = options.columns is not None
    selected = choose_columns(reader, options)
    weights = None
    if options.weights is not None:
        column = weight_column(reader, options.weights, selected)
        weights = reader.numeric([column])[0][:, 0]
        reader.check_weights(weights, column)
        if selected is None:
            selected = [c for c in reader.frame.columns if c != column]
    automatic = options.columns is None and options.required is None
    values, selected, skipped = reader.numeric(selected, automatic=automatic)
    if options.n_required is not None:
        reader.check_count(options.n_required, selected, skipped, explicit=explicit)
    if not options.keep_text:
        cells = None
    return check_values(
        values, selected, skipped, reader, options, whole=place.whole, text=cells, weights=weights
    )


def weight_column(reader: Cells, token: str, selected: list[str] | None) -> str:
    """The column --weights names (a name or a 1-based position), which is no feature."""
    column = _resolve_columns(reader, [token])[0]
    if selected is not None and column in selected:
        raise GmmError(f"{reader.name}: column {_q(column)} is selected as a feature and weights")
    return column


def _hexadecimal_as_text(frame: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its hexadecimal cells (``0x10``, which pandas' parser reads as 16) put
    back as the text they are, so that they are not numbers, as in every reader."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype.kind not in "iuf":
            continue
        hexadecimal = cells[column].str.match(_HEXADECIMAL).to_numpy(dtype=bool)
        if hexadecimal.any():
            frame[column] = frame[column].astype(object)
            frame.loc[hexadecimal, column] = cells[column][hexadecimal]
    return frame


def _text_cells(body: bytes, name: str, options: TableOptions, names: list[str]) -> pd.DataFrame:
    """Every cell of a block as the text it is in the file (``007``, ``1.50`` and ``1e2`` stay
    as they are; quotes removed, as the csv module reads them), rows indexed as ``_parse``'s."""
    import pandas as pd

    try:
        with warnings.catch_warnings():  # the typed read judged the fields already
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.BytesIO(body),
                encoding="utf-8",
                sep=options.delimiter,
                header=0 if options.header else None,
                index_col=False,
                dtype=str,
                na_filter=False,
                skip_blank_lines=False,
                skipinitialspace=True,
                low_memory=False,
                engine="c",
            )
    except (pd.errors.ParserError, ValueError) as error:  # read once already: unlikely
        raise GmmError(f"{name}: cannot read the table as text: {error}") from None
    frame.columns = names
    return frame


def check_values(
    values: np.ndarray,
    selected: list[str],
    skipped: list[str],
    reader: Cells,
    options: TableOptions,
    *,
    whole: bool = False,
    text: pd.DataFrame | None = None,
    weights: np.ndarray | None = None,
) -> Table:
    """The feature values (n, d) of ``reader``'s rows checked: a missing or non-finite value
    is an error (or its row dropped, with missing="drop"), and so is a value beyond
    ±``MAX_MAGNITUDE``. With missing="em" a missing cell stays NaN, and a non-finite value
    or a row with no value at all is the error. ``whole``: the rows are the whole table,
    which must keep one. ``text``: the rows' cells as text, kept whole (dropped rows too) in
    the ``Table``. ``weights``: one per row, checked (``Cells.check_weights``); the whole
    table's must not all be 0."""
    name, frame = reader.name, reader.frame
    problems = ~np.isfinite(values)
    if options.missing == "error" and problems.any():
        raise GmmError(reader.missing_message(values, problems, selected))
    missing_rows = missing_cells = 0
    if problems.any():  # a line with too few fields is broken, not missing cells
        short = reader.short_line(np.isnan(values).any(axis=1))
        if short is not None:
            raise GmmError(short)
    if options.missing == "em" and problems.any():
        missing = np.isnan(values)
        if not np.array_equal(missing, problems):
            raise GmmError(reader.missing_message(values, problems & ~missing, selected))
        empty = missing.all(axis=1)
        if empty.any():
            raise GmmError(reader.empty_row_message(int(np.argmax(empty)), selected))
        unseen = np.flatnonzero(missing.all(axis=0))
        if whole and unseen.size:
            column = selected[int(unseen[0])]
            raise GmmError(f"{name}: column {_q(column)} has no value (every cell is missing)")
        missing_rows = int(missing.any(axis=1).sum())
        missing_cells = int(missing.sum())
        problems = np.zeros_like(problems)
    keep = ~problems.any(axis=1)
    n_dropped = int(len(keep) - keep.sum())
    if not keep.any() and whole:
        raise GmmError(no_rows_left(name, n_dropped))
    if n_dropped:
        values, frame = values[keep], frame[keep]
        weights = None if weights is None else weights[keep]
        reader.frame = frame  # rows below count the kept rows; their index is still the line
    if whole and weights is not None and not weights.any():
        raise GmmError(all_weights_zero(name, options.weights or ""))
    huge = np.abs(values) > MAX_MAGNITUDE
    if huge.any():
        raise GmmError(reader.too_large_message(values, huge, selected))
    return Table(
        values=np.ascontiguousarray(values, dtype=np.float64),
        names=selected,
        source=name,
        n_dropped=n_dropped,
        frame=frame.reset_index(drop=True),
        skipped_columns=skipped,
        header=options.header,
        lines=reader.lines(),
        kept=keep,
        text=None if text is None else text.reset_index(drop=True),
        weights=None if weights is None else np.ascontiguousarray(weights, dtype=np.float64),
        missing_rows=missing_rows,
        missing_cells=missing_cells,
    )


def all_weights_zero(name: str, column: str) -> str:
    """The message for a table whose rows all weigh 0 (--weights)."""
    return f"{name}: every weight (--weights {column}) is 0: there is nothing to fit"


def no_rows_left(name: str, n_dropped: int) -> str:
    """The message for a table whose every row was dropped for missing values."""
    return f"{name}: no rows left after dropping {n_dropped} with missing values"


def choose_columns(reader: Cells, options: TableOptions) -> list[str] | None:
    """The selected column names (checked), or None for every numeric column."""
    if options.required is not None:
        selected = _resolve_required(reader, options.required)
    elif options.columns is not None:
        selected = _resolve_columns(reader, options.columns)
    else:
        return None
    if options.n_required is not None:
        reader.check_count(options.n_required, selected, [], explicit=options.columns is not None)
    return selected


def check_float32(blocks: Callable[[], Iterable[Table]]) -> None:
    """Refuse data that --dtype float32 cannot hold, over every block (two passes).

    A value whose distance from its column's mean is ``FLOAT32_MAX_DEVIATION`` or more is
    refused, since its square would overflow float32, and so is a column whose standard
    deviation (about the mean) is below ``FLOAT32_MIN_SPREAD`` but above the mean's rounding
    noise (``MEAN_NOISE``: below it the column is constant). The message names
    the farthest value (the first in reading order) by file, line and column.
    """
    n, total = None, None
    for block in blocks():
        observed = ~np.isnan(block.values)  # a missing cell (missing="em") counts for nothing
        count = observed.sum(axis=0)
        part = np.where(observed, block.values, 0.0).sum(axis=0)
        n = count if n is None else n + count
        total = part if total is None else total + part
    if total is None or n is None or not n.any():
        return
    mean = total / np.maximum(n, 1)
    farthest: tuple[float, Table, int, int] | None = None
    squares = np.zeros_like(mean)
    for block in blocks():
        if not block.values.shape[0]:
            continue
        deviation = np.nan_to_num(np.abs(block.values - mean), nan=0.0)
        squares += (deviation**2).sum(axis=0)
        top = float(deviation.max())
        if farthest is None or top > farthest[0]:
            row, col = np.unravel_index(int(np.argmax(deviation == top)), deviation.shape)
            farthest = (top, block, int(row), int(col))
    assert farthest is not None
    top, block, row, col = farthest
    if top >= FLOAT32_MAX_DEVIATION:
        column = block.names[col]
        line = None if block.lines is None else int(block.lines[row])
        raise GmmError(
            f"{where(block, line, column)}: {block.values[row, col]:.6g} lies "
            f"{top:.3g} from the column's mean ({mean[col]:.6g}), "
            f"too far to square in --dtype float32 (gmm needs |x - mean| < "
            f"{FLOAT32_MAX_DEVIATION:.0e}); use --dtype float64 or --standardize"
        )
    spread = np.sqrt(squares / np.maximum(n, 1))
    constant = spread <= MEAN_NOISE * np.abs(mean)  # and spread 0: one value throughout
    narrow = np.flatnonzero(~constant & (spread < FLOAT32_MIN_SPREAD))
    if narrow.size:
        col = int(narrow[0])
        raise GmmError(
            f"{where(block, None, block.names[col])}: varies by only {spread[col]:.3g} "
            "(standard deviation), too little for --dtype float32, where the inverse of such "
            f"variances overflows (gmm needs at least {FLOAT32_MIN_SPREAD:.0e}); use --dtype "
            "float64 or --standardize"
        )


def numeric_header(source: str, names: list[str], header: bool) -> str | None:
    """A warning when every name of the header line is a number (``1.5,2,-3``): the file
    probably has no header, and its first row was taken for one."""
    if not header or not names:
        return None
    for name in names:
        try:
            float(name)
        except ValueError:
            return None
    return (
        f"{source}: the header line looks like data ({_list_names(names[:3])}"
        + (", …" if len(names) > 3 else "")
        + "): if the file has no header, use --no-header"
    )


def where(table: Table, line: int | None, column: str) -> str:
    """Where a cell of ``table`` is (``describe_cell``)."""
    return describe_cell(table.source, table.header, table.columns, line, column)


def describe_cell(
    name: str, header: bool, all_columns: list[str], line: int | None, column: str
) -> str:
    """``FILE: line L, column 'c' (j)``, or ``FILE: line L, column j`` without a header;
    without a line, only the column."""
    at = "" if line is None else f"line {line}, "
    if not header:
        return f"{name}: {at}column {column}"
    position = all_columns.index(column) + 1
    return f"{name}: {at}column {_q(column)} ({position})"


def write_csv(frame: pd.DataFrame, dest: str) -> None:
    """Write ``frame`` as CSV with a header and no index to stdout ('-') or, atomically, a path.

    Floats are written in their shortest exact form, so they read back exactly. An all-numeric
    frame goes through pyarrow's writer (measured at 1M rows × 9 columns: 0.9 s against
    pandas' 9 s); one with text columns through pandas, which quotes text only where needed.
    """
    files.write_output(dest, csv_bytes(frame))


def prediction_columns(
    resp: np.ndarray, shown: PredictColumns = PREDICT_COLUMNS, noise: bool = False
) -> dict[str, np.ndarray]:
    """predict's result for scored rows, from their responsibilities (n, k): ``label`` (the
    most probable component), then as ``shown`` says ``prob_0 … prob_{k-1}`` and
    ``uncertainty``. With a noise component (``noise``: resp is (n, k + 1), the noise's
    last) the label is −1 where the noise is the most probable, and ``prob_noise`` follows
    the Gaussians' probabilities."""
    from .engine.mixture import labels_of

    columns = {"label": labels_of(resp, noise)}
    if shown.proba:
        for c in range(resp.shape[1] - noise):
            columns[f"prob_{c}"] = resp[:, c]
        if noise:
            columns["prob_noise"] = resp[:, -1]
    if shown.uncertainty:
        columns["uncertainty"] = 1.0 - resp.max(axis=1)
    return columns


def scored_rows(
    columns: dict[str, np.ndarray], kept: np.ndarray | None, inputs: pd.DataFrame | None
) -> pd.DataFrame:
    """The output table of predict and loglik --per-sample (every engine, every block): one
    row per data row read, in order. ``columns`` hold the results of the kept rows; a row
    that was dropped (``kept`` False: a missing value) could not be scored and gets empty
    cells. ``inputs`` (every column of every row, as text) go in front for --keep-input; a
    result name that is also an input column's becomes ``gmm_NAME``."""
    import pandas as pd

    if kept is None or kept.all():
        result = pd.DataFrame(columns)
    else:
        result = pd.DataFrame(index=pd.RangeIndex(len(kept)))
        for name, values in columns.items():
            if values.dtype.kind in "iub":
                full = np.zeros(len(kept), dtype=np.int64)
                full[kept] = values
                result[name] = pd.arrays.IntegerArray(full, ~kept)  # empty where not kept
            else:
                full = np.full(len(kept), np.nan)
                full[kept] = values
                result[name] = full
    if inputs is not None:
        clash = [name for name in result.columns if name in inputs.columns]
        result = result.rename(columns={name: f"gmm_{name}" for name in clash})
        result = pd.concat([inputs.reset_index(drop=True), result], axis=1)
    return result


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as CSV bytes, header included, as ``write_csv`` writes it."""
    numeric = all(kind in "biuf" for kind in frame.dtypes.map(lambda t: t.kind))
    if not numeric:
        return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow([str(c) for c in frame.columns])
    out = io.BytesIO()
    out.write(header.getvalue().encode("utf-8"))
    table = pa.Table.from_pandas(frame, preserve_index=False)

    def part(rows: slice) -> bytes:
        sink = io.BytesIO()
        piece = table.slice(rows.start, rows.stop - rows.start)
        pa_csv.write_csv(piece, sink, pa_csv.WriteOptions(include_header=False))
        return sink.getvalue()

    # the writer runs on one core and releases the GIL: format halves side by side
    bounds = [0, table.num_rows // 2, table.num_rows]
    with ThreadPoolExecutor(max_workers=2) as pool:
        pieces = pool.map(part, [slice(a, b) for a, b in itertools.pairwise(bounds)])
        for piece in pieces:
            out.write(piece)
    return out.getvalue()


def decode(raw: bytes, name: str, place: BlockPlace = WHOLE_FILE) -> tuple[bytes, str]:
    """The bytes without a byte-order mark, and their text (which must be UTF-8); ``raw`` is
    the block at ``place``, after the file's first line unless it is the first block."""
    start = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    body = raw[start:] if start else raw
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in raw[:4096]:
        raise GmmError(f"{name}: UTF-16 text (or binary), not UTF-8: use --encoding utf-16")
    try:
        return body, body.decode("utf-8")
    except UnicodeDecodeError as error:
        at = start + error.start
        line = place.file_line(raw.count(b"\n", 0, at) + 1)
        offset = at - len(place.first_line) + place.byte
        raise GmmError(
            f"{name}: not valid UTF-8 text (byte 0x{raw[at]:02x} on line {line}, offset {offset}):"
            " use --encoding latin-1 (or cp1252) if that is what it is"
        ) from None


def _parse(
    body: bytes, text: str, name: str, options: TableOptions, place: BlockPlace
) -> pd.DataFrame:
    """Parse with pandas; blank lines stay as all-missing rows so index i is line i+1+header.

    pandas reads the bytes (faster than from a str); ``text`` serves the csv module.
    """
    import pandas as pd

    delimiter, header = options.delimiter, options.header
    try:
        with warnings.catch_warnings():
            # pandas only warns, and drops fields, when the first data row outgrows the header
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.BytesIO(body),
                encoding="utf-8",
                sep=delimiter,
                header=0 if header else None,
                index_col=False,
                skip_blank_lines=False,
                skipinitialspace=True,
                low_memory=False,
                engine="c",
                decimal=options.decimal,
            )
    except pd.errors.EmptyDataError:
        raise GmmError(f"{name}: the file is empty") from None
    except pd.errors.ParserWarning:
        raise GmmError(f"{name}: {_long_row(text, delimiter, place)}") from None
    except (pd.errors.ParserError, ValueError) as error:
        raise GmmError(f"{name}: {_parser_reason(error, place)}") from None
    if header:
        frame.columns = _header_names(text, name, delimiter, frame.shape[1], place.file_line(1))
    else:
        frame.columns = [str(i) for i in range(1, frame.shape[1] + 1)]
    return frame


def _drop_blank_lines(frame: pd.DataFrame, text: str, header: bool) -> pd.DataFrame:
    """Drop the rows that come from blank lines (they are not data), keeping the index, so
    row i is still line i + 1 + header. A line of missing cells ("NA,NA") is data with
    missing values, not a blank line: it stays, for the missing-value policy to judge."""
    empty = frame.isna().all(axis=1).to_numpy()
    if not empty.any():
        return frame
    lines = set((np.flatnonzero(empty) + int(header)).tolist())  # 0-based line numbers
    blank = {
        number for number, line in enumerate(_lines(text)) if number in lines and not line.strip()
    }
    drop = np.array([(i + int(header)) in blank for i in range(len(frame))])
    return frame[~(empty & drop)]


def _parse_fast(body: bytes, text: str, options: TableOptions) -> pd.DataFrame | None:
    """The table through pyarrow's multi-threaded reader (about 3× faster than pandas' C
    reader on 1M rows), or None unless the result is plainly clean: every column numeric,
    no missing cell, no blank line (row i is line i + 1 + header), header names as the csv
    module reads them. Anything else — and any problem the selection finds — goes to the
    exact reader, which names lines and columns.
    """
    delimiter, header = options.delimiter, options.header
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
    except ImportError:
        return None
    try:
        table = pa_csv.read_csv(
            io.BytesIO(body),
            read_options=pa_csv.ReadOptions(autogenerate_column_names=not header),
            # an empty line is a row of missing cells (so the reader declines): row i is line
            # i + 1 + header
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(decimal_point=options.decimal),
        )
    except (pa.ArrowException, ValueError, OverflowError):
        return None
    numeric = all(pa.types.is_floating(t) or pa.types.is_integer(t) for t in table.schema.types)
    if not numeric or table.num_rows == 0 or any(col.null_count for col in table.columns):
        return None
    if header:
        try:
            names = next(_csv_rows(text, delimiter), [])
        except csv.Error:
            return None
        unique = len(set(names)) == len(names) and all(n.strip() == n and n for n in names)
        if names != table.column_names or not unique:
            return None
    frame = table.to_pandas()
    if not header:
        frame.columns = [str(i) for i in range(1, frame.shape[1] + 1)]
    return frame


# A small table is read without pandas when it is plain (``_read_plain``): up to this size.
PLAIN_LIMIT = 1 << 20
# One way only to match each number (digits, then an optional fraction): an ambiguous
# pattern such as \d+\.?\d* backtracks exponentially over the lines of a table that fails
# late (found by test_fuzz). The delimiter must not be a character of a number.
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_CHARACTERS = set("0123456789.eE+-")


def _read_plain(text: str, name: str, options: TableOptions, place: BlockPlace) -> Table | None:
    """A whole small table that is plainly clean, read without pandas (whose import costs
    more than reading and fitting 150 rows): every cell a decimal number with nothing
    around it, every line the same number of fields, no blank line, header names as the
    csv module reads them, and no option that chooses columns or keeps text. Anything else
    (or a value the checks refuse) is None, and the readers below judge it, so a table read
    here is the table they read: the same values (correctly rounded, as pyarrow's reader),
    names and line numbers."""
    plain = (
        len(text) <= PLAIN_LIMIT
        and options.columns is None
        and options.required is None
        and options.n_required is None
        and options.weights is None
        and not options.keep_text
        and options.decimal == "."
        and len(options.delimiter) == 1
        and options.delimiter not in _NUMBER_CHARACTERS
    )
    if not plain:
        return None
    first = _LINE.match(text)
    if first is None:
        return None
    if options.header:
        try:
            names = next(_csv_rows(first.group(0), options.delimiter), [])
        except csv.Error:
            return None
        unique = len(set(names)) == len(names) and all(n.strip() == n and n for n in names)
        if not names or not unique:
            return None
        body = text[first.end() :]
    else:
        body = text
    d = len(names) if options.header else body.split("\n", 1)[0].count(options.delimiter) + 1
    separator = re.escape(options.delimiter)
    row = f"{_NUMBER}(?:{separator}{_NUMBER}){{{d - 1}}}"
    if not body or not re.fullmatch(f"(?:{row}\r?\n)*{row}(?:\r?\n)?", body):
        return None
    cells = re.split(f"{separator}|\r?\n", body.rstrip("\r\n"))
    values = np.array(cells, dtype=np.float64).reshape(-1, d)
    if not (np.isfinite(values).all() and np.abs(values).max() <= MAX_MAGNITUDE):
        return None
    n = values.shape[0]
    return Table(
        values=values,
        names=names if options.header else [str(i) for i in range(1, d + 1)],
        source=name,
        n_dropped=0,
        frame=None,
        skipped_columns=[],
        header=options.header,
        lines=np.arange(n, dtype=np.int64) + 1 + int(options.header) + place.lead,
        kept=np.ones(n, dtype=bool),
    )


def _parser_reason(error: Exception, place: BlockPlace) -> str:
    message = " ".join(str(error).split())
    match = _TOKENIZE_ERROR.search(message)
    if match:
        expected, line, seen = match.groups()
        return f"line {place.file_line(int(line))} has {seen} fields, expected {expected}"
    match = _UNCLOSED_QUOTE.search(message)
    if match:
        line = place.file_line(int(match.group(1)) + 1)
        return f"line {line}: a quoted field is not closed"
    message = message.replace("Error tokenizing data. C error: ", "")
    return f"cannot parse the table: {message}"


def _long_row(text: str, delimiter: str, place: BlockPlace) -> str:
    """Describe the first row with more fields than the header (found with the csv module)."""
    rows = _csv_rows(text, delimiter)
    try:
        expected = len(next(rows, []))
        for row in rows:
            if len(row) > expected:
                line = place.file_line(rows.line_num)
                return f"line {line} has {len(row)} fields, expected {expected}"
    except csv.Error:
        pass
    return "a row has more fields than the header"


def _csv_rows(text: str, delimiter: str) -> Iterator[list[str]]:
    """The csv module's reader, set up to split fields as pandas does; lazy, so cheap to start."""
    return csv.reader(_lines(text), delimiter=delimiter, skipinitialspace=True)


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` with their endings (LF, CRLF or CR), one at a time."""
    return (match.group(0) for match in _LINE.finditer(text))


def _header_names(text: str, name: str, delimiter: str, n_columns: int, line: int = 1) -> list[str]:
    """The header's names read with the csv module, since pandas renames duplicates; spaces
    around a name are not part of it (`` x val `` is ``x val``, as ``-c 'x val'`` names it)."""
    try:
        names = [n.strip() for n in next(_csv_rows(text, delimiter), [])]
    except csv.Error as error:
        raise GmmError(f"{name}: line {line} (the header) cannot be read: {error}") from None
    if not names:
        raise GmmError(f"{name}: line {line} (the header) is empty")
    if len(names) != n_columns:
        raise GmmError(
            f"{name}: line {line} (the header) has {len(names)} fields, expected {n_columns}"
        )
    seen: dict[str, int] = {}
    for position, column in enumerate(names, start=1):
        if not column.strip():
            raise GmmError(f"{name}: line {line} (the header): column {position} has an empty name")
        if column in seen:
            raise GmmError(
                f"{name}: line {line} (the header): duplicate column name {_q(column)}"
                f" (columns {seen[column]} and {position})"
            )
        seen[column] = position
    return names


def _resolve_columns(reader: Cells, tokens: list[str]) -> list[str]:
    """Names or 1-based positions (a number that is not itself a column name) to names."""
    names = list(reader.frame.columns)
    selected: list[str] = []
    for token in tokens:
        if token in names:
            column = token
        else:
            position = _as_int(token)
            if position is None or not 1 <= position <= len(names):
                raise GmmError(
                    f"{reader.name}: no column {_q(token)} ({reader.describe_columns('columns')})"
                )
            column = names[position - 1]
        if column in selected:
            raise GmmError(f"{reader.name}: column {_q(column)} is selected twice")
        selected.append(column)
    return selected


def _resolve_required(reader: Cells, required: list[str]) -> list[str]:
    names = set(reader.frame.columns)
    for column in required:
        if column not in names:
            raise GmmError(
                f"{reader.name}: column {_q(column)} is missing"
                f" ({reader.describe_columns('the file has columns')})"
            )
    return list(required)


def _as_int(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def _to_numbers(column: pd.Series, decimal: str = ".") -> tuple[np.ndarray, np.ndarray]:
    """The column as float64, and a mask of cells present but not readable as numbers (with
    ``decimal`` as the decimal mark: with ",", ``1.5`` is not a number).

    Columns pandas already typed as numbers cost nothing; others are coerced cell by cell.
    """
    import pandas as pd

    if column.dtype.kind in "iuf":
        return column.to_numpy(dtype=np.float64), np.zeros(len(column), dtype=bool)
    present = column.notna().to_numpy()
    if column.dtype.kind == "b":  # True/False are not measurements
        return np.full(len(column), np.nan), present
    cells = column
    if decimal != ".":
        text = column.astype(str)
        cells = text.str.replace(decimal, ".", regex=False).where(
            ~text.str.contains(".", regex=False)
        )
    numbers = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    parsed = present & ~np.isnan(numbers)
    if parsed.any():  # pandas reads 0x10 as 16; a number is decimal, as the fast reader has it
        hexadecimal = column.astype(str).str.match(_HEXADECIMAL).to_numpy(dtype=bool)
        numbers = np.where(hexadecimal & parsed, np.nan, numbers)
    return numbers, present & np.isnan(numbers)


class Cells:
    """A parsed block with what is needed to point at a cell: its line and column.

    ``frame`` may be an empty frame of the file's columns (e.g. a Parquet schema's) when only
    the columns are chosen; ``text`` and ``place`` give the lines of a parsed block.
    """

    def __init__(
        self,
        name: str,
        frame: pd.DataFrame,
        header: bool = True,
        delimiter: str = ",",
        text: str = "",
        place: BlockPlace = WHOLE_FILE,
        *,
        numbered: bool = True,
        all_columns: list[str] | None = None,
        decimal: str = ".",
    ) -> None:
        self.name = name
        self.text = text
        self.frame = frame
        self.header = header
        self.delimiter = delimiter
        self.place = place
        self.numbered = numbered  # False: the rows' lines are not known (a Dask partition)
        self.all_columns = all_columns  # the file's columns, when ``frame`` holds only some
        self.decimal = decimal  # the numbers' decimal mark

    def lines(self) -> np.ndarray:
        """The file's line number of each row of ``frame``."""
        text_lines = self.frame.index.to_numpy(dtype=np.int64) + 1 + int(self.header)
        if not self.place.first_line:
            return text_lines + self.place.lead
        return np.where(text_lines == 1, 1 + self.place.lead, text_lines + self.place.line - 2)

    def numeric(
        self, selected: list[str] | None, automatic: bool | None = None
    ) -> tuple[np.ndarray, list[str], list[str]]:
        """Values (n, d) of the selected columns, or of every numeric column when None.

        With no selection (or ``automatic``: the selection is every column but some), a
        column in which no present cell is a number is skipped. Any other cell that is not
        a number is an error.
        """
        automatic = selected is None if automatic is None else automatic
        skipped: list[str] = []
        kept: list[str] = []
        arrays: list[np.ndarray] = []
        bad_masks: list[np.ndarray] = []
        for column in self.frame.columns if selected is None else selected:
            numbers, bad = _to_numbers(self.frame[column], self.decimal)
            if automatic and bad.any() and np.isnan(numbers).all():
                skipped.append(column)
                continue
            kept.append(column)
            arrays.append(numbers)
            bad_masks.append(bad)
        if not kept:
            raise GmmError(
                f"{self.name}: no numeric columns (skipped: {_list_names(skipped)})"
                + (self._hint(" (", ")") or self._decimal_hint(self.frame[skipped[0]]))
            )
        if any(mask.any() for mask in bad_masks):
            row, col = self._first(np.column_stack(bad_masks))
            raise GmmError(self._not_a_number(row, kept[col]))
        if all(self.frame[c].dtype.kind in "iuf" for c in kept):  # one block copy, not d
            values = self.frame[kept].to_numpy(dtype=np.float64)
        else:
            values = np.empty((len(self.frame), len(kept)))
            for j, numbers in enumerate(arrays):
                values[:, j] = numbers
        return values, kept, skipped

    def missing_message(self, values: np.ndarray, problems: np.ndarray, names: list[str]) -> str:
        row, col = self._first(problems)
        line = self._line(row)
        value = values[row, col]
        if np.isnan(value):
            fields = self._fields_on_line(line)
            if fields is not None and fields < self.frame.shape[1]:
                return (
                    f"{self.name}: line {line} has {fields} fields, expected {self.frame.shape[1]}"
                )
            what = "missing value (use --missing drop to skip such rows)"
        else:
            cell = self.frame[names[col]].iloc[row]
            shown = cell if isinstance(cell, str) else str(value)
            what = f"value is not finite ({_q(shown)}) (use --missing drop to skip such rows)"
        return f"{self._where(line, names[col])}: {what}"

    def short_line(self, rows: np.ndarray) -> str | None:
        """The message for the first of ``rows`` (bool, over ``frame``) whose line has fewer
        fields than the table has columns — a broken line rather than missing cells, which
        are empty fields or NA words — or None. Only a row whose last column is missing
        can be one, and only those lines are counted (in one pass over the text)."""
        if not self.text or not self.numbered or not len(self.frame.columns):
            return None
        last = self.frame.iloc[:, -1].isna().to_numpy()
        candidates = np.flatnonzero(rows & last)
        if not candidates.size:
            return None
        expected = len(self.all_columns or self.frame.columns)
        file_lines = self.lines()[candidates]
        text_lines = self.place.text_line(file_lines)  # type: ignore[arg-type]
        for line, fields in zip(file_lines, self._field_counts(text_lines), strict=True):
            if fields is not None and fields < expected:
                return f"{self.name}: line {line} has {fields} fields, expected {expected}"
        return None

    def _field_counts(self, text_lines: np.ndarray) -> list[int | None]:
        """How many fields the raw text has on each of these lines (ascending): without
        quotes or lone CRs, by counting delimiters between line breaks (fast: a table of
        200,000 rows with gaps in its last column has ~40,000 such lines); else line by line
        with the csv module."""
        text, delimiter = self.text, self.delimiter
        plain = '"' not in text and (len(delimiter) == 1 and delimiter.isascii())
        if plain and "\r" in text:
            plain = text.count("\r") == text.count("\r\n")
        if plain:
            raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
            breaks = np.append(np.flatnonzero(raw == 10), raw.size)  # the end of each line
            marks = np.flatnonzero(raw == ord(delimiter))
            begin = np.where(text_lines >= 2, breaks[np.maximum(text_lines - 2, 0)] + 1, 0)
            stop = breaks[text_lines - 1]
            counts = np.searchsorted(marks, stop) - np.searchsorted(marks, begin) + 1
            return counts.tolist()
        wanted = dict.fromkeys(text_lines.tolist())
        for number, line in enumerate(_lines(text), start=1):
            if number in wanted:
                wanted[number] = _count_fields(line, delimiter)
            if number >= text_lines[-1]:
                break
        return list(wanted.values())

    def empty_row_message(self, row: int, names: list[str]) -> str:
        """The message for a row with no value in any selected column (missing="em")."""
        line = self._line(row)
        fields = self._fields_on_line(line)
        if fields is not None and fields < self.frame.shape[1]:
            return f"{self.name}: line {line} has {fields} fields, expected {self.frame.shape[1]}"
        where = f"{self.name}: line {line}" if self.numbered else f"{self.name}: a row"
        columns = "the selected column" if len(names) == 1 else "any selected column"
        return f"{where}: no value in {columns} (use --missing drop to skip such rows)"

    def check_weights(self, weights: np.ndarray, column: str) -> None:
        """A missing, non-finite or negative weight is an error naming its line, whatever
        the missing-value policy."""
        bad = ~np.isfinite(weights) | (weights < 0)
        if not bad.any():
            return
        row = int(np.argmax(bad))
        value = weights[row]
        where = self._where(self._line(row), column)
        if np.isnan(value):
            raise GmmError(f"{where}: missing weight (a weight is a number, 0 or more)")
        what = "not finite" if not np.isfinite(value) else "negative"
        raise GmmError(f"{where}: weight is {what} ({value:g})")

    def too_large_message(self, values: np.ndarray, huge: np.ndarray, names: list[str]) -> str:
        row, col = self._first(huge)
        return (
            f"{self._where(self._line(row), names[col])}: {values[row, col]:.6g} is too large "
            f"to square in float64 (gmm needs |x| < {MAX_MAGNITUDE:.0e}); rescale the column"
        )

    def check_count(
        self, needed: int, selected: list[str], skipped: list[str], explicit: bool
    ) -> None:
        """The model needs exactly ``needed`` columns (used when there is no header)."""
        found = len(selected)
        if found == needed:
            return
        if explicit:
            has = f"{found} are selected"
        elif skipped:
            has = f"the file has {found} numeric (skipped: {_list_names(skipped)})"
        else:
            has = f"the file has {found}"
        raise GmmError(
            f"{self.name}: the model needs {needed} columns but {has}" + self._hint(" (", ")")
        )

    def describe_columns(self, label: str) -> str:
        """'<label>: a, b, c', or the wrong-delimiter hint when the file's single column holds
        another likely delimiter."""
        return self._hint(sure=True) or f"{label}: {_list_names(list(self.frame.columns))}"

    def _hint(self, before: str = "", after: str = "", *, sure: bool = False) -> str:
        """A hint about the delimiter when the whole file was read as a single column.

        With ``sure``, only when that column holds another likely delimiter.
        """
        if self.frame.shape[1] != 1:
            return ""
        column = self.frame.columns[0]
        shown = column if self.header else str(self.frame[column].dropna().iloc[0])
        guess = next((c for c in ",;\t|" if c in shown and c != self.delimiter), None)
        if sure and guess is None:
            return ""
        use = f"use -d {_q(guess)}" if guess and guess != "\t" else "use -d"
        return f"{before}the file has 1 column {_q(shown)}: wrong delimiter? {use}{after}"

    def _not_a_number(self, row: int, column: str) -> str:
        line = self._line(row)
        cell = self.frame[column].iloc[row]
        message = f"{self._where(line, column)}: cannot read {_q(cell)} as a number"
        hint = self._hint(" (", ")", sure=True)
        if hint:
            return message + hint
        if line == self.place.file_line(1) and not self.header:
            message += " (is line 1 a header? drop --no-header)"
        else:
            import pandas as pd

            message += self._decimal_hint(pd.Series([cell]))
        return message

    def _decimal_hint(self, cells: pd.Series) -> str:
        """A hint when the first present cell of ``cells`` is a number written with the
        other decimal mark (``1,5`` without --decimal ,; ``1.5`` with it)."""
        present = cells.dropna()
        if present.empty or not isinstance(present.iloc[0], str):
            return ""
        cell = present.iloc[0].strip()
        if self.decimal == "." and _DECIMAL_COMMA.fullmatch(cell):
            return " (a decimal comma? use --decimal ,)"
        if self.decimal == "," and _DECIMAL_POINT.fullmatch(cell):
            return " (with --decimal , a number is written 1,5)"
        return ""

    def _first(self, mask: np.ndarray) -> tuple[int, int]:
        """(row, column) of the first True cell of a (n, d) mask in reading order."""
        row, col = np.unravel_index(int(np.argmax(mask)), mask.shape)
        return int(row), int(col)

    def _line(self, row: int) -> int:
        return self.place.file_line(int(self.frame.index[row]) + 1 + int(self.header))

    def _where(self, line: int, column: str) -> str:
        at = line if self.numbered else None
        columns = self.all_columns or list(self.frame.columns)
        return describe_cell(self.name, self.header, columns, at, column)

    def _fields_on_line(self, line: int) -> int | None:
        """How many fields the raw text has on a line (only used to explain an error)."""
        text_line = self.place.text_line(line)
        raw_line = next(itertools.islice(_lines(self.text), text_line - 1, None), None)
        if raw_line is None:
            return None
        try:
            return len(next(_csv_rows(raw_line, self.delimiter), []))
        except csv.Error:
            return None


def _count_fields(line: str, delimiter: str) -> int | None:
    """How many fields a raw line has (None if the csv module cannot read it alone)."""
    try:
        return len(next(_csv_rows(line, delimiter), []))
    except csv.Error:
        return None


def _q(value: object) -> str:
    """A value quoted for a one-line message, with control characters escaped; a long one
    (a 10 MB cell) cut to an excerpt: ``'abc…'… (10,000,000 characters)``."""
    text = str(value)
    if len(text) <= _EXCERPT_LIMIT:
        return repr(text)
    return f"{text[:_EXCERPT]!r}… ({len(text):,} characters)"


def _plain(name: str) -> str:
    """A name unquoted for a list, escaped if it holds control characters, cut to an
    excerpt if long."""
    if len(name) > _EXCERPT_LIMIT:
        return f"{_plain(name[:_EXCERPT])}… ({len(name):,} characters)"
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")


def _list_names(names: list[str]) -> str:
    shown = ", ".join(_plain(name) for name in names[:_LISTED_NAMES])
    if len(names) > _LISTED_NAMES:
        shown += f", … ({len(names)} in all)"
    return shown
