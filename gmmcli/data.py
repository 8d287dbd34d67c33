"""Tables in and out: read CSV from a path or stdin into a float array, and write CSV results.

This module owns every message about malformed tables. Each is one line that starts with the
file's display name (the path as given, or ``<stdin>``) and names the line and column if any.
Line numbers assume no quoted field spans several lines.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gmmcli import files
from gmmcli.errors import GmmError
from gmmcli.limits import FLOAT32_MAX_DEVIATION, FLOAT32_MIN_SPREAD, MAX_MAGNITUDE

MISSING_POLICIES = ("error", "drop")
_TOKENIZE_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_UNCLOSED_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_LISTED_NAMES = 10
_HAS_CONTENT = re.compile(r"\S")


@dataclass(frozen=True)
class Table:
    """A table read from a file: the selected features as floats, and the kept rows as read."""

    values: np.ndarray  # float64, shape (n, d), C-contiguous, all finite
    names: list[str]  # the d selected feature names ("1", "2", ... without a header)
    source: str  # display name: the path as given, or "<stdin>"
    n_dropped: int  # rows dropped by missing="drop"
    frame: pd.DataFrame  # all columns of the kept rows as read, index 0..n-1
    skipped_columns: list[str]  # non-numeric columns ignored when no columns were selected


def read_table(
    source: str,
    *,
    delimiter: str = ",",
    header: bool = True,
    columns: list[str] | None = None,
    missing: str = "error",
    required: list[str] | None = None,
    n_required: int | None = None,
    float32: bool = False,
) -> Table:
    """Read a CSV table from a path or ``-`` (stdin) and select its numeric feature columns.

    ``columns`` selects names or 1-based positions; ``required`` selects exactly the model's
    feature names; with neither, every numeric column is used and columns with no numeric cell
    are skipped. ``n_required`` checks the number of selected columns. ``missing`` is "error"
    or "drop" (drop rows with a missing or non-finite selected value). With ``float32`` (the
    values will be worked on in float32), a value farther than ``FLOAT32_MAX_DEVIATION`` from
    its column's mean is refused, since its square would overflow float32, and so is a column
    whose standard deviation is not 0 but below ``FLOAT32_MIN_SPREAD``.
    """
    name = files.display_name(source)
    _check_options(name, delimiter, missing)
    body, text = _decode(files.read_bytes(source), name)
    if not _HAS_CONTENT.search(text):
        raise GmmError(f"{name}: the file is empty")
    options = (delimiter, header, columns, missing, required, n_required, float32)
    fast = _parse_fast(body, text, delimiter, header)
    if fast is not None:
        try:
            return _select(name, text, fast, *options)
        except GmmError:
            pass  # the exact reader below finds the same problem and names its line
    frame = _parse(body, text, name, delimiter, header)
    frame = _drop_blank_lines(frame, text, header)
    if frame.empty:
        raise GmmError(f"{name}: no data rows" + (" (only a header)" if header else ""))
    return _select(name, text, frame, *options)


def _select(
    name: str,
    text: str,
    frame: pd.DataFrame,
    delimiter: str,
    header: bool,
    columns: list[str] | None,
    missing: str,
    required: list[str] | None,
    n_required: int | None,
    float32: bool = False,
) -> Table:
    """The selected numeric columns of a parsed table, checked and with missing rows handled."""
    reader = _Cells(name, text, frame, header, delimiter)

    if required is not None:
        selected = _resolve_required(reader, required)
    elif columns is not None:
        selected = _resolve_columns(reader, columns)
    else:
        selected = None
    if n_required is not None and selected is not None:
        reader.check_count(n_required, selected, [], explicit=columns is not None)
    values, selected, skipped = reader.numeric(selected)
    if n_required is not None:
        reader.check_count(n_required, selected, skipped, explicit=columns is not None)

    problems = ~np.isfinite(values)
    if missing == "error" and problems.any():
        raise GmmError(reader.missing_message(values, problems, selected))
    keep = ~problems.any(axis=1)
    n_dropped = int(len(keep) - keep.sum())
    if not keep.any():
        raise GmmError(f"{name}: no rows left after dropping {n_dropped} with missing values")
    if n_dropped:
        values, frame = values[keep], frame[keep]
        reader.frame = frame  # rows below count the kept rows; their index is still the line
    huge = np.abs(values) > MAX_MAGNITUDE
    if huge.any():
        raise GmmError(reader.too_large_message(values, huge, selected))
    if float32:
        deviation = np.abs(values - values.mean(axis=0))
        if (deviation >= FLOAT32_MAX_DEVIATION).any():
            raise GmmError(reader.float32_message(values, deviation, selected))
        spread = np.sqrt(np.mean(deviation**2, axis=0))
        narrow = np.flatnonzero((spread > 0) & (spread < FLOAT32_MIN_SPREAD))
        if narrow.size:
            raise GmmError(reader.float32_narrow_message(spread, int(narrow[0]), selected))
    return Table(
        values=np.ascontiguousarray(values, dtype=np.float64),
        names=selected,
        source=name,
        n_dropped=n_dropped,
        frame=frame.reset_index(drop=True),
        skipped_columns=skipped,
    )


def write_csv(frame: pd.DataFrame, dest: str) -> None:
    """Write ``frame`` as CSV with a header and no index to stdout ('-') or, atomically, a path.

    Floats are written in their shortest exact form, so they read back exactly. An all-numeric
    frame goes through pyarrow's writer (measured at 1M rows × 9 columns: 0.9 s against
    pandas' 9 s); one with text columns through pandas, which quotes text only where needed.
    """
    files.write_output(dest, _csv_bytes(frame))


def _csv_bytes(frame: pd.DataFrame) -> bytes:
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


def _check_options(name: str, delimiter: str, missing: str) -> None:
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise GmmError(
            f"{name}: the delimiter must be one character (not a quote or newline),"
            f" got {delimiter!r}"
        )
    if missing not in MISSING_POLICIES:
        raise GmmError(f"{name}: missing-value policy must be 'error' or 'drop', got {missing!r}")


def _decode(raw: bytes, name: str) -> tuple[bytes, str]:
    """The bytes without a byte-order mark, and their text (which must be UTF-8)."""
    start = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    body = raw[start:]
    try:
        return body, body.decode("utf-8")
    except UnicodeDecodeError as error:
        offset = start + error.start
        line = raw.count(b"\n", 0, offset) + 1
        raise GmmError(
            f"{name}: not valid UTF-8 text (byte 0x{raw[offset]:02x} on line {line},"
            f" offset {offset})"
        ) from None


def _parse(body: bytes, text: str, name: str, delimiter: str, header: bool) -> pd.DataFrame:
    """Parse with pandas; blank lines stay as all-missing rows so index i is line i+1+header.

    pandas reads the bytes (faster than from a str); ``text`` serves the csv module.
    """
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
            )
    except pd.errors.EmptyDataError:
        raise GmmError(f"{name}: the file is empty") from None
    except pd.errors.ParserWarning:
        raise GmmError(f"{name}: {_long_row(text, delimiter)}") from None
    except (pd.errors.ParserError, ValueError) as error:
        raise GmmError(f"{name}: {_parser_reason(error)}") from None
    if header:
        frame.columns = _header_names(text, name, delimiter, frame.shape[1])
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


def _parse_fast(body: bytes, text: str, delimiter: str, header: bool) -> pd.DataFrame | None:
    """The table through pyarrow's multi-threaded reader (about 3× faster than pandas' C
    reader on 1M rows), or None unless the result is plainly clean: every column numeric,
    no missing cell, header names as the csv module reads them. Anything else — and any
    problem the selection finds — goes to the exact reader, which names lines and columns.
    """
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
    except ImportError:
        return None
    try:
        table = pa_csv.read_csv(
            io.BytesIO(body),
            read_options=pa_csv.ReadOptions(autogenerate_column_names=not header),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter),
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


def _parser_reason(error: Exception) -> str:
    message = " ".join(str(error).split())
    match = _TOKENIZE_ERROR.search(message)
    if match:
        expected, line, seen = match.groups()
        return f"line {line} has {seen} fields, expected {expected}"
    match = _UNCLOSED_QUOTE.search(message)
    if match:
        return f"line {int(match.group(1)) + 1}: a quoted field is not closed"
    message = message.replace("Error tokenizing data. C error: ", "")
    return f"cannot parse the table: {message}"


def _long_row(text: str, delimiter: str) -> str:
    """Describe the first row with more fields than the header (found with the csv module)."""
    rows = _csv_rows(text, delimiter)
    try:
        expected = len(next(rows, []))
        for row in rows:
            if len(row) > expected:
                return f"line {rows.line_num} has {len(row)} fields, expected {expected}"
    except csv.Error:
        pass
    return "a row has more fields than the header"


def _csv_rows(text: str, delimiter: str) -> Iterator[list[str]]:
    """The csv module's reader, set up to split fields as pandas does; lazy, so cheap to start."""
    return csv.reader(_lines(text), delimiter=delimiter, skipinitialspace=True)


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` with their endings (LF, CRLF or CR), one at a time."""
    return (match.group(0) for match in _LINE.finditer(text))


def _header_names(text: str, name: str, delimiter: str, n_columns: int) -> list[str]:
    """The header's names read with the csv module, since pandas renames duplicates."""
    try:
        names = next(_csv_rows(text, delimiter), [])
    except csv.Error as error:
        raise GmmError(f"{name}: line 1 (the header) cannot be read: {error}") from None
    if not names:
        raise GmmError(f"{name}: line 1 (the header) is empty")
    if len(names) != n_columns:
        raise GmmError(f"{name}: line 1 (the header) has {len(names)} fields, expected {n_columns}")
    seen: dict[str, int] = {}
    for position, column in enumerate(names, start=1):
        if not column.strip():
            raise GmmError(f"{name}: line 1 (the header): column {position} has an empty name")
        if column in seen:
            raise GmmError(
                f"{name}: line 1 (the header): duplicate column name {_q(column)}"
                f" (columns {seen[column]} and {position})"
            )
        seen[column] = position
    return names


def _resolve_columns(reader: _Cells, tokens: list[str]) -> list[str]:
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


def _resolve_required(reader: _Cells, required: list[str]) -> list[str]:
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


def _to_numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64, and a mask of cells present but not readable as numbers.

    Columns pandas already typed as numbers cost nothing; others are coerced cell by cell.
    """
    if column.dtype.kind in "iuf":
        return column.to_numpy(dtype=np.float64), np.zeros(len(column), dtype=bool)
    present = column.notna().to_numpy()
    if column.dtype.kind == "b":  # True/False are not measurements
        return np.full(len(column), np.nan), present
    numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return numbers, present & np.isnan(numbers)


class _Cells:
    """The parsed table with what is needed to point at a cell: its line and column."""

    def __init__(
        self, name: str, text: str, frame: pd.DataFrame, header: bool, delimiter: str
    ) -> None:
        self.name = name
        self.text = text
        self.frame = frame
        self.header = header
        self.delimiter = delimiter

    def numeric(self, selected: list[str] | None) -> tuple[np.ndarray, list[str], list[str]]:
        """Values (n, d) of the selected columns, or of every numeric column when None.

        With no selection, a column in which no present cell is a number is skipped.
        Any other cell that is not a number is an error.
        """
        skipped: list[str] = []
        kept: list[str] = []
        arrays: list[np.ndarray] = []
        bad_masks: list[np.ndarray] = []
        for column in self.frame.columns if selected is None else selected:
            numbers, bad = _to_numbers(self.frame[column])
            if selected is None and bad.any() and np.isnan(numbers).all():
                skipped.append(column)
                continue
            kept.append(column)
            arrays.append(numbers)
            bad_masks.append(bad)
        if not kept:
            raise GmmError(
                f"{self.name}: no numeric columns (skipped: {_list_names(skipped)})"
                + self._hint(" (", ")")
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

    def too_large_message(self, values: np.ndarray, huge: np.ndarray, names: list[str]) -> str:
        row, col = self._first(huge)
        return (
            f"{self._where(self._line(row), names[col])}: {values[row, col]:.6g} is too large "
            f"to square in float64 (gmm needs |x| < {MAX_MAGNITUDE:.0e}); rescale the column"
        )

    def float32_narrow_message(self, spread: np.ndarray, col: int, names: list[str]) -> str:
        return (
            f"{self._where_column(names[col])}: varies by only {spread[col]:.3g} (standard "
            "deviation), too little for --dtype float32, where the inverse of such variances "
            f"overflows (gmm needs at least {FLOAT32_MIN_SPREAD:.0e}); use --dtype float64 or "
            "--standardize"
        )

    def float32_message(self, values: np.ndarray, deviation: np.ndarray, names: list[str]) -> str:
        """About the value farthest from its column's mean."""
        row, col = self._first(deviation == deviation.max())
        return (
            f"{self._where(self._line(row), names[col])}: {values[row, col]:.6g} lies "
            f"{deviation[row, col]:.3g} from the column's mean ({values[:, col].mean():.6g}), "
            f"too far to square in --dtype float32 (gmm needs |x - mean| < "
            f"{FLOAT32_MAX_DEVIATION:.0e}); use --dtype float64 or --standardize"
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
        if line == 1 and not self.header:
            message += " (is line 1 a header? drop --no-header)"
        return message

    def _first(self, mask: np.ndarray) -> tuple[int, int]:
        """(row, column) of the first True cell of a (n, d) mask in reading order."""
        row, col = np.unravel_index(int(np.argmax(mask)), mask.shape)
        return int(row), int(col)

    def _line(self, row: int) -> int:
        return int(self.frame.index[row]) + 1 + int(self.header)

    def _where_column(self, column: str) -> str:
        if not self.header:
            return f"{self.name}: column {column}"
        position = self.frame.columns.get_loc(column) + 1
        return f"{self.name}: column {_q(column)} ({position})"

    def _where(self, line: int, column: str) -> str:
        if not self.header:
            return f"{self.name}: line {line}, column {column}"
        position = self.frame.columns.get_loc(column) + 1
        return f"{self.name}: line {line}, column {_q(column)} ({position})"

    def _fields_on_line(self, line: int) -> int | None:
        """How many fields the raw text has on a line (only used to explain an error)."""
        raw_line = next(itertools.islice(_lines(self.text), line - 1, None), None)
        if raw_line is None:
            return None
        try:
            return len(next(_csv_rows(raw_line, self.delimiter), []))
        except csv.Error:
            return None


def _q(value: object) -> str:
    """A value quoted for a one-line message, with control characters escaped."""
    return repr(str(value))


def _plain(name: str) -> str:
    """A name unquoted for a list, escaped if it holds control characters."""
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")


def _list_names(names: list[str]) -> str:
    shown = ", ".join(_plain(name) for name in names[:_LISTED_NAMES])
    if len(names) > _LISTED_NAMES:
        shown += f", … ({len(names)} in all)"
    return shown
