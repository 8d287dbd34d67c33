"""One input layer for every engine: the same malformed table gives the same one-line error
(file, line, column) under --engine memory, stream and dask, through the real CLI.

Each case is run under the memory engine (the reference) and under the engine of the test;
the stderr lines must be identical. Stdin is not among the cases: the stream and dask
engines reread their input on every pass and refuse ``-`` (see test_stream/test_dask).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gmmcli import dataset, scale
from gmmcli.cli import run
from gmmcli.data import check_float32, read_table
from gmmcli.errors import GmmError
from gmmcli.tableoptions import TableOptions

distributed = pytest.importorskip("distributed")
pytest.importorskip("dask.dataframe")

ENGINES = ["memory", "stream", "dask"]
# rows of a table big enough to need several stream blocks (2 MiB each) and a head (1 MiB)
DEEP_ROWS = 100_000


@dataclass(frozen=True)
class Case:
    """A malformed table, the options it is read with, and what its message must say."""

    content: bytes
    expected: str  # what the one line must hold after "gmm: error: FILE: "
    args: tuple[str, ...] = ()


def deep_table() -> bytes:
    rows = [f"{i * 0.001:.6f},{i * 0.002:.6f},{(i % 97) * 0.5:.6f}" for i in range(DEEP_ROWS)]
    rows[90_000 - 2] = "1.5,oops,2.5"  # line 90000 (the header is line 1)
    return ("a,b,c\n" + "\n".join(rows) + "\n").encode()


CASES = {
    "non-numeric cell": Case(
        b"a,b\n1,2\n3,x\n4,5\n", "line 3, column 'b' (2): cannot read 'x' as a number"
    ),
    "empty cell": Case(b"a,b\n1,2\n3,\n4,5\n", "line 3, column 'b' (2): missing value"),
    "nan": Case(b"a,b\n1,2\nnan,3\n4,5\n", "line 3, column 'a' (1): missing value"),
    "inf": Case(b"a,b\n1,2\n3,inf\n4,5\n", "line 3, column 'b' (2): value is not finite ('inf')"),
    "beyond 1e150": Case(
        b"a,b\n1,2\n3,1e200\n4,5\n", "line 3, column 'b' (2): 1e+200 is too large to square"
    ),
    "too many fields": Case(b"a,b\n1,2\n3,4,5\n6,7\n", "line 3 has 3 fields, expected 2"),
    "too few fields": Case(b"a,b,c\n1,2,3\n4,5\n6,7,8\n", "line 3 has 2 fields, expected 3"),
    "header only": Case(b"a,b\n", "no data rows (only a header)"),
    "empty file": Case(b"", "the file is empty"),
    "duplicate column name": Case(
        b"a,a\n1,2\n3,4\n", "line 1 (the header): duplicate column name 'a' (columns 1 and 2)"
    ),
    "--columns names a missing column": Case(
        b"a,b\n1,2\n3,4\n", "no column 'c' (columns: a, b)", ("--columns", "c")
    ),
    "--columns position out of range": Case(
        b"a,b\n1,2\n3,4\n", "no column '3' (columns: a, b)", ("--columns", "3")
    ),
    "wrong delimiter": Case(
        b"a;b\n1;2\n3;4\n", "the file has 1 column 'a;b': wrong delimiter? use -d ';'"
    ),
    "float32: too far from the mean": Case(
        b"a,b\n1,2\n3,4\n1e20,5\n2,6\n",
        "line 4, column 'a' (1): 1e+20 lies 7.5e+19 from the column's mean",
        ("--dtype", "float32"),
    ),
    "float32: a column varying too little": Case(
        b"a,b\n1,1e-17\n2,2e-17\n3,3e-17\n4,1e-17\n",
        "column 'b' (2): varies by only",
        ("--dtype", "float32"),
    ),
    "bad cell after a blank line": Case(
        b"a,b\n1,2\n\n3,x\n", "line 4, column 'b' (2): cannot read 'x' as a number"
    ),
    "bad cell deep in the file": Case(
        deep_table(), "line 90000, column 'b' (2): cannot read 'oops' as a number"
    ),
    "quoted field": Case(
        b'a,b\n1,2\n"3",4\n"x y",5\n', "line 4, column 'a' (1): cannot read 'x y' as a number"
    ),
    "byte-order mark before the header": Case(
        b"\xef\xbb\xbfa,b\n1,2\n3,x\n", "line 3, column 'b' (2): cannot read 'x' as a number"
    ),
    "no header, bad cell": Case(
        b"1,2\n3,x\n4,5\n", "line 2, column 2: cannot read 'x' as a number", ("--no-header",)
    ),
    "quote not closed": Case(b'a,b\n1,2\n"3,4\n5,6\n', "line 3: a quoted field is not closed"),
    "every row dropped": Case(
        b"a,b\n1,\n,2\n", "no rows left after dropping 2 with missing values", ("--missing", "drop")
    ),
    "not UTF-8": Case(b"a,b\n1,2\n\xff,3\n", "not valid UTF-8 text (byte 0xff on line 3"),
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("malformed")
    paths = {}
    for i, (name, case) in enumerate(CASES.items()):
        path = root / f"case{i:02d}.csv"
        path.write_bytes(case.content)
        paths[name] = path
    return paths


def fit_error(path: Path, case: Case, engine: str, capsys, scheduler: str | None) -> str:
    """Run ``gmm fit`` on the table; check it fails as bad input, with one line on stderr
    and nothing on stdout; return that line."""
    extra = ["--engine", engine] + (["--scheduler", scheduler] if engine == "dask" else [])
    output = path.with_suffix(f".{engine}.json")
    capsys.readouterr()
    status = run(["fit", str(path), "-k", "2", "-o", str(output), *case.args, *extra])
    out, err = capsys.readouterr()
    assert status == 2, err
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert not output.exists()
    return err.rstrip("\n")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", list(CASES))
def test_the_same_error_under_every_engine(name, engine, tables, client, capsys):
    case, path = CASES[name], tables[name]
    address = client.scheduler.address
    line = fit_error(path, case, engine, capsys, address)
    assert line.startswith(f"gmm: error: {path}: "), line
    assert case.expected in line
    assert line == fit_error(path, case, "memory", capsys, address)


# -- the block reader against the whole-table reader, without the CLI -------------------------
def blocks_of(path: Path, block_bytes: int, header: bool, missing: str) -> dataset.CsvBlocks:
    """The stream engine's blocks of ``path``, with the columns chosen on its first lines."""
    table = TableOptions(header=header, missing=missing)
    inputs, layout = scale.open_input("stream", str(path), table)
    return dataset.CsvBlocks(inputs, layout, table, block_bytes=block_bytes)


def read_error(read) -> str:
    with pytest.raises(GmmError) as caught:
        read()
    return caught.value.message


LAYOUTS = {
    "header, LF": (True, b"a,b,c\n", b"\n"),
    "header after a byte-order mark, CRLF": (True, b"\xef\xbb\xbfa,b,c\r\n", b"\r\n"),
    "no header": (False, b"", b"\n"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("block_bytes", [7, 23, 64])
def test_blocks_name_every_line_as_the_whole_table_does(tmp_path, layout, block_bytes):
    """A bad cell on each line in turn, a blank line among the rows: the stream engine's
    blocks (much smaller than the file) give the memory engine's message. (The columns are
    chosen on the clean file: on the broken one, the head would find the cell first.)"""
    header, head, end = LAYOUTS[layout]
    rows = [f"{i}.5,{i},{-i}".encode() for i in range(1, 13)]
    rows[4:4] = [b""]  # a blank line
    path = tmp_path / "t.csv"
    path.write_bytes(head + end.join(rows) + end)
    blocks = blocks_of(path, block_bytes, header, "error")  # the columns of the clean file
    for bad in [i for i, row in enumerate(rows) if row]:
        for cell in (b"x", b"", b"inf", b"1e200"):
            broken = list(rows)
            broken[bad] = b"1.5," + cell + b",2"
            path.write_bytes(head + end.join(broken) + end)
            expected = read_error(lambda: read_table(str(path), header=header))
            assert read_error(lambda: list(blocks())) == expected


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("block_bytes", [7, 23, 1 << 20])
def test_blocks_drop_and_keep_the_rows_the_whole_table_does(tmp_path, layout, block_bytes):
    header, head, end = LAYOUTS[layout]
    rows = [f"{i}.25,{i},{-i}".encode() for i in range(1, 15)]
    rows[3], rows[8], rows[9] = b"4.25,,-4", b"", b"nan,9,-9"
    path = tmp_path / "t.csv"
    path.write_bytes(head + end.join(rows) + end)
    whole = read_table(str(path), header=header, missing="drop", float32=True)
    blocks = blocks_of(path, block_bytes, header, "drop")
    tables = list(blocks.tables())
    assert np.array_equal(np.concatenate([t.values for t in tables]), whole.values)
    assert np.array_equal(np.concatenate([t.lines for t in tables]), whole.lines)
    assert blocks.n_dropped == whole.n_dropped == 2
    check_float32(blocks.tables)  # passes, as read_table's did
