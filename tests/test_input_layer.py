"""One input layer for every engine: the same malformed table gives the same one-line error
(file, line, column) under --engine memory, stream and dask, through the real CLI.

Each case is run under the memory engine (the reference) and under the engine of the test;
the stderr lines must be identical. Stdin is not among the cases: the stream and dask
engines reread their input on every pass and refuse ``-`` (see test_stream/test_dask).
"""

from __future__ import annotations

import json
import subprocess
import sys
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


def deep_european_table() -> bytes:
    """``deep_table`` as a European export: two lines of notes, a comment, then the table
    with ';' between fields, decimal commas and a comment line every 1000 rows."""
    rows = [f"{i * 0.001:.6f};{i * 0.002:.6f};{(i % 97) * 0.5:.6f}" for i in range(DEEP_ROWS)]
    rows = [row.replace(".", ",") for row in rows]
    for at in range(DEEP_ROWS - 1000, 0, -1000):
        rows.insert(at, "  # checkpoint")
    rows[90_000 - 5] = "1,5;oops;2,5"  # line 90000: 3 lines of notes and the header before
    return ("Export 2026-11-30\nunits: m; s\n# by hand\na;b;c\n" + "\n".join(rows)).encode()


EUROPEAN = ("-d", ";", "--decimal", ",", "--skip-lines", "2", "--comment", "#")


CASES = {
    "non-numeric cell": Case(
        b"a,b\n1,2\n3,x\n4,5\n", "line 3, column 'b' (2): cannot read 'x' as a number"
    ),
    "empty cell": Case(
        b"a,b\n1,2\n3,\n4,5\n", "line 3, column 'b' (2): missing value", ("--missing", "error")
    ),
    "nan": Case(
        b"a,b\n1,2\nnan,3\n4,5\n", "line 3, column 'a' (1): missing value", ("--missing", "error")
    ),
    "a row with no value": Case(
        b"a,b\n1,2\nNA,\n4,5\n", "line 3: no value in any selected column (use --missing drop"
    ),
    "inf, missing cells fitted": Case(
        b"a,b\n1,2\n3,\n4,inf\n", "line 4, column 'b' (2): value is not finite ('inf')"
    ),
    "inf": Case(b"a,b\n1,2\n3,inf\n4,5\n", "line 3, column 'b' (2): value is not finite ('inf')"),
    "beyond 1e150": Case(
        b"a,b\n1,2\n3,1e200\n4,5\n", "line 3, column 'b' (2): 1e+200 is too large to square"
    ),
    "too many fields": Case(b"a,b\n1,2\n3,4,5\n6,7\n", "line 3 has 3 fields, expected 2"),
    "too few fields": Case(
        b"a,b,c\n1,2,3\n4,5\n6,7,8\n", "line 3 has 2 fields, expected 3", ("--missing", "error")
    ),
    # a short line is broken, not missing its last cells (those are empty fields or NA)
    "too few fields, missing cells fitted": Case(
        b"a,b,c\n1,2,3\n4,,\n5,NA,7\n8,9\n10,11,12\n", "line 5 has 2 fields, expected 3"
    ),
    "too few fields, rows with missing cells dropped": Case(
        b"a,b,c\n1,2,3\n4,,\n5,6\n", "line 4 has 2 fields, expected 3", ("--missing", "drop")
    ),
    "too few fields, quoted": Case(
        b'a,b,c\n1,2,3\n4,,\n"5",6\n8,9,1\n', "line 4 has 2 fields, expected 3"
    ),
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
    "decimal comma, bad cell": Case(
        b"a;b\n1,5;2\n3;x\n", "line 3, column 'b' (2): cannot read 'x' as a number", EUROPEAN[:4]
    ),
    "decimal point with --decimal ,": Case(
        b"a;b\n1,5;2\n3.5;4\n",
        "line 3, column 'a' (1): cannot read '3.5' as a number (with --decimal , a number is "
        "written 1,5)",
        EUROPEAN[:4],
    ),
    "decimal comma without --decimal": Case(
        b"a;b\n1,5;2,5\n3,5;4,25\n",
        "no numeric columns (skipped: a, b) (a decimal comma? use --decimal ,)",
        ("-d", ";"),
    ),
    "skipped lines and comments, bad cell": Case(
        b"title\nnotes, more\n# units\na;b\n1;2\n # mid\n3;x\n",
        "line 7, column 'b' (2): cannot read 'x' as a number",
        EUROPEAN,
    ),
    "skipped lines, no header, bad cell": Case(
        b"title\n1,2\n3,x\n",
        "line 3, column 2: cannot read 'x' as a number",
        ("--skip-lines", "1", "--no-header"),
    ),
    "skipped lines, bad header": Case(
        b"title\n# notes\na,a\n1,2\n",
        "line 3 (the header): duplicate column name 'a' (columns 1 and 2)",
        ("--skip-lines", "1", "--comment", "#"),
    ),
    "skipped lines, too many fields": Case(
        b"title\na,b\n1,2\n3,4,5\n", "line 4 has 3 fields, expected 2", ("--skip-lines", "1")
    ),
    "every line skipped": Case(
        b"a,b\n1,2\n", "no table after the first 2 lines (--skip-lines)", ("--skip-lines", "5")
    ),
    "European export, bad cell deep in the file": Case(
        deep_european_table(),
        "line 90000, column 'b' (2): cannot read 'oops' as a number",
        EUROPEAN,
    ),
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
def blocks_of(
    path: Path, block_bytes: int, header: bool, missing: str, **options
) -> dataset.CsvBlocks:
    """The stream engine's blocks of ``path``, with the columns chosen on its first lines."""
    table = TableOptions(header=header, missing=missing, **options)
    inputs, layout = scale.open_input("stream", str(path), table)
    return dataset.CsvBlocks(inputs, layout, table, block_bytes=block_bytes)


def read_error(read) -> str:
    with pytest.raises(GmmError) as caught:
        read()
    return caught.value.message


LAYOUTS = {
    "header, LF": (True, b"a,b,c\n", b"\n", {}),
    "header after a byte-order mark, CRLF": (True, b"\xef\xbb\xbfa,b,c\r\n", b"\r\n", {}),
    "no header": (False, b"", b"\n", {}),
    "notes and comments before the header": (
        True,
        b"\xef\xbb\xbfnotes\n# more\n#\na,b,c\n",
        b"\n",
        {"skip_lines": 1, "comment": "#"},
    ),
    "notes and comments, no header, CRLF": (
        False,
        b"notes\r\nmore\r\n # c\r\n",
        b"\r\n",
        {"skip_lines": 2, "comment": "#"},
    ),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("block_bytes", [7, 23, 64])
def test_blocks_name_every_line_as_the_whole_table_does(tmp_path, layout, block_bytes):
    """A bad cell on each line in turn, a blank line among the rows: the stream engine's
    blocks (much smaller than the file) give the memory engine's message. (The columns are
    chosen on the clean file: on the broken one, the head would find the cell first.)"""
    header, head, end, options = LAYOUTS[layout]
    rows = [f"{i}.5,{i},{-i}".encode() for i in range(1, 13)]
    rows[4:4] = [b""]  # a blank line
    if options:
        rows[8:8] = [b"# a comment, 1,x,2"]
    path = tmp_path / "t.csv"
    path.write_bytes(head + end.join(rows) + end)
    blocks = blocks_of(path, block_bytes, header, "error", **options)  # the clean file's columns
    for bad in [i for i, row in enumerate(rows) if row and not row.startswith(b"#")]:
        for cell in (b"x", b"", b"inf", b"1e200"):
            broken = list(rows)
            broken[bad] = b"1.5," + cell + b",2"
            path.write_bytes(head + end.join(broken) + end)
            expected = read_error(
                lambda: read_table(str(path), header=header, missing="error", **options)
            )
            assert f"line {len(head.splitlines()) + bad + 1}, " in expected
            assert read_error(lambda: list(blocks())) == expected


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("block_bytes", [7, 23, 1 << 20])
def test_blocks_drop_and_keep_the_rows_the_whole_table_does(tmp_path, layout, block_bytes):
    header, head, end, options = LAYOUTS[layout]
    rows = [f"{i}.25,{i},{-i}".encode() for i in range(1, 15)]
    rows[3], rows[8], rows[9] = b"4.25,,-4", b"", b"nan,9,-9"
    if options:
        rows[5] = b"#5.25,5,-5"
    path = tmp_path / "t.csv"
    path.write_bytes(head + end.join(rows) + end)
    whole = read_table(str(path), header=header, missing="drop", float32=True, **options)
    assert whole.values.shape[0] == 11 - bool(options)
    assert whole.lines[0] == len(head.splitlines()) + 1
    blocks = blocks_of(path, block_bytes, header, "drop", **options)
    tables = list(blocks.tables())
    assert np.array_equal(np.concatenate([t.values for t in tables]), whole.values)
    assert np.array_equal(np.concatenate([t.lines for t in tables]), whole.lines)
    assert blocks.n_dropped == whole.n_dropped == 2
    check_float32(blocks.tables)  # passes, as read_table's did


# -- how a table is written: decimal commas, notes before it, comment lines -------------------
def gmm(*args: str) -> subprocess.CompletedProcess:
    """The real gmm process (stderr kept for the failure message)."""
    done = subprocess.run([sys.executable, "-m", "gmmcli", *args], capture_output=True, text=True)
    assert done.stderr == "", done.stderr
    return done


@pytest.mark.parametrize("engine", ENGINES)
def test_a_european_export_reads_as_the_plain_table_on_every_engine(tmp_path, engine, client):
    """The same numbers written with ';' and decimal commas, after notes, with comment lines
    among the rows: every engine fits exactly the model of the plain table, and predict
    writes one row per data row."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, (150, 2)), rng.normal(4, 0.5, (150, 2))])
    plain, european = tmp_path / "plain.csv", tmp_path / "export.csv"
    rows = [f"{a!r},{b!r}" for a, b in x.tolist()]
    plain.write_text("a,b\n" + "\n".join(rows) + "\n")
    rows = [row.replace(",", ";").replace(".", ",") for row in rows]
    rows[40:40] = ["# a note; 1,5"]
    european.write_text("Export\n\n# units: none\na;b\n" + "\n".join(rows) + "\n")
    options = ["-d", ";", "--decimal", ",", "--skip-lines", "2", "--comment", "#"]
    scheduler = ["--scheduler", client.scheduler.address] if engine == "dask" else []
    engine_args = ["--engine", engine, *scheduler, "-q"]
    models = {}
    for name, path, extra in (("plain", plain, []), ("european", european, options)):
        models[name] = tmp_path / f"{name}.json"
        args = ["fit", str(path), "-k", "2", "--seed", "2", "-o", str(models[name])]
        assert gmm(*args, *extra, *engine_args).returncode == 0
    fitted = {name: json.loads(path.read_text()) for name, path in models.items()}
    assert fitted["european"]["fit"]["log_likelihood"] == fitted["plain"]["fit"]["log_likelihood"]
    assert fitted["european"]["means"] == fitted["plain"]["means"]
    labels = tmp_path / "labels.csv"
    predict = ["predict", str(models["plain"]), str(european), "-o", str(labels)]
    assert gmm(*predict, *options, *engine_args).returncode == 0
    assert len(labels.read_text().splitlines()) == 1 + x.shape[0]
