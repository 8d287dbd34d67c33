"""--engine stream: one pass over a CSV per iteration, in bounded memory; the same fit as in
memory from the same start, whatever the block size; predict/loglik in row order; errors."""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from engine_checks import assert_same_fit, blobs, gmm, relative_error, start_params

from gmmcli import dataset, scale
from gmmcli.engine.em import EMOptions, fit, fit_source
from gmmcli.engine.sources import BlockSource
from gmmcli.tableoptions import TableOptions

TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    """Rows written exactly (17 significant digits), with a text column to skip."""
    root = tmp_path_factory.mktemp("stream")
    x = blobs()
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame.insert(1, "name", [f"n{i}" for i in range(len(x))])
    path = root / "data.csv"
    frame.to_csv(path, index=False, float_format="%.17g")
    return path, x


def blocks_of(path, n_blocks: int, **kw) -> dataset.CsvBlocks:
    table = TableOptions(**kw)
    inputs, layout = scale.open_input("stream", str(path), table)
    size = path.stat().st_size // n_blocks + 64
    return dataset.CsvBlocks(inputs, layout, table, block_bytes=size)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("n_blocks", [1, 3, 7])
def test_stream_fit_matches_memory_from_the_same_start(csv, covariance_type, n_blocks):
    path, x = csv
    blocks = blocks_of(path, n_blocks)
    assert len(list(blocks())) >= n_blocks
    assert np.array_equal(np.concatenate(list(blocks())), x)  # read exactly, in order
    start = start_params(x, 3, covariance_type)
    options = EMOptions(3, covariance_type=covariance_type, tol=0.0, max_iter=12)
    reference = fit(x, options, start)
    ours = fit_source(BlockSource(blocks, 3, threads=2), options, start)
    assert_same_fit(ours, reference)
    assert ours.best.history[-1] > ours.best.history[0]


def test_the_default_stopping_rule_stops_where_memory_does(csv):
    """The rule lives in the loop every engine shares: streamed, the same iterations."""
    path, x = csv
    start = start_params(x, 3, "full")
    reference = fit(x, EMOptions(3), start)
    ours = fit_source(BlockSource(blocks_of(path, 3), 3, threads=2), EMOptions(3), start)
    assert reference.best.converged and reference.best.n_iter > 10
    assert_same_fit(ours, reference)
    assert ours.best.converged


def test_the_sample_does_not_depend_on_the_blocks(csv):
    path, x = csv
    samples = []
    for n_blocks in [1, 2, 5]:
        source = BlockSource(blocks_of(path, n_blocks), 3, threads=1, seed=4, sample_size=150)
        n, summary = source.summarise(512)
        assert n == len(x)
        np.testing.assert_allclose(summary.shift, x.mean(axis=0), rtol=1e-13)
        np.testing.assert_allclose(summary.covariance, np.cov(x.T, bias=True), rtol=1e-12)
        samples.append(source.sample)
    assert samples[0].shape == (150, 3)
    for other in samples[1:]:
        assert np.array_equal(other, samples[0])
    # rows of the data, in the data's order
    index = [int(np.flatnonzero((x == row).all(axis=1))[0]) for row in samples[0]]
    assert index == sorted(index)
    other_seed = BlockSource(blocks_of(path, 1), 3, threads=1, seed=5, sample_size=150)
    other_seed.summarise(512)
    assert not np.array_equal(other_seed.sample, samples[0])


def test_memory_stays_bounded_by_the_block_not_the_file(tmp_path):
    """numpy's allocations (tracemalloc sees them) stay far below the data's size."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(100_000, 4)), rng.normal(size=(100_000, 4)) + 5])
    path = tmp_path / "big.csv"
    pd.DataFrame(x, columns=list("abcd")).to_csv(path, index=False, float_format="%.6f")
    blocks = blocks_of(path, 40)
    source = BlockSource(blocks, 4, threads=1, sample_size=2000)
    options = EMOptions(2, max_iter=3, tol=0.0, chunk_size=4096)
    tracemalloc.start()
    try:
        result = fit_source(source, options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.n_samples == 200_000
    assert peak < x.nbytes / 4, f"peak {peak / 2**20:.1f} MiB for {x.nbytes / 2**20:.1f} MiB"


# -- the command line ------------------------------------------------------------------------


def test_cli_stream_fit_predict_loglik_match_memory(csv, tmp_path, capsys):
    path, _ = csv
    memory, stream = tmp_path / "memory.json", tmp_path / "stream.json"
    assert gmm("fit", path, "-k", 3, "--n-init", 2, "-o", memory, "-q", capsys=capsys)[0] == 0
    status, out, err = gmm(
        "fit", path, "-k", 3, "--n-init", 2, "--engine", "stream", "-o", stream, capsys=capsys
    )
    assert status == 0 and out == "", err
    assert "read in blocks on every pass" in err and "ignoring non-numeric column(s) name" in err
    ours, theirs = json.loads(stream.read_text()), json.loads(memory.read_text())
    for key in ["weights", "means", "covariances"]:
        assert relative_error(ours[key], theirs[key]) < 1e-8
    assert ours["fit"]["n_iter"] == theirs["fit"]["n_iter"]

    for command in (["predict"], ["loglik", "--per-sample"], ["loglik", "--json"]):
        _, expected, _ = gmm(command[0], memory, path, *command[1:], capsys=capsys)
        status, out, err = gmm(
            command[0], memory, path, *command[1:], "--engine", "stream", capsys=capsys
        )
        assert status == 0, err
        assert out == expected
    target = tmp_path / "labels.csv"
    assert gmm("predict", memory, path, "--engine", "stream", "-o", target, capsys=capsys)[0] == 0
    _, expected, _ = gmm("predict", memory, path, capsys=capsys)
    assert target.read_text() == expected


def test_missing_values_are_dropped_and_counted(tmp_path, capsys):
    rows = [f"{i % 5},{(i * 7) % 11}" for i in range(60)]
    rows[10] = "3,"
    rows[40] = "NA,2"
    path = tmp_path / "gaps.csv"
    path.write_text("a,b\n" + "\n".join(rows) + "\n")
    status, _, err = gmm(
        "fit", path, "-k", 2, "--engine", "stream", "--missing", "error", capsys=capsys
    )
    assert status == 2
    assert err.strip() == (
        f"gmm: error: {path}: line 12, column 'b' (2): missing value "
        "(use --missing drop to skip such rows)"
    )
    status, out, err = gmm(
        "fit", path, "-k", 2, "--engine", "stream", "--missing", "drop", capsys=capsys
    )
    assert status == 0, err
    assert "dropped 2 row(s)" in err
    assert json.loads(out)["fit"]["n_samples"] == 58


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("a,b\n1,2\n3,x\n", [], "{path}: line 3, column 'b' (2): cannot read 'x' as a number"),
        ("a,b\n1,2\n3,1e200\n", [], "{path}: line 3, column 'b' (2): 1e+200 is too large"),
        ("a,b\n1,2\n3,4\n", ["--standardize"], "--standardize is not available"),
        ("a,b\n1,2\n3,4\n", ["-k", "9"], "{path}: 2 rows are fewer than the 9 components"),
        ("a\n", [], "{path}: no data rows (only a header)"),
    ],
)
def test_stream_errors_are_one_line(tmp_path, capsys, content, args, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    argv = ["-k", "1", *args] if "-k" not in args else args
    status, out, err = gmm("fit", path, *argv, "--engine", "stream", capsys=capsys)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("gmm: error: " + message.format(path=path)), err


def test_stream_refuses_stdin_parquet_and_folders(tmp_path, capsys):
    path = tmp_path / "a.csv"
    path.write_text("a,b\n1,2\n3,4\n5,5\n")
    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(tmp_path / "a.parquet")
    model = tmp_path / "m.json"
    assert gmm("fit", path, "-k", 1, "-o", model, "-q", capsys=capsys)[0] == 0
    cases = [
        (["fit", "-", "-k", "1"], "<stdin>: --engine dask and stream read files"),
        (["fit", tmp_path / "a.parquet", "-k", "1"], "--engine stream reads CSV"),
        (["predict", model, path, "-o", f"{tmp_path}/out/"], "a folder of part files needs"),
    ]
    for argv, fragment in cases:
        status, out, err = gmm(*argv, "--engine", "stream", capsys=capsys)
        assert status == 2 and out == "", err
        assert err.startswith("gmm: error: ") and fragment in err, err


# -- the parsed rows spilled to disk after the first pass -----------------------------------
@pytest.mark.parametrize("rows_per_read", [500, 65536])
def test_spilled_passes_give_the_same_rows_and_fit(csv, rows_per_read):
    """Later passes read the spill file back: the same rows, in order, exactly; the fit from
    the same start matches the in-memory one; the spill file has no name in $TMPDIR, and is
    closed by close()."""
    path, x = csv
    spilled = dataset.SpilledBlocks(blocks_of(path, 3), 3, rows=rows_per_read)
    first = np.concatenate([b.copy() for b in spilled()])
    assert spilled.spill is not None and spilled.n_rows == len(x)
    assert os.fstat(spilled.spill.fileno()).st_size == x.nbytes
    assert os.fstat(spilled.spill.fileno()).st_nlink == 0  # unlinked: SIGKILL leaves nothing
    again = [b.copy() for b in spilled()]  # read back, not parsed
    assert len(again) == -(-len(x) // rows_per_read)
    assert np.array_equal(first, x) and np.array_equal(np.concatenate(again), x)
    start = start_params(x, 3, "full")
    options = EMOptions(3, tol=0.0, max_iter=8)
    ours = fit_source(BlockSource(spilled, 3, threads=1), options, start)
    assert_same_fit(ours, fit(x, options, start))
    spill = spilled.spill
    spilled.close()
    assert spill.closed and spilled.spill is None


def test_a_full_disk_falls_back_to_parsing_every_pass(csv, monkeypatch):
    path, x = csv
    spilled = dataset.SpilledBlocks(blocks_of(path, 3), 3)

    class FullDisk:  # a spill file that takes no bytes
        def write(self, data):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    monkeypatch.setattr(dataset, "spill_file", FullDisk)
    first = np.concatenate([b.copy() for b in spilled()])
    monkeypatch.undo()
    assert spilled.spill_failed and spilled.spill is None
    assert np.array_equal(first, x)
    assert np.array_equal(np.concatenate([b.copy() for b in spilled()]), x)  # parsed again


def test_each_pass_reports_its_progress(csv):
    """A source that reads as it goes tells the EM loop how far each pass has got (the
    terminal shows it as a bar under the convergence table)."""
    from gmmcli.engine.em import PassEvent

    path, x = csv
    events = []
    options = EMOptions(3, tol=0.0, max_iter=3)
    fit_source(BlockSource(blocks_of(path, 4), 3, threads=1), options, None, events.append)
    passes = [e for e in events if isinstance(e, PassEvent)]
    assert {e.iteration for e in passes} == {1, 2, 3}
    for it in (1, 2, 3):
        done = [e.rows_done for e in passes if e.iteration == it]
        # each pass counts up to every row (an iteration may take a second pass: recentred)
        ends = [i for i, v in enumerate(done) if v == len(x)]
        assert ends and ends[-1] == len(done) - 1 and len(done) >= 4
        for a, b in zip([-1, *ends[:-1]], ends, strict=True):
            assert done[a + 1 : b + 1] == sorted(done[a + 1 : b + 1])
        assert all(e.rows_total == len(x) for e in passes)
