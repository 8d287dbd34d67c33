"""--engine dask: the same fit as in memory from the same start, whatever the partitioning;
predict/loglik partition-wise; the CLI end to end; errors; a worker lost mid-fit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("dask.dataframe")

from engine_checks import assert_same_fit, blobs, gmm, relative_error, start_params  # noqa: E402

from gmmcli.engine.distributed import DaskSource  # noqa: E402
from gmmcli.engine.em import EMOptions, ReseedEvent, fit, fit_source  # noqa: E402
from gmmcli.engine.params import MixtureParams  # noqa: E402
from gmmcli.tableoptions import TableOptions  # noqa: E402

TYPES = ["full", "tied", "diag", "spherical"]


def scattered(client, x: np.ndarray, n_parts: int) -> DaskSource:
    parts = client.scatter(np.array_split(x, n_parts))
    return DaskSource(client, parts, x.shape[1])


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("n_parts", [1, 3, 7])
def test_dask_fit_matches_memory_from_the_same_start(client, covariance_type, n_parts):
    x = blobs()
    start = start_params(x, 3, covariance_type)
    options = EMOptions(3, covariance_type=covariance_type, tol=0.0, max_iter=12)
    reference = fit(x, options, start)
    ours = fit_source(scattered(client, x, n_parts), options, start)
    assert_same_fit(ours, reference)
    assert ours.best.history[-1] > ours.best.history[0]  # it did fit


def test_the_default_stopping_rule_stops_where_memory_does(client):
    """The rule lives in the loop every engine shares: on Dask, the same iterations."""
    x = blobs()
    start = start_params(x, 3, "full")
    reference = fit(x, EMOptions(3), start)
    ours = fit_source(scattered(client, x, 3), EMOptions(3), start)
    assert reference.best.converged and reference.best.n_iter > 10
    assert_same_fit(ours, reference)
    assert ours.best.converged


def test_kmeans_start_matches_memory_when_the_sample_holds_every_row(client):
    """With n ≤ the sample size the sample is the data in order: the same k-means++ start."""
    x = blobs(1)
    options = EMOptions(3, tol=1e-6, n_init=2, seed=5)
    reference = fit(x, options)
    ours = fit_source(scattered(client, x, 4), options)
    assert_same_fit(ours, reference)
    assert [r.n_iter for r in ours.restarts] == [r.n_iter for r in reference.restarts]


def test_collapse_is_reseeded_as_in_memory(client):
    """A component stuck on a few repeated rows is found and re-seeded on the worst rows,
    which come back from the workers inside the statistics."""
    x = np.concatenate([blobs(2, n_per=300), np.full((4, 3), 40.0)])
    start = start_params(x, 4, "full")
    start = MixtureParams(
        "full",
        start.weights,
        np.concatenate([start.means[:3], np.full((1, 3), 40.0)]),
        start.covariances,
    )
    options = EMOptions(4, tol=0.0, max_iter=15)
    events: list = []
    reference = fit(x, options, start)
    ours = fit_source(scattered(client, x, 5), options, start, events.append)
    reseeds = [e for e in events if isinstance(e, ReseedEvent)]
    assert len(reseeds) == len(reference.best.reseeds) > 0
    for mine, theirs in zip(reseeds, reference.best.reseeds, strict=True):
        assert mine.collapse.component == theirs.collapse.component
        assert np.array_equal(mine.new_mean, theirs.new_mean)
    assert_same_fit(ours, reference)


# -- the command line ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same rows as one CSV, three CSV parts, and a Parquet folder of two files."""
    root = tmp_path_factory.mktemp("dask_cli")
    x = blobs(4)
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame.insert(0, "id", [f"r{i}" for i in range(len(x))])
    frame.to_csv(root / "all.csv", index=False, float_format="%.17g")
    (root / "parts").mkdir()
    for i, piece in enumerate(np.array_split(np.arange(len(x)), 3)):
        frame.iloc[piece].to_csv(root / "parts" / f"p{i}.csv", index=False, float_format="%.17g")
    (root / "pq").mkdir()
    for i, piece in enumerate(np.array_split(np.arange(len(x)), 2)):
        frame.iloc[piece].to_parquet(root / "pq" / f"part.{i}.parquet", index=False)
    return root


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_cli_fit_on_a_glob_and_on_parquet_gives_the_in_memory_model(
    client, files, tmp_path, capsys
):
    memory = tmp_path / "memory.json"
    assert gmm("fit", files / "all.csv", "-k", 3, "-o", memory, "-q", capsys=capsys)[0] == 0
    for data in [files / "parts" / "p*.csv", files / "pq"]:
        out = tmp_path / "dask.json"
        status, _, err = gmm(
            "fit", data, "-k", 3, "--engine", "dask", "--scheduler", client.scheduler.address,
            "-o", out, capsys=capsys,
        )  # fmt: skip
        assert status == 0, err
        assert "fitting 3 components (full covariance) to 2100 rows × 3 columns" in err
        assert "ignoring non-numeric column(s) id" in err
        ours, theirs = load(out), load(memory)
        for key in ["weights", "means", "covariances"]:
            assert relative_error(ours[key], theirs[key]) < 1e-8
        assert ours["fit"]["n_iter"] == theirs["fit"]["n_iter"]
        assert ours["fit"]["log_likelihood"] == pytest.approx(
            theirs["fit"]["log_likelihood"], rel=1e-10
        )


def test_cli_predict_and_loglik_partition_wise(client, files, tmp_path, capsys):
    model = tmp_path / "m.json"
    assert gmm("fit", files / "all.csv", "-k", 3, "-o", model, "-q", capsys=capsys)[0] == 0
    dask = ["--engine", "dask", "--scheduler", client.scheduler.address]
    _, expected, _ = gmm("predict", model, files / "all.csv", capsys=capsys)
    status, out, err = gmm("predict", model, files / "parts" / "p*.csv", *dask, capsys=capsys)
    assert status == 0, err
    assert out == expected  # stdout in row order, byte for byte
    folder = tmp_path / "out"
    status, out, err = gmm("predict", model, files / "pq", "-o", f"{folder}/", *dask,
                           capsys=capsys)  # fmt: skip
    assert status == 0 and out == "", err
    parts = sorted(folder.glob("part-*.csv"))
    assert len(parts) == 2
    joined = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(joined, pd.read_csv(pd.io.common.StringIO(expected)))

    _, expected, _ = gmm("loglik", model, files / "all.csv", "--json", capsys=capsys)
    status, out, _ = gmm("loglik", model, files / "parts" / "p*.csv", "--json", *dask,
                         capsys=capsys)  # fmt: skip
    ours, theirs = json.loads(out), json.loads(expected)
    assert ours["n_rows"] == theirs["n_rows"] == 2100
    assert ours["log_likelihood"] == pytest.approx(theirs["log_likelihood"], rel=1e-12)
    _, expected, _ = gmm("loglik", model, files / "all.csv", "--per-sample", capsys=capsys)
    _, out, _ = gmm("loglik", model, files / "parts" / "p*.csv", "--per-sample", *dask,
                    capsys=capsys)  # fmt: skip
    assert out == expected


def test_cli_keep_input_keeps_text_columns(client, files, tmp_path, capsys):
    model = tmp_path / "m.json"
    assert gmm("fit", files / "all.csv", "-k", 3, "-o", model, "-q", capsys=capsys)[0] == 0
    status, out, err = gmm(
        "predict", model, files / "parts" / "p*.csv", "--keep-input", "--no-proba",
        "--engine", "dask", "--scheduler", client.scheduler.address, capsys=capsys,
    )  # fmt: skip
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "id,a,b,c,label"
    assert lines[1].startswith("r0,") and lines[-1].startswith("r2099,")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "{root}/nothing-*.csv", "-k", "2"], "{root}/nothing-*.csv: no file matches"),
        (["fit", "{root}/bad.parquet", "-k", "2"], "{root}/bad.parquet: cannot read as Parquet"),
        (["fit", "-", "-k", "2"], "<stdin>: --engine dask and stream read files"),
        (["fit", "{root}/bad-*.csv", "-k", "2"],
         "{root}/bad-1.csv: line 4, column 'b' (2): cannot read 'oops' as a number"),
        (["fit", "{root}/ok-*.csv", "-k", "50"], "{root}/ok-*.csv: 20 rows are fewer than the 50"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(client, tmp_path, capsys, args, message):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    good = "a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(10))
    (tmp_path / "bad-0.csv").write_text(good)
    (tmp_path / "bad-1.csv").write_text("a,b\n1,2\n3,3\n4,oops\n5,6\n")
    (tmp_path / "ok-0.csv").write_text(good)
    (tmp_path / "ok-1.csv").write_text(good)
    root = str(tmp_path)
    argv = [a.format(root=root) for a in args]
    status, out, err = gmm(
        *argv, "--engine", "dask", "--scheduler", client.scheduler.address, capsys=capsys
    )
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gmm: error: " + message.format(root=root)), err


def test_bad_scheduler_address_fails_fast(tmp_path, capsys, monkeypatch):
    from gmmcli import scale

    monkeypatch.setattr(scale, "CONNECT_TIMEOUT", 2)
    (tmp_path / "a.csv").write_text("a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(10)))
    for address in ["tcp://127.0.0.1:9", "not-a-scheduler::"]:
        status, out, err = gmm(
            "fit", tmp_path / "a.csv", "-k", 2, "--engine", "dask", "--scheduler", address,
            capsys=capsys,
        )  # fmt: skip
        assert status == 2 and out == ""
        assert err.startswith(f"gmm: error: --scheduler {address}: cannot connect"), err
        assert len(err.strip().splitlines()) == 1
    status, _, err = gmm("fit", tmp_path / "a.csv", "-k", 2, "--scheduler", "tcp://x:1",
                         capsys=capsys)  # fmt: skip
    assert status == 2 and "--scheduler needs --engine dask" in err


def test_a_real_gmm_starts_and_closes_its_own_local_cluster(files, tmp_path):
    """No --scheduler: gmm starts processes on loopback and stops them; stdout is the model."""
    result = subprocess.run(
        [sys.executable, "-m", "gmmcli", "fit", str(files / "parts" / "p*.csv"), "-k", "3",
         "--engine", "dask", "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    model = json.loads(result.stdout)
    assert model["fit"]["n_samples"] == 2100 and model["fit"]["converged"]


def test_help_does_not_import_dask():
    code = "import sys; from gmmcli.cli import run; run(['fit', '--help']); print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"  # noqa: E501
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


# -- a worker lost in the middle of a fit (last: it disturbs the shared cluster) ---------------
def test_a_worker_killed_mid_fit_is_recomputed_or_fails_in_one_line(client, files):
    """Partitions have lineage (read → check → shift), so Dask recomputes what the dead worker
    held; the fit ends with the undisturbed answer, or with one clear error — never hangs."""
    from gmmcli import dataset, scale
    from gmmcli.errors import GmmError

    table = TableOptions()
    inputs, layout = scale.open_input("dask", str(files / "parts" / "p*.csv"), table)
    parts, n_rows, _ = scale.load_partitions(client, inputs, layout, table)
    assert n_rows == 2100
    x = pd.read_csv(files / "all.csv")[["a", "b", "c"]].to_numpy()
    start = start_params(x, 3, "full")
    options = EMOptions(3, tol=0.0, max_iter=30)
    reference = fit(x, options, start)
    pids = client.run(os.getpid)
    holders = {w for ws in client.who_has(parts).values() for w in ws}
    victim = pids[sorted(holders)[0]]
    killed = threading.Event()

    def on_event(event) -> None:
        if getattr(event, "iteration", 0) == 3 and not killed.is_set():
            killed.set()
            os.kill(victim, signal.SIGKILL)

    outcome: dict = {}

    def work() -> None:
        try:
            with scale.cluster_errors(inputs, layout, table):
                outcome["result"] = fit_source(
                    DaskSource(client, parts, 3), options, start, on_event
                )
        except GmmError as error:
            outcome["error"] = str(error)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the fit hung after a worker was killed"
    assert killed.is_set()
    if "result" in outcome:
        assert_same_fit(outcome["result"], reference)
    else:
        assert "\n" not in outcome["error"] and "Dask cluster" in outcome["error"]
    del dataset


def test_ctrl_c_under_dask_is_one_line(tmp_path):
    """Ctrl-C reaches the whole process group; the cluster's processes leave it to gmm,
    which says one line (it used to print 68 lines of worker tracebacks)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(0)
    data = tmp_path / "big.csv"
    x = np.concatenate([rng.normal(size=(20_000, 5)) + 3 * c for c in range(4)])
    np.savetxt(data, x, delimiter=",", fmt="%.5f", header="a,b,c,d,e", comments="")
    command = [sys.executable, "-m", "gmmcli", "fit", str(data), "-k", "8", "--tol", "0"]
    command += ["--max-iter", "100000", "--engine", "dask", "-q", "-o", str(tmp_path / "m.json")]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        time.sleep(12)  # the cluster is up and the fit iterating
        assert process.poll() is None
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert (process.returncode, out, err.decode()) == (130, b"", "gmm: error: interrupted\n")
        assert not (tmp_path / "m.json").exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
