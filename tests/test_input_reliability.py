"""Issue 11, the input layer: one output row per input row, input columns copied as text,
one rule for every engine, input that is not a seekable file, spill files, errors on
stdout, long cells and lines, compressed and encoded input. Every case runs through the real
CLI, under each engine where it applies.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from engine_checks import engine_args, gmm

from gmmcli.cli import run

distributed = pytest.importorskip("distributed")
pytest.importorskip("dask.dataframe")

ENGINES = ["memory", "stream", "dask"]


def two_blobs(n: int = 200, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (n // 2, 2)), rng.normal(6, 1, (n - n // 2, 2))])
    return x.tolist()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model")
    path = root / "fit.csv"
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in two_blobs()))
    out = root / "m.json"
    assert run(["fit", str(path), "-k", "2", "-o", str(out), "-q"]) == 0
    return out


# -- item 8: one output row per input row ------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_predict_missing_drop_writes_one_row_per_input_row(engine, model, client, tmp_path, capsys):
    rows = [f"{a!r},{b!r}" for a, b in two_blobs(200, seed=1)]
    rows[57] = "1.5,"  # line 59: cannot be scored
    rows[130] = "NA,2"  # line 132
    path = tmp_path / "gaps.csv"
    path.write_text("x,y\n" + "\n".join(rows) + "\n")
    args = ["--missing", "drop", *engine_args(engine, client)]
    status, out, err = gmm("predict", model, path, *args, capsys=capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "label,prob_0,prob_1"
    assert len(lines) == 201  # 200 rows read, 200 rows out
    assert lines[58] == ",," and lines[131] == ",,"
    assert all(
        line.split(",")[0] in ("0", "1") for i, line in enumerate(lines[1:]) if i not in (57, 130)
    )
    status, same, _ = gmm("predict", model, path, "--missing", "drop", capsys=capsys)
    assert out == same  # the memory engine's output, byte for byte
    status, dens, err = gmm("loglik", model, path, "--per-sample", *args, capsys=capsys)
    assert status == 0, err
    lines = dens.splitlines()
    assert len(lines) == 201 and lines[58] == "" and lines[131] == ""
    assert float(lines[1]) < 0


# -- item 7: --keep-input copies the input as text ---------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_keep_input_copies_cells_as_text(engine, model, client, tmp_path, capsys):
    path = tmp_path / "text.csv"
    path.write_text('id,x,y\n007,1.50,1e2\n008,-0.0,"2.000"\n009,3,\n010,6.25E0,5.5\n')
    args = ["--keep-input", "--missing", "drop", *engine_args(engine, client)]
    status, out, err = gmm("predict", model, path, *args, capsys=capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "id,x,y,label,prob_0,prob_1"
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["007", "1.50", "1e2"],
        ["008", "-0.0", "2.000"],
        ["009", "3", ""],
        ["010", "6.25E0", "5.5"],
    ]
    assert lines[3] == "009,3,,,,"  # read, not scored: empty result cells


def test_keep_input_is_the_same_across_stream_blocks(model, client, tmp_path, capsys, monkeypatch):
    """Blocks much smaller than the file: every block copies its own lines' text."""
    from gmmcli import dataset

    monkeypatch.setattr(dataset, "BLOCK_BYTES", 64)
    monkeypatch.setattr(dataset, "DASK_BLOCK_BYTES", 64)
    rows = [f"{i:04d},{a:.3f}0,{b:.2e}" for i, (a, b) in enumerate(two_blobs(60, seed=2))]
    rows[10] = "0010,,1"
    path = tmp_path / "many.csv"
    path.write_text("id,x,y\n" + "\n".join(rows) + "\n")
    outs = {}
    for engine in ENGINES:
        args = ["--keep-input", "--missing", "drop", *engine_args(engine, client)]
        status, outs[engine], err = gmm("predict", model, path, *args, capsys=capsys)
        assert status == 0, err
    assert outs["stream"] == outs["memory"] == outs["dask"]
    lines = outs["memory"].splitlines()
    assert len(lines) == 61
    assert [line.split(",")[:3] for line in lines[1:]] == [r.split(",") for r in rows]


# -- item 12: one rule for every engine ------------------------------------------------------
def blob_rows(fmt: str, n: int = 80) -> str:
    return "".join(fmt.format(a, b) for a, b in two_blobs(n, seed=3))


RULE_CASES = {
    "spaces around header names": (" x val , y \n" + blob_rows("{!r},{!r}\n"), [], ["x val", "y"]),
    "a trailing empty field": ("x,y\n" + blob_rows("{!r},{!r},\n"), [], ["x", "y"]),
    "None cells with --missing drop": (
        "x,y\nNone,1\n" + blob_rows("{!r},{!r}\n") + "2,None\n",
        ["--missing", "drop"],
        ["x", "y"],
    ),
    "-c names a column whose header has spaces": (
        "id, x val ,y\n" + blob_rows("r,{!r},{!r}\n"),
        ["-c", "x val,y"],
        ["x val", "y"],
    ),
}


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_every_engine_reads_the_table_the_same_way(case, client, tmp_path, capsys):
    content, args, names = RULE_CASES[case]
    path = tmp_path / "t.csv"
    path.write_text(content)
    models, predictions = {}, {}
    for engine in ENGINES:
        out = tmp_path / f"{engine}.json"
        status, _, err = gmm("fit", path, "-k", 2, "-o", out, "-q", *args,
                             *engine_args(engine, client), capsys=capsys)  # fmt: skip
        assert status == 0, err
        models[engine] = json.loads(out.read_text())
        assert models[engine]["feature_names"] == names
        status, predictions[engine], err = gmm(
            "predict", tmp_path / "memory.json", path, "--keep-input", *args,
            *engine_args(engine, client), capsys=capsys,
        )  # fmt: skip
        assert status == 0, err
    reference = models["memory"]
    for engine in ("stream", "dask"):
        assert models[engine]["fit"]["n_samples"] == reference["fit"]["n_samples"]
        assert np.allclose(models[engine]["means"], reference["means"], rtol=1e-8, atol=0)
        assert predictions[engine] == predictions["memory"]
    assert len(predictions["memory"].splitlines()) == content.count("\n")


@pytest.mark.parametrize("engine", ENGINES)
def test_hexadecimal_is_not_a_number_on_any_engine(engine, client, tmp_path, capsys):
    path = tmp_path / "hex.csv"
    path.write_text("a,b\n1,2\n0x10,4\n5,7\n8,1\n")
    status, out, err = gmm("fit", path, "-k", 1, *engine_args(engine, client), capsys=capsys)
    assert status == 2 and out == ""
    assert err == f"gmm: error: {path}: line 3, column 'a' (1): cannot read '0x10' as a number\n"


# -- item 2: a FIFO or process substitution under --engine stream -------------------------------
def write_in_background(fifo: Path, content: bytes) -> threading.Thread:
    writer = threading.Thread(target=fifo.write_bytes, args=(content,), daemon=True)
    writer.start()
    return writer


def test_stream_reads_a_fifo_once_and_fits_as_from_the_file(model, tmp_path, capsys, monkeypatch):
    """The FIFO's bytes are copied once to a nameless temporary file (nothing in TMPDIR),
    which every pass rereads: the same model as from the file, and no hang."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    content = ("x,y\n" + blob_rows("{!r},{!r}\n", 400)).encode()
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = write_in_background(fifo, content)
    status, out, err = gmm("fit", fifo, "-k", 2, "--engine", "stream", "-q", capsys=capsys)
    writer.join(5)
    assert status == 0, err
    assert not writer.is_alive()
    _, expected, _ = gmm("fit", path, "-k", 2, "--engine", "stream", "-q", capsys=capsys)
    assert json.loads(out)["means"] == json.loads(expected)["means"]
    assert os.listdir(temp) == []
    writer = write_in_background(fifo, content)
    status, out, err = gmm("predict", model, fifo, "--engine", "stream", capsys=capsys)
    writer.join(5)
    assert status == 0, err
    assert out == gmm("predict", model, path, capsys=capsys)[1]


def test_dask_refuses_a_fifo_in_one_line(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: gmm must not open it
    status, out, err = gmm("fit", fifo, "-k", 2, "--engine", "dask", capsys=capsys)
    assert status == 2 and out == ""
    assert err == (
        f"gmm: error: {fifo}: a pipe or device, which can be read only once: --engine dask "
        "needs regular files (use --engine stream or memory, or save it to a file)\n"
    )


def test_process_substitution_under_stream_ends(tmp_path):
    """``gmm fit <(zcat x.gz) --engine stream`` through a real shell: it ends, exit 0."""
    data = tmp_path / "t.csv.gz"
    with gzip.open(data, "wt") as handle:
        handle.write("x,y\n" + blob_rows("{!r},{!r}\n", 200))
    command = f"{sys.executable} -m gmmcli fit <(zcat {data}) -k 2 --engine stream -q"
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["fit"]["n_samples"] == 200


# -- item 5: no spill file is left behind by SIGKILL -----------------------------------------
def test_sigkill_mid_fit_leaves_no_spill_file(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40_000, 3)), rng.normal(5, 1, (40_000, 3))])
    path = tmp_path / "big.csv"
    np.savetxt(path, x, delimiter=",", header="a,b,c", comments="", fmt="%.6f")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    argv = [sys.executable, "-m", "gmmcli", "fit", str(path), "-k", "3", "--engine", "stream",
            "--tol", "0", "--max-iter", "100000", "-q", "-o", str(tmp_path / "m.json")]  # fmt: skip
    process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        spill = None
        deadline = time.monotonic() + 60
        while spill is None and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
            with contextlib.suppress(OSError):
                fds = os.listdir(f"/proc/{process.pid}/fd")
                targets = [os.readlink(f"/proc/{process.pid}/fd/{fd}") for fd in fds]
                spill = next((t for t in targets if t.startswith(str(temp))), None)
        assert process.poll() is None, "the fit ended before it could be killed"
        assert spill is not None and spill.endswith("(deleted)"), spill  # open, with no name
        time.sleep(0.3)  # a few passes more, reading the spill back
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert os.listdir(temp) == []
    assert not (tmp_path / "m.json").exists()


# -- item 6: a late error under --engine stream writes nothing to stdout ---------------------
@pytest.mark.parametrize("what", [["predict"], ["loglik", "--per-sample"]])
def test_stream_finds_a_late_bad_cell_before_writing_to_stdout(
    what, model, tmp_path, capsys, monkeypatch
):
    from gmmcli import dataset

    monkeypatch.setattr(dataset, "BLOCK_BYTES", 256)  # the bad cell is many blocks in
    rows = [f"{a!r},{b!r}" for a, b in two_blobs(300, seed=4)]
    rows[290] = "1.5,oops"
    path = tmp_path / "late.csv"
    path.write_text("x,y\n" + "\n".join(rows) + "\n")
    command, *rest = what
    status, out, err = gmm(command, model, path, *rest, "--engine", "stream", capsys=capsys)
    assert status == 2
    assert out == ""
    assert err == f"gmm: error: {path}: line 292, column 'y' (2): cannot read 'oops' as a number\n"


# -- item 16: a huge cell or name is shown as an excerpt -------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_a_huge_cell_or_name_is_cut_to_an_excerpt(engine, client, tmp_path, capsys):
    cell, name = "x" * 2_000_000, "n" * 100_000
    path = tmp_path / "huge.csv"
    path.write_text(f"a,{name}\n1,2\n3,{cell}\n4,5\n")
    status, out, err = gmm("fit", path, "-k", 1, *engine_args(engine, client), capsys=capsys)
    assert status == 2 and out == ""
    assert err == (
        f"gmm: error: {path}: line 3, column '{'n' * 40}'… (100,000 characters) (2): cannot "
        f"read '{'x' * 40}'… (2,000,000 characters) as a number\n"
    )
    status, out, err = gmm("fit", path, "-k", 1, "-c", "b", capsys=capsys)
    assert status == 2
    assert (
        err == f"gmm: error: {path}: no column 'b' (columns: a, {'n' * 40}… (100,000 characters))\n"
    )


# -- item 21: a single 10 MB line is refused at once ------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1," * 5_000_000 + "1\n", "line 1 has more than 10,000 fields; gmm reads at most 10,000 "
         "columns (wrong delimiter, or not a table?)"),
        ("9" * 10_000_000 + "\n", "no data rows (only a header)"),
    ],
)  # fmt: skip
def test_a_single_10_mb_line_is_refused_fast(engine, line, message, client, tmp_path, capsys):
    path = tmp_path / "line.csv"
    path.write_text(line)
    started = time.perf_counter()
    status, out, err = gmm("fit", path, "-k", 1, *engine_args(engine, client), capsys=capsys)
    assert time.perf_counter() - started < 5  # it took 40 s and 1.7 GB
    assert status == 2 and out == ""
    assert err == f"gmm: error: {path}: {message}\n"


# -- item 19: compressed, encoded and Parquet input -----------------------------------------
@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> tuple[Path, str]:
    """A small CSV and the model the memory engine fits to it (the reference)."""
    root = tmp_path_factory.mktemp("plain")
    path = root / "plain.csv"
    path.write_text("x,y\n" + blob_rows("{!r},{!r}\n", 120))
    out = root / "m.json"
    assert run(["fit", str(path), "-k", "2", "-q", "-o", str(out)]) == 0
    return path, out.read_text()


@pytest.mark.parametrize("engine", ["memory", "stream"])
def test_gzip_is_read_transparently(engine, plain, tmp_path, capsys):
    path, expected = plain
    packed = tmp_path / "plain.csv.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    status, out, err = gmm("fit", packed, "-k", 2, "-q", "--engine", engine, capsys=capsys)
    assert status == 0, err
    assert json.loads(out)["means"] == json.loads(expected)["means"]


@pytest.mark.parametrize("engine", ["memory", "stream"])
def test_other_encodings_are_named_and_read_with_encoding(engine, plain, tmp_path, capsys):
    path, expected = plain
    wide = tmp_path / "utf16.csv"
    wide.write_bytes(path.read_text().encode("utf-16"))
    status, out, err = gmm("fit", wide, "-k", 2, "--engine", engine, capsys=capsys)
    assert status == 2 and out == ""
    assert err == f"gmm: error: {wide}: UTF-16 text (or binary), not UTF-8: use --encoding utf-16\n"
    status, out, err = gmm("fit", wide, "-k", 2, "-q", "--encoding", "utf-16", "--engine", engine,
                           capsys=capsys)  # fmt: skip
    assert status == 0, err
    assert json.loads(out)["means"] == json.loads(expected)["means"]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(path.read_text().replace("x,y", "café,y").encode("latin-1"))
    status, out, err = gmm("fit", latin, "-k", 2, "--engine", engine, capsys=capsys)
    assert status == 2 and out == ""
    assert err == (
        f"gmm: error: {latin}: not valid UTF-8 text (byte 0xe9 on line 1, offset 3): use "
        "--encoding latin-1 (or cp1252) if that is what it is\n"
    )
    status, out, err = gmm("fit", latin, "-k", 2, "-q", "--encoding", "latin-1", "--engine",
                           engine, capsys=capsys)  # fmt: skip
    assert status == 0, err
    assert json.loads(out)["feature_names"] == ["café", "y"]


def test_dask_names_what_it_cannot_read(plain, tmp_path, capsys):
    path, _ = plain
    packed = tmp_path / "plain.csv.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    status, out, err = gmm("fit", packed, "-k", 2, "--engine", "dask", capsys=capsys)
    assert status == 2 and out == ""
    assert err == (
        f"gmm: error: {packed}: gzip-compressed: --engine dask reads UTF-8 CSV files; use "
        "--engine stream or memory, or convert the files\n"
    )


def test_parquet_and_compressed_stdin_in_memory(plain, tmp_path, capsys, monkeypatch):
    import pandas as pd

    path, expected = plain
    frame = pd.read_csv(path)
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    parquet = tmp_path / "plain.parquet"
    frame.to_parquet(parquet, index=False)
    status, out, err = gmm("fit", parquet, "-k", 2, capsys=capsys)
    assert status == 0, err
    assert f"{parquet}: ignoring non-numeric column(s) id" in err
    assert json.loads(out)["means"] == json.loads(expected)["means"]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(path.read_bytes()))))
    status, out, err = gmm("fit", "-", "-k", 2, "-q", capsys=capsys)
    assert status == 0, err
    assert json.loads(out)["means"] == json.loads(expected)["means"]
    workbook = tmp_path / "book.xlsx"
    workbook.write_bytes(b"PK\x03\x04 not a table")
    status, out, err = gmm("fit", workbook, "-k", 2, capsys=capsys)
    assert status == 2 and out == ""
    assert (
        err == f"gmm: error: {workbook}: a zip archive (an .xlsx workbook is one): save it as CSV\n"
    )


# -- item 10: what csvkit users expect --------------------------------------------------------
@pytest.mark.parametrize("engine", ["memory", "stream"])
def test_a_numeric_header_line_is_warned_about(engine, tmp_path, capsys):
    path = tmp_path / "noheader.csv"
    path.write_text("1.5,2\n" + blob_rows("{!r},{!r}\n", 40))
    status, _, err = gmm("fit", path, "-k", 1, "--engine", engine, capsys=capsys)
    assert status == 0, err
    warning = (
        f"gmm: warning: {path}: the header line looks like data (1.5, 2): if the file has no "
        "header, use --no-header\n"
    )
    assert err.startswith(warning)
    status, _, err = gmm("fit", path, "-k", 1, "--no-header", "--engine", engine, capsys=capsys)
    assert status == 0 and "looks like data" not in err


def test_decimal_commas_are_named_in_the_error(tmp_path, capsys):
    path = tmp_path / "european.csv"
    path.write_text("a;b\n1,5;2\n3;4,25\n")
    status, out, err = gmm("fit", path, "-k", 1, "-d", ";", capsys=capsys)
    assert status == 2 and out == ""
    assert err == (
        f"gmm: error: {path}: line 2, column 'a' (1): cannot read '1,5' as a number (a decimal "
        "comma? use --decimal ,)\n"
    )
    status, out, err = gmm("fit", path, "-k", 1, "-d", ";", "--decimal", ",", capsys=capsys)
    assert status == 0, err


@pytest.mark.parametrize(
    ("sent", "status", "line"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_a_fifo_without_writer_can_be_interrupted(sent, status, line, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes: gmm waits in open(), and must still obey signals
    process = subprocess.Popen(
        [sys.executable, "-m", "gmmcli", "fit", str(fifo), "-k", "2", "--engine", "stream"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:  # until it waits
            with contextlib.suppress(OSError):
                if Path(f"/proc/{process.pid}/wchan").read_text() == "wait_for_partner":
                    break
            time.sleep(0.05)
        assert process.poll() is None
        process.send_signal(sent)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == status
    assert out == "" and err == f"gmm: error: {line}\n"
