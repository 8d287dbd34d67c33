"""The input layer's sources (``--engine dask`` and ``stream``): what a DATA argument names
(a path, a glob of CSV files, Parquet files or a folder), its feature columns, one CSV read
in blocks of lines, dask.dataframe partitions, and results written as part files or streamed
in row order.

Every CSV block, the head that chooses the columns included, is parsed and checked by
``data.read_block``, the reader of the memory engine (a whole file is its one-block case),
so the messages are the same whatever the engine. A Dask partition has no line numbers: when
one fails, the CSV files are read again here, in blocks, to name the file, line and column.
"""

from __future__ import annotations

import codecs
import glob
import os
import re
import stat
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from gmmcli import data, files
from gmmcli.errors import GmmError
from gmmcli.tableoptions import RowCounts

HEAD_BYTES = 1 << 20  # the first lines read to choose the columns
# CSV text per block when streaming: memory holds one block of text and its values. (With
# pyarrow's streaming reader, measured on 700 MB of CSV, 1–2 MiB blocks were also the
# fastest; the blocks are now parsed one at a time by data.read_block.)
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
    names: tuple[str, ...] = ()  # how messages name each path, when not the path itself

    def name_of(self, path: str) -> str:
        """How messages name one of ``paths`` (a pipe's copy is named as the pipe)."""
        if self.names:
            return self.names[self.paths.index(path)]
        return files.display_name(path)


# pipes and devices copied to unlinked temporary files (--engine stream), open until exit
_COPIES: list[BinaryIO] = []


def resolve(pattern: str, engine: str = "stream", encoding: str = "utf-8") -> Inputs:
    """The files a DATA argument names: a path, a glob of CSV files, or Parquet file(s) or a
    folder of them (by suffix, or the Parquet magic bytes).

    A FIFO, a process substitution (``<(zcat x.gz)``) or a device can be read only once: for
    ``--engine stream`` its bytes are copied once to a temporary file that later passes
    reread (``reread_copy``); ``--engine dask``, whose workers open the files, refuses it.
    So is a gzip-compressed file, or text in another ``encoding``: converted once into such a
    copy (stream), or refused (dask)."""
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
    if any(not _is_regular(p) for p in paths):
        if engine != "stream" or len(paths) > 1:
            raise GmmError(
                f"{pattern}: a pipe or device, which can be read only once: --engine {engine} "
                "needs regular files (use --engine stream or memory, or save it to a file)"
            )
        if paths[0].endswith(PARQUET_SUFFIXES):
            raise GmmError(f"{pattern}: --engine stream reads CSV; use --engine dask for Parquet")
        return Inputs(pattern, "csv", [reread_copy(paths[0], encoding)], names=(pattern,))
    starts = {p: _start(p) for p in paths}
    for path, start in starts.items():
        data.refuse_binary(start, path)
    convert = [p for p in paths if starts[p].startswith(data.GZIP_MAGIC)]
    if convert or not data.is_utf8(encoding):
        if engine != "stream":
            what = "gzip-compressed" if convert else f"{encoding} text"
            raise GmmError(
                f"{(convert or paths)[0]}: {what}: --engine {engine} reads UTF-8 CSV files; "
                "use --engine stream or memory, or convert the files"
            )
        copies = [reread_copy(p, encoding) for p in paths]
        return Inputs(pattern, "csv", copies, names=tuple(paths))
    kinds = {"parquet" if _is_parquet(p) else "csv" for p in paths}
    if len(kinds) > 1:
        raise GmmError(f"{pattern}: mixes Parquet and CSV files; name one kind")
    return Inputs(pattern, kinds.pop(), paths)


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # reading it names the problem


def _start(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(8)
    except OSError:
        return b""


def reread_copy(path: str, encoding: str = "utf-8") -> str:
    """A path to read what the pipe or device ``path`` holds as often as needed: its bytes,
    read once, in a temporary file in $TMPDIR that is unlinked as soon as it is made (so
    nothing is left behind, however gmm ends), reopened through /proc/self/fd. Bytes that
    start as gzip are decompressed, and text in ``encoding`` converted to UTF-8, on the way."""
    if not os.path.isdir("/proc/self/fd"):
        raise GmmError(
            f"{path}: a pipe or device, which can be read only once: --engine stream needs a "
            "regular file here (use --engine memory, or save it to a file)"
        )
    try:
        copy = tempfile.TemporaryFile(prefix="gmm-input-")  # noqa: SIM115 (open until exit)
    except OSError as error:
        raise GmmError(f"{path}: cannot keep a copy of a pipe: {error.strerror or error}") from None
    convert = _Converter(path, encoding)
    try:
        with open(path, "rb") as source:
            while True:
                try:
                    raw = source.read(1 << 20)
                except OSError as error:
                    raise GmmError(f"{path}: cannot read: {error.strerror or error}") from None
                chunk = convert(raw)
                if not raw and not chunk:
                    break
                try:
                    copy.write(chunk)
                except OSError as error:
                    raise GmmError(
                        f"{path}: cannot keep a copy of the pipe for the passes of --engine "
                        f"stream in {tempfile.gettempdir()}: {error.strerror or error} (set "
                        "TMPDIR, or save the data to a file)"
                    ) from None
        copy.flush()
    except BaseException:
        copy.close()
        raise
    _COPIES.append(copy)
    return f"/proc/self/fd/{copy.fileno()}"


class _Converter:
    """Chunks of a file as UTF-8 text: gunzipped if they start as gzip, decoded from
    ``encoding``; an empty chunk (the end) flushes what is left."""

    def __init__(self, path: str, encoding: str) -> None:
        self.path = path
        self.encoding = encoding
        self.gzip: Any = None
        self.started = False
        self.decoder = None if data.is_utf8(encoding) else codecs.getincrementaldecoder(encoding)()
        self.offset = 0

    def __call__(self, chunk: bytes) -> bytes:
        end = not chunk
        if not self.started and chunk:
            self.started = True
            if chunk.startswith(data.GZIP_MAGIC):
                self.gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.gzip is not None:
            try:
                out = self.gzip.decompress(chunk) if chunk else self.gzip.flush()
                while self.gzip.eof and self.gzip.unused_data:  # concatenated members
                    rest = self.gzip.unused_data
                    self.gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    out += self.gzip.decompress(rest)
            except zlib.error as error:
                raise GmmError(
                    f"{self.path}: gzip-compressed, but cannot be decompressed: {error}"
                ) from None
            chunk = out
        if self.decoder is None:
            return chunk
        try:
            text = self.decoder.decode(chunk, final=end)
        except UnicodeDecodeError as error:
            raise GmmError(
                f"{self.path}: not valid {self.encoding} text (byte 0x{chunk[error.start]:02x}, "
                f"offset {self.offset + error.start})"
            ) from None
        self.offset += len(chunk)
        return text.encode("utf-8")


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


def layout(inputs: Inputs, options: data.TableOptions) -> Layout:
    """The feature columns of the input, chosen as ``data.read_table`` chooses them: from the
    first lines of the first CSV file, or from the Parquet schema."""
    if inputs.kind == "parquet":
        return parquet_layout(inputs, options)
    head = read_head(inputs.paths[0], options, inputs.name_of(inputs.paths[0]))
    return Layout(list(head.names), head.columns, head.skipped_columns)


def read_head(path: str, options: data.TableOptions, name: str | None = None) -> data.Table:
    """The first lines of a CSV file (about HEAD_BYTES) read as the first block of the file
    (the whole file if it is that small); ``name``: how messages name it."""
    name = name or files.display_name(path)
    options.check(name)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(HEAD_BYTES + 1)
            if len(raw) > HEAD_BYTES and b"\n" not in raw:  # a first line longer than the head
                raw = _long_first_line(handle, raw, name, options)
    except OSError as error:
        raise GmmError(f"{path}: cannot read: {error.strerror or error}") from None
    if len(raw) <= HEAD_BYTES:
        return data.read_block(raw, name, options)
    raw = raw[: raw.rfind(b"\n", 0, HEAD_BYTES) + 1] or raw
    return data.read_block(raw, name, options, data.BlockPlace())


def _long_first_line(handle: BinaryIO, raw: bytes, name: str, options: data.TableOptions) -> bytes:
    """The head of a file whose first line is longer than HEAD_BYTES, judged as
    ``data.read_block`` judges a whole file's first line (too many fields; only a header),
    in blocks of HEAD_BYTES: the first line whole and the lines after it (HEAD_BYTES)."""
    delimiter = options.delimiter.encode("utf-8")
    n_fields, line = 1, bytearray()
    while raw:
        end = raw.find(b"\n")
        part = raw if end < 0 else raw[: end + 1]
        n_fields += part.count(delimiter)
        if n_fields > data.MAX_COLUMNS:
            raise GmmError(
                f"{name}: line 1 has more than {data.MAX_COLUMNS:,} fields; gmm reads at most "
                f"{data.MAX_COLUMNS:,} columns (wrong delimiter, or not a table?)"
            )
        line += part
        if end >= 0:
            more = handle.read(HEAD_BYTES)
            rest = raw[end + 1 :] + more
            if options.header and not rest.strip() and len(more) < HEAD_BYTES:
                raise GmmError(f"{name}: no data rows (only a header)")
            if len(more) == HEAD_BYTES:  # not the end of the file: whole lines only
                rest = rest[: rest.rfind(b"\n") + 1]
            return bytes(line) + rest
        raw = handle.read(HEAD_BYTES)
    if options.header:
        raise GmmError(f"{name}: no data rows (only a header)")
    return bytes(line)


def parquet_layout(inputs: Inputs, options: data.TableOptions) -> Layout:
    """The feature columns of Parquet input, from its schema (numeric columns only), chosen
    by ``data.choose_columns`` as for CSV."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = inputs.paths[0]
    try:
        schema = pq.ParquetDataset(where).schema if inputs.is_folder else pq.read_schema(where)
    except Exception as error:  # pyarrow raises several types for a bad file
        reason = " ".join(str(error).split()) or type(error).__name__
        raise GmmError(f"{where}: cannot read as Parquet ({reason})") from None
    names = [n for n in schema.names if not n.startswith("__")]
    numeric = [
        n
        for n in names
        if pa.types.is_integer(schema.field(n).type) or pa.types.is_floating(schema.field(n).type)
    ]
    columns = data.Cells(inputs.display, pd.DataFrame(columns=names))
    selected = data.choose_columns(columns, options)
    if selected is None:
        selected = numeric
        if not selected:
            raise GmmError(f"{inputs.display}: no numeric columns (columns: {', '.join(names)})")
        if options.n_required is not None:
            columns.check_count(options.n_required, selected, [], explicit=False)
    for column in selected:
        if column not in numeric:
            kind = schema.field(column).type
            raise GmmError(f"{inputs.display}: column {column!r} is not numeric ({kind})")
    chosen = options.required is None and options.columns is None
    skipped = [n for n in names if n not in numeric] if chosen else []
    return Layout(selected, names, skipped)


# -- checking a Dask partition ---------------------------------------------------------------
@dataclass
class Loaded:
    """A block of feature rows (float64, C order; NaN in a missing cell), checked, and what
    reading did with its rows (dropped, kept with missing cells); ``kept`` marks the rows
    read that are in ``x`` (``data.Table.kept``)."""

    x: np.ndarray
    counts: RowCounts = field(default_factory=RowCounts)
    kept: np.ndarray | None = None
    weights: np.ndarray | None = None  # each row's weight (--weights), else None

    @classmethod
    def of(cls, table: data.Table) -> Loaded:
        return cls(table.values, table.counts, table.kept, table.weights)

    def log_likelihood(self, log_density: np.ndarray) -> tuple[float, int, float | None]:
        """Σ log p (Σ w log p with weights, a row of weight 0 adding nothing), the rows and
        Σ w (None without weights): a block's share of loglik's totals."""
        n = int(log_density.shape[0])
        if self.weights is None:
            return float(log_density.sum()), n, None
        counted = np.where(self.weights > 0, self.weights * log_density, 0.0)
        return float(counted.sum()), n, float(self.weights.sum())

    @property
    def n_dropped(self) -> int:
        return self.counts.dropped


class PartitionError(GmmError):
    """Bad input found in a Dask partition, which cannot name the line (see ``find_error``)."""


def frame_values(frame: pd.DataFrame, layout: Layout, missing: str, display: str) -> Loaded:
    """A Parquet partition (pandas) as checked feature rows (runs on the workers): the checks
    of ``data.read_block``, naming the column (Parquet has no lines)."""
    names = layout.names
    x = frame[names].to_numpy(dtype=np.float64)
    rows = frame[names].reset_index(drop=True)
    cells = data.Cells(display, rows, numbered=False, all_columns=layout.all_names)
    try:
        table = data.check_values(x, names, [], cells, data.TableOptions(missing=missing))
    except GmmError as error:
        raise PartitionError(error.message) from None
    return Loaded.of(table)


# -- CSV files in byte ranges (Dask partitions) ----------------------------------------------
DASK_BLOCK_BYTES = 64 << 20  # CSV text per Dask partition


@dataclass(frozen=True)
class ByteRange:
    """Part of a CSV file read by one Dask task: the lines that start in [start, end)."""

    path: str
    start: int
    end: int
    size: int  # the file's size

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end >= self.size


def byte_ranges(inputs: Inputs, block_bytes: int = DASK_BLOCK_BYTES) -> list[ByteRange]:
    """The CSV files cut into ranges of about ``block_bytes`` (one per Dask partition)."""
    ranges = []
    for path in inputs.paths:
        size = os.path.getsize(path)
        starts = range(0, max(size, 1), block_bytes)
        ranges += [ByteRange(path, a, min(a + block_bytes, size), size) for a in starts]
    return ranges


def read_range(part: ByteRange, options: data.TableOptions) -> data.Table:
    """The lines of one byte range read and checked by ``data.read_block`` (on a worker), as
    the stream engine reads a block (line numbers count from the range: a failing partition
    is read again by ``find_error``, which names the file's line)."""
    name = files.display_name(part.path)
    try:
        handle = open(part.path, "rb")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise GmmError(f"{part.path}: cannot read: {error.strerror or error}") from None
    with handle:
        if part.whole:
            return data.read_block(handle.read(), name, options)
        first_line, lead = table_head(handle, options)
        if part.start == 0:
            handle.seek(0)
            place = data.BlockPlace()
            before = b""
        else:
            handle.seek(part.start - 1)
            handle.readline()  # the line under way belongs to the range before
            place = data.BlockPlace(first_line, 2 + lead, handle.tell(), lead=lead)
            before = first_line
        start = handle.tell()
        raw = handle.read(max(0, part.end - start)) if start < part.end else b""
        if raw and not raw.endswith(b"\n"):
            raw += handle.readline()  # to the end of the line
    return data.read_block(before + raw, name, options, place)


def range_values(part: ByteRange, options: data.TableOptions) -> Loaded:
    """One byte range as checked feature rows (a Dask task); bad input as ``PartitionError``."""
    try:
        table = read_range(part, options)
    except GmmError as error:
        raise PartitionError(error.message) from None
    return Loaded.of(table)


def table_head(handle: BinaryIO, options: data.TableOptions) -> tuple[bytes, int]:
    """The table's first line in an open CSV file (its header, or first row, without a
    byte-order mark) and how many lines come before it, as ``data.cut_lead`` counts them:
    --skip-lines lines, then comment lines. Leaves the handle anywhere."""
    handle.seek(0)
    line, lead = handle.readline().removeprefix(codecs.BOM_UTF8), 0
    while line and (lead < options.skip_lines or data.is_comment(line, options.comment)):
        line, lead = handle.readline(), lead + 1
    return line, lead


# -- CSV files in blocks of lines ------------------------------------------------------------
def file_blocks(
    path: str, block_bytes: int, options: data.TableOptions
) -> Iterator[tuple[bytes, data.BlockPlace]]:
    """A CSV file as blocks of whole lines (about ``block_bytes`` each), each after the
    table's first line but the first, and where each sits (``data.BlockPlace``); a file no
    bigger than one block is one block, ``data.WHOLE_FILE``."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise GmmError(f"{path}: cannot read: {error.strerror or error}") from None
    with handle:
        if os.fstat(handle.fileno()).st_size <= block_bytes:
            yield handle.read(), data.WHOLE_FILE
            return
        first_line, lead = table_head(handle, options)
        start = handle.tell() - len(first_line)  # the first block holds the lines before it
        handle.seek(0)
        place = data.BlockPlace()  # the first block: line 1, byte 0, nothing before it
        while True:
            buffer = bytearray(place.first_line)
            buffer += handle.read(block_bytes if place.first_line else max(block_bytes, start + 1))
            buffer += handle.readline()  # to the end of the line
            if len(buffer) == len(place.first_line):
                return
            before = len(place.first_line)
            block = bytes(buffer)
            del buffer
            n_lines, size = block.count(b"\n", before), len(block) - before
            yield block, place
            del block  # hold one block only while the next is read
            line = place.line + n_lines
            place = data.BlockPlace(first_line, line, place.byte + size, lead=lead)


class CsvBlocks:
    """Feature rows of CSV file(s) block by block, each block read and checked by
    ``data.read_block``; each call starts a new pass. Memory: one block of text and its
    values."""

    def __init__(
        self,
        inputs: Inputs,
        layout: Layout,
        table: data.TableOptions,
        *,
        block_bytes: int = BLOCK_BYTES,
        keep_text: bool = False,
    ) -> None:
        self.inputs = inputs
        self.layout = layout
        self.options = table.reading(layout.names, keep_text=keep_text)
        self.block_bytes = block_bytes
        self.counts = RowCounts()  # of the last whole pass

    @property
    def weighted(self) -> bool:
        """Whether the rows carry weights (--weights): then each block of ``__call__`` holds
        them as its last column (``engine.sources.BlockSource``'s convention)."""
        return self.options.weights is not None

    def __call__(self) -> Iterator[np.ndarray]:
        for table in self.tables():
            values = table.values
            if table.weights is not None:
                values = np.column_stack([values, table.weights])
            del table  # hold one block only while the next is read
            yield values

    @property
    def n_dropped(self) -> int:
        return self.counts.dropped

    def loaded(self) -> Iterator[Loaded]:
        for table in self.tables():
            loaded = Loaded(table.values, table.counts, weights=table.weights)
            del table
            yield loaded

    def tables(self, every: bool = False) -> Iterator[data.Table]:
        """The blocks with rows left (``every``: with data rows, kept or dropped), in order;
        at the end, an error if no row is left."""
        counts = RowCounts()
        kept = 0
        weighed = False  # a row of positive weight was seen
        for path in self.inputs.paths:
            name = self.inputs.name_of(path)
            for raw, place in file_blocks(path, self.block_bytes, self.options):
                table = data.read_block(raw, name, self.options, place)
                del raw  # hold one block only while the next is read
                counts += table.counts
                kept += table.values.shape[0]
                weighed = weighed or table.weights is None or bool(table.weights.any())
                if table.values.shape[0] or (every and table.n_dropped):
                    yield table
                del table
        self.counts = counts
        dropped = counts.dropped
        if not kept:
            display = self.inputs.display
            raise GmmError(
                data.no_rows_left(display, dropped) if dropped else f"{display}: no data rows"
            )
        if not weighed:
            raise GmmError(data.all_weights_zero(self.inputs.display, self.options.weights or ""))


def find_error(inputs: Inputs, layout: Layout, table: data.TableOptions) -> str | None:
    """After a Dask partition failed: the first problem in the CSV input, worded as by the
    stream and memory engines (a pass over the files, made only to explain an error)."""
    blocks = CsvBlocks(inputs, layout, table)
    try:
        for _ in blocks.tables():
            pass
    except GmmError as error:
        return error.message
    return None


# -- dask.dataframe --------------------------------------------------------------------------
def parquet_frame(inputs: Inputs, layout: Layout, *, all_columns: bool = False):
    """Parquet input as a dask DataFrame of the feature columns (float64), or with
    ``all_columns`` every column (CSV input is read in byte ranges: ``read_range``)."""
    import dask.dataframe as dd

    wanted = layout.all_names if all_columns else layout.names
    where = inputs.paths[0] if inputs.is_folder else inputs.paths
    try:
        frame = dd.read_parquet(where, columns=wanted)
    except Exception as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise GmmError(f"{inputs.display}: cannot read as Parquet ({reason})") from None
    return frame.astype({c: "float64" for c in layout.names})


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
    files.write_output(os.path.join(folder, PART_NAME.format(index)), data.csv_bytes(frame))
    return len(frame)


def csv_piece(frame: pd.DataFrame, with_header: bool) -> bytes:
    """The frame as CSV bytes, with or without the header line."""
    text = data.csv_bytes(frame)
    return text if with_header else text[text.index(b"\n") + 1 :]


class SpilledBlocks:
    """The feature rows of ``inner`` (a CsvBlocks), parsed once: the first pass reads the
    CSV and writes each block's float64 values to a temporary file in $TMPDIR, unlinked as
    soon as it is made (nothing is left behind, even after SIGKILL); later passes read it
    back in blocks of ``rows`` rows into one reused buffer. Memory stays one block; the disk
    holds n × d × 8 bytes until ``close``.

    Parsing the text is most of a pass's cost, so every pass after the first is several
    times faster (bench/RESULTS.md). If the disk fills up while writing, the spill file is
    dropped and every pass reads the CSV again (``spill_failed`` says so).
    """

    def __init__(self, inner: CsvBlocks, n_features: int, rows: int = 65536) -> None:
        self.inner = inner
        self.n_features = n_features
        self.rows = rows
        self.spill: BinaryIO | None = None  # the unlinked spill file, open until ``close``
        self.n_rows: int | None = None  # known once the first pass has ended
        self.spill_failed = False

    @property
    def counts(self) -> RowCounts:
        return self.inner.counts

    def __call__(self) -> Iterator[np.ndarray]:
        if self.n_rows is not None and self.spill is not None:
            yield from self._read_back()
        elif self.spill_failed:
            yield from self.inner()
        else:
            yield from self._first_pass()

    def _first_pass(self) -> Iterator[np.ndarray]:
        self.close()
        n = 0
        try:
            self.spill = spill_file()
        except OSError:
            self.spill_failed = True
        for x in self.inner():
            if self.spill is not None:
                try:
                    self.spill.write(np.ascontiguousarray(x, dtype=np.float64).tobytes())
                except OSError:  # no room: forget the spill, parse on every pass
                    self.close()
                    self.spill_failed = True
            n += x.shape[0]
            yield x
        if self.spill is not None:
            try:
                self.spill.flush()
            except OSError:
                self.close()
                self.spill_failed = True
            else:
                self.n_rows = n

    def _read_back(self) -> Iterator[np.ndarray]:
        assert self.spill is not None and self.n_rows is not None
        d = self.n_features
        buffer = np.empty((self.rows, d))
        self.spill.seek(0)
        done = 0
        while done < self.n_rows:
            m = min(self.rows, self.n_rows - done)
            view = buffer[:m]
            if self.spill.readinto(memoryview(view).cast("B")) != view.nbytes:
                raise OSError("the spill file ended early")
            done += m
            yield view

    def close(self) -> None:
        """Drop the spill file (its space is freed when it is closed)."""
        spill, self.spill = self.spill, None
        if spill is not None:
            spill.close()


def spill_file() -> BinaryIO:
    """A new temporary file in $TMPDIR with no name (unlinked at once, or never named)."""
    return tempfile.TemporaryFile(prefix="gmm-spill-")
