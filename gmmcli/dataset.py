"""Tables too big to read at once (``--engine dask`` and ``stream``): a glob of CSV files or
Parquet files and folders, read through dask.dataframe; one CSV read in blocks; results
written as a folder of part files or streamed in row order.

Columns are chosen on the first lines of the first file by the same code as ``data`` (so the
messages are the same); the rest is checked block by block. Messages are one line and start
with the input's name, as everywhere.
"""

from __future__ import annotations

import glob
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gmmcli import data, files
from gmmcli.errors import GmmError

HEAD_BYTES = 1 << 20  # the first lines read to choose the columns
# CSV text per block when streaming. pyarrow's streaming reader keeps many blocks in flight:
# measured on 700 MB of CSV, peak RSS 127 / 185 / 300 / 750 MB with 1 / 2 / 4 / 16 MiB
# blocks, and the smaller blocks were also faster (5.5 s against 8–10 s).
BLOCK_BYTES = 2 << 20
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_GLOB = re.compile(r"[*?\[]")
PART_NAME = "part-{:05d}.csv"


@dataclass(frozen=True)
class Inputs:
    """The files behind a DATA argument of --engine dask/stream."""

    display: str  # the argument as given
    kind: str  # "csv" or "parquet"
    paths: list[str]  # files in order (a Parquet folder: the folder itself)
    is_folder: bool = False


def resolve(pattern: str) -> Inputs:
    """The files a DATA argument names: a path, a glob of CSV files, or Parquet file(s) or a
    folder of them (by suffix, or the Parquet magic bytes)."""
    if pattern == files.STDIO:
        raise GmmError(
            "<stdin>: --engine dask and stream read files (each pass rereads them), not stdin"
        )
    if os.path.isdir(pattern):
        inside = sorted(
            p
            for p in glob.glob(os.path.join(pattern, "**", "*"), recursive=True)
            if p.endswith(PARQUET_SUFFIXES)
        )
        if not inside:
            raise GmmError(f"{pattern}: a folder with no Parquet files (*.parquet) in it")
        return Inputs(pattern, "parquet", [pattern], is_folder=True)
    if _GLOB.search(pattern):
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise GmmError(f"{pattern}: no file matches")
    else:
        paths = [pattern]
    for path in paths:
        if os.path.isdir(path):
            raise GmmError(f"{path}: is a directory, not a file")
        if not os.path.exists(path):
            raise GmmError(f"{path}: no such file")
        if not os.access(path, os.R_OK):
            raise GmmError(f"{path}: cannot read: permission denied")
    kinds = {"parquet" if _is_parquet(p) else "csv" for p in paths}
    if len(kinds) > 1:
        raise GmmError(f"{pattern}: mixes Parquet and CSV files; name one kind")
    return Inputs(pattern, kinds.pop(), paths)


def _is_parquet(path: str) -> bool:
    if path.endswith(PARQUET_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False


# -- choosing the columns --------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Which columns are features, and what the files hold."""

    names: list[str]  # the selected feature columns
    all_names: list[str]  # every column of the files (1, 2, ... without a header)
    skipped: list[str] = field(default_factory=list)  # non-numeric columns left out


def read_head(
    path: str,
    *,
    delimiter: str,
    header: bool,
    columns: list[str] | None,
    missing: str,
    required: list[str] | None,
    n_required: int | None,
) -> data.Table:
    """The first lines of a CSV file (about HEAD_BYTES) read as ``data.read_table`` reads a
    whole file: the same column choice, checks and messages."""
    name = files.display_name(path)
    data._check_options(name, delimiter, missing)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(HEAD_BYTES + 1)
    except OSError as error:
        raise GmmError(f"{path}: cannot read: {error.strerror or error}") from None
    if len(raw) > HEAD_BYTES:
        raw = raw[: raw.rfind(b"\n", 0, HEAD_BYTES) + 1] or raw
    body, text = data._decode(raw, name)
    if not data._HAS_CONTENT.search(text):
        raise GmmError(f"{name}: the file is empty")
    options = (delimiter, header, columns, missing, required, n_required)
    fast = data._parse_fast(body, text, delimiter, header)
    if fast is not None:
        try:
            return data._select(name, text, fast, *options)
        except GmmError:
            pass
    frame = data._parse(body, text, name, delimiter, header)
    frame = data._drop_blank_lines(frame, text, header)
    if frame.empty:
        raise GmmError(f"{name}: no data rows" + (" (only a header)" if header else ""))
    return data._select(name, text, frame, *options)


def csv_layout(
    inputs: Inputs,
    *,
    delimiter: str,
    header: bool,
    columns: list[str] | None,
    missing: str,
    required: list[str] | None,
    n_required: int | None,
) -> Layout:
    head = read_head(
        inputs.paths[0],
        delimiter=delimiter,
        header=header,
        columns=columns,
        missing=missing,
        required=required,
        n_required=n_required,
    )
    return Layout(list(head.names), [str(c) for c in head.frame.columns], head.skipped_columns)


def parquet_layout(
    inputs: Inputs,
    *,
    columns: list[str] | None,
    required: list[str] | None,
    n_required: int | None,
) -> Layout:
    """The feature columns of Parquet input, from its schema (numeric columns only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = inputs.paths[0]
    try:
        schema = pq.ParquetDataset(where).schema if inputs.is_folder else pq.read_schema(where)
    except Exception as error:  # pyarrow raises several types for a bad file
        reason = " ".join(str(error).split()) or type(error).__name__
        raise GmmError(f"{where}: cannot read as Parquet ({reason})") from None
    names = [n for n in schema.names if not n.startswith("__")]
    numeric = {
        n
        for n in names
        if pa.types.is_integer(schema.field(n).type) or pa.types.is_floating(schema.field(n).type)
    }
    shown = ", ".join(names)
    if required is not None:
        selected = list(required)
    elif columns is not None:
        selected = []
        for token in columns:
            if token in names:
                selected.append(token)
            elif token.isdigit() and 1 <= int(token) <= len(names):
                selected.append(names[int(token) - 1])
            else:
                raise GmmError(f"{inputs.display}: no column {token!r} (columns: {shown})")
    else:
        selected = [n for n in names if n in numeric]
        if not selected:
            raise GmmError(f"{inputs.display}: no numeric columns (columns: {shown})")
    for column in selected:
        if column not in names:
            raise GmmError(
                f"{inputs.display}: column {column!r} is missing (the file has columns: {shown})"
            )
        if column not in numeric:
            kind = schema.field(column).type
            raise GmmError(f"{inputs.display}: column {column!r} is not numeric ({kind})")
    if n_required is not None and len(selected) != n_required:
        raise GmmError(
            f"{inputs.display}: the model needs {n_required} columns but "
            f"{len(selected)} are selected"
        )
    skipped = [n for n in names if n not in numeric] if required is None and columns is None else []
    return Layout(selected, names, skipped)


# -- checking a block of rows ----------------------------------------------------------------
@dataclass
class Loaded:
    """A block of feature rows (float64, C order), checked, and how many rows were dropped."""

    x: np.ndarray
    n_dropped: int = 0


def check_block(
    x: np.ndarray, names: list[str], missing: str, where: Callable[[int, int], str]
) -> Loaded:
    """Missing/non-finite values (an error, or rows dropped) and values too large to square;
    ``where(row, column)`` names a cell for the message."""
    bad = ~np.isfinite(x)
    dropped = 0
    if bad.any():
        if missing == "error":
            row, col = np.unravel_index(int(np.argmax(bad)), bad.shape)
            what = (
                "missing value" if np.isnan(x[row, col]) else f"value is not finite ({x[row, col]})"
            )
            raise GmmError(
                f"{where(int(row), int(col))}: {what} (use --missing drop to skip such rows)"
            )
        keep = ~bad.any(axis=1)
        dropped = int(len(keep) - keep.sum())
        x = x[keep]
    huge = np.abs(x) > data.MAX_MAGNITUDE
    if huge.any():
        row, col = np.unravel_index(int(np.argmax(huge)), huge.shape)
        raise GmmError(
            f"{where(int(row), int(col))}: {x[row, col]:.6g} is too large to square in float64 "
            f"(gmm needs |x| < {data.MAX_MAGNITUDE:.0e}); rescale the column"
        )
    return Loaded(np.ascontiguousarray(x, dtype=np.float64), dropped)


def frame_values(frame: pd.DataFrame, names: list[str], missing: str, display: str) -> Loaded:
    """A dask partition (pandas) as checked feature rows (runs on the workers)."""
    x = frame[names].to_numpy(dtype=np.float64)

    def where(row: int, col: int) -> str:
        return f"{display}: column {names[col]!r}"

    return check_block(x, names, missing, where)


# -- dask.dataframe --------------------------------------------------------------------------
def dask_frame(
    inputs: Inputs,
    layout: Layout,
    *,
    delimiter: str,
    header: bool,
    all_columns: bool = False,
    blocksize: int | str = "default",
):
    """The input as a dask DataFrame of the feature columns (float64), or with
    ``all_columns`` every column (the others as text)."""
    import dask.dataframe as dd

    wanted = layout.all_names if all_columns else layout.names
    if inputs.kind == "parquet":
        where = inputs.paths[0] if inputs.is_folder else inputs.paths
        try:
            frame = dd.read_parquet(where, columns=wanted)
        except Exception as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise GmmError(f"{inputs.display}: cannot read as Parquet ({reason})") from None
        return frame.astype({c: "float64" for c in layout.names})
    dtypes = {c: ("float64" if c in layout.names else "object") for c in wanted}
    return dd.read_csv(
        inputs.paths,
        blocksize=blocksize,
        sep=delimiter,
        header=0 if header else None,
        names=None if header else layout.all_names,
        usecols=wanted,
        dtype=dtypes,
        skipinitialspace=True,
    )


def locate_bad_cell(inputs: Inputs, layout: Layout, delimiter: str, header: bool) -> str | None:
    """After a parse failure somewhere in CSV input: the first cell of a feature column that
    is not a number, as ``FILE: line L, column 'c' (j): cannot read 'v' as a number`` (a slow
    scan, made only to explain an error)."""
    for path in inputs.paths:
        line = 1 + int(header)
        try:
            reader = pd.read_csv(
                path,
                sep=delimiter,
                header=0 if header else None,
                names=None if header else layout.all_names,
                usecols=layout.names,
                dtype=str,
                keep_default_na=True,
                skipinitialspace=True,
                chunksize=1 << 18,
            )
            for chunk in reader:
                for j, column in enumerate(layout.names):
                    text = chunk[column]
                    numbers = pd.to_numeric(text, errors="coerce")
                    bad = (text.notna() & numbers.isna()).to_numpy()
                    if bad.any():
                        i = int(np.argmax(bad))
                        position = layout.all_names.index(column) + 1
                        col = f"column {column!r} ({position})" if header else f"column {column}"
                        return (
                            f"{path}: line {line + i}, {col}: cannot read "
                            f"{text.iloc[i]!r} as a number"
                        )
                    del j
                line += len(chunk)
        except (pd.errors.ParserError, ValueError, OSError) as error:
            reason = " ".join(str(error).split())
            return f"{path}: cannot parse the table: {reason}"
    return None


# -- one CSV file in blocks ------------------------------------------------------------------
class CsvBlocks:
    """Feature rows of CSV file(s) block by block (pyarrow's streaming reader), checked as they
    come; each call starts a new pass. Memory: one block of text and its values."""

    def __init__(
        self,
        inputs: Inputs,
        layout: Layout,
        *,
        delimiter: str,
        header: bool,
        missing: str,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        self.inputs = inputs
        self.layout = layout
        self.delimiter = delimiter
        self.header = header
        self.missing = missing
        self.block_bytes = block_bytes
        self.n_dropped = 0

    def __call__(self) -> Iterator[np.ndarray]:
        for loaded in self.loaded():
            yield loaded.x

    def loaded(self) -> Iterator[Loaded]:
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        names = self.layout.names
        dropped = 0
        for path in self.inputs.paths:
            read = pa_csv.ReadOptions(
                block_size=self.block_bytes,
                column_names=None if self.header else self.layout.all_names,
                use_threads=True,
            )
            parse = pa_csv.ParseOptions(delimiter=self.delimiter)
            convert = pa_csv.ConvertOptions(
                include_columns=names, column_types={c: pa.float64() for c in names}
            )
            first_line = 1 + int(self.header)
            try:
                reader = pa_csv.open_csv(
                    path, read_options=read, parse_options=parse, convert_options=convert
                )
                for batch in reader:
                    n = batch.num_rows
                    x = np.empty((n, len(names)))
                    for j in range(len(names)):
                        x[:, j] = batch.column(j).to_numpy(zero_copy_only=False)
                    start = first_line

                    def where(row: int, col: int, start: int = start, path: str = path) -> str:
                        column = names[col]
                        if not self.header:
                            return f"{path}: line {start + row}, column {column}"
                        position = self.layout.all_names.index(column) + 1
                        return f"{path}: line {start + row}, column {column!r} ({position})"

                    loaded = check_block(x, names, self.missing, where)
                    first_line += n
                    dropped += loaded.n_dropped
                    if loaded.x.shape[0]:
                        yield loaded
            except pa.ArrowMemoryError as error:
                raise GmmError(f"{path}: out of memory while reading: {error}", 1) from None
            except (pa.ArrowInvalid, pa.ArrowException) as error:
                one = Inputs(path, "csv", [path])
                found = locate_bad_cell(one, self.layout, self.delimiter, self.header)
                reason = " ".join(str(error).split())
                raise GmmError(found or f"{path}: cannot parse the table: {reason}") from None
        self.n_dropped = dropped


# -- results ---------------------------------------------------------------------------------
def is_folder_output(output: str) -> bool:
    """``-o out/`` (or an existing folder) means a folder of part files."""
    return output != files.STDIO and (output.endswith(("/", os.sep)) or os.path.isdir(output))


def prepare_folder(output: str) -> str:
    """Create the output folder (its parent must exist) and remove earlier part files."""
    folder = output.rstrip("/" + os.sep) or output
    parent = os.path.dirname(os.path.abspath(folder))
    if not os.path.isdir(parent):
        raise GmmError(f"{output}: cannot write: the folder {parent} does not exist")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise GmmError(f"{output}: exists and is not a folder")
    os.makedirs(folder, exist_ok=True)
    for old in glob.glob(os.path.join(folder, "part-*.csv")):
        os.remove(old)
    return folder


def write_part(frame: pd.DataFrame, folder: str, index: int) -> int:
    """One part file, written atomically (runs on a worker); returns its rows."""
    files.write_output(os.path.join(folder, PART_NAME.format(index)), data._csv_bytes(frame))
    return len(frame)


def csv_piece(frame: pd.DataFrame, with_header: bool) -> bytes:
    """The frame as CSV bytes, with or without the header line."""
    text = data._csv_bytes(frame)
    return text if with_header else text[text.index(b"\n") + 1 :]


class SpilledBlocks:
    """The feature rows of ``inner`` (a CsvBlocks), parsed once: the first pass reads the
    CSV and writes each block's float64 values to a file in a temporary folder; later
    passes read that file back in blocks of ``rows`` rows into one reused buffer. Memory
    stays one block; the disk holds n × d × 8 bytes until ``close``.

    Parsing the text is most of a pass's cost, so every pass after the first is several
    times faster (bench/RESULTS.md). If the disk fills up while writing, the spill file is
    removed and every pass reads the CSV again (``spill_failed`` says so).
    """

    def __init__(self, inner: CsvBlocks, n_features: int, rows: int = 65536) -> None:
        self.inner = inner
        self.n_features = n_features
        self.rows = rows
        self.folder: str | None = None
        self.path: str | None = None
        self.n_rows: int | None = None  # known once the first pass has ended
        self.spill_failed = False

    @property
    def n_dropped(self) -> int:
        return self.inner.n_dropped

    def __call__(self) -> Iterator[np.ndarray]:
        if self.n_rows is not None and self.path is not None:
            yield from self._read_back()
        elif self.spill_failed:
            yield from self.inner()
        else:
            yield from self._first_pass()

    def _first_pass(self) -> Iterator[np.ndarray]:
        self.folder = tempfile.mkdtemp(prefix="gmm-spill-")
        self.path = os.path.join(self.folder, "rows.f64")
        n = 0
        out = open(self.path, "wb")  # noqa: SIM115 (closed below, also on failure)
        try:
            for x in self.inner():
                if out is not None:
                    try:
                        out.write(np.ascontiguousarray(x, dtype=np.float64).tobytes())
                    except OSError:  # no room: forget the spill, parse on every pass
                        out.close()
                        out = None
                        self._remove()
                        self.spill_failed = True
                n += x.shape[0]
                yield x
        finally:
            if out is not None:
                out.close()
        if not self.spill_failed:
            self.n_rows = n

    def _read_back(self) -> Iterator[np.ndarray]:
        assert self.path is not None and self.n_rows is not None
        d = self.n_features
        buffer = np.empty((self.rows, d))
        with open(self.path, "rb") as f:
            done = 0
            while done < self.n_rows:
                m = min(self.rows, self.n_rows - done)
                view = buffer[:m]
                if f.readinto(memoryview(view).cast("B")) != view.nbytes:
                    raise OSError(f"{self.path}: the spill file ended early")
                done += m
                yield view

    def _remove(self) -> None:
        import shutil

        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = self.path = None

    def close(self) -> None:
        """Delete the spill file."""
        self._remove()
