"""Missing cells by EM through the command line (issue 13, item 1): the default policy, the
same answers on every engine, the notes, the model file, scoring and pictures."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from engine_checks import blobs, engine_args, relative_error
from engine_checks import gmm_captured as gmm

from gmmcli.modelfile import schema

pytest.importorskip("distributed")
ENGINES = ["memory", "stream", "dask"]


@pytest.fixture(scope="module")
def holed_csv(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """2100 rows × 3 columns, a fifth of the cells empty (written exactly), an id column."""
    x = blobs(3, n_per=700)
    rng = np.random.default_rng(9)
    mask = rng.random(x.shape) < 0.2
    mask[mask.all(axis=1), 0] = False
    x[mask] = np.nan
    lines = ["id,a,b,c"] + [
        f"r{i}," + ",".join("" if np.isnan(v) else f"{v:.17g}" for v in row)
        for i, row in enumerate(x)
    ]
    path = tmp_path_factory.mktemp("holes") / "holes.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, x


@pytest.mark.parametrize("covariance", ["full", "diag", "VVE"])
def test_every_engine_fits_the_same_model(holed_csv, covariance, client, tmp_path, capsys):
    path, x = holed_csv
    fits = {}
    for engine in ENGINES:
        out = tmp_path / f"{engine}.json"
        args = ["fit", path, "-k", 3, "--covariance", covariance, "--tol", "1e-6", "-o", out]
        status, _, err = gmm(capsys, *args, *engine_args(engine, client))
        assert status == 0, err
        n_rows, n_cells = int(np.isnan(x).any(axis=1).sum()), int(np.isnan(x).sum())
        assert f"{n_rows} row(s) with {n_cells} missing cell(s) fitted by EM" in err
        fits[engine] = json.loads(out.read_text())
    memory = fits["memory"]
    assert memory["fit"]["n_missing_rows"] == n_rows
    assert memory["fit"]["n_missing_cells"] == n_cells
    assert memory["fit"]["n_samples"] == len(x) and memory["fit"]["n_dropped"] == 0
    jsonschema.Draft202012Validator(schema()).validate(memory)
    for engine in ["stream", "dask"]:
        ours = fits[engine]
        assert ours["fit"]["n_iter"] == memory["fit"]["n_iter"]
        history = ours["fit"]["log_likelihood_history"]
        assert relative_error(history, memory["fit"]["log_likelihood_history"]) < 1e-8
        for key in ["weights", "means", "covariances"]:
            assert relative_error(ours[key], memory[key]) < 1e-8
        assert ours["fit"]["n_missing_rows"] == n_rows


def test_every_engine_scores_rows_by_their_observed_cells(holed_csv, client, tmp_path, capsys):
    path, x = holed_csv
    model = tmp_path / "m.json"
    assert gmm(capsys, "fit", path, "-k", 3, "-q", "-o", model)[0] == 0
    outputs = {}
    for engine in ENGINES:
        status, out, err = gmm(
            capsys, "loglik", model, path, "--per-sample", *engine_args(engine, client)
        )
        assert status == 0, err
        outputs[engine] = np.array([float(v) for v in out.split()[1:]])
    assert outputs["memory"].shape == (len(x),) and np.isfinite(outputs["memory"]).all()
    for engine in ["stream", "dask"]:
        assert relative_error(outputs[engine], outputs["memory"]) < 1e-8
    status, out, err = gmm(capsys, "predict", model, path)
    assert status == 0
    labels = [line.split(",")[0] for line in out.splitlines()[1:]]
    assert len(labels) == len(x) and "" not in labels  # every row labelled, none empty
    assert "scored by the density of their observed cells" in err


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_notes_the_rows_it_scores_by_their_observed_cells(
    holed_csv, engine, client, tmp_path, capsys
):
    """predict and loglik (total and per row) say on stderr how many rows and cells were
    missing, and with --missing drop how many rows were not scored, whatever the engine."""
    path, x = holed_csv
    model = tmp_path / "m.json"
    assert gmm(capsys, "fit", path, "-k", 3, "-q", "-o", model)[0] == 0
    n_rows, n_cells = int(np.isnan(x).any(axis=1).sum()), int(np.isnan(x).sum())
    note = f"{path}: {n_rows} row(s) with {n_cells} missing cell(s) scored by the density"
    dropped = f"{path}: {n_rows} row(s) with missing or non-finite values were not scored"
    for command in [["predict"], ["loglik"], ["loglik", "--per-sample"]]:
        name, *extra = command
        args = [name, model, path, *extra, *engine_args(engine, client)]
        status, _, err = gmm(capsys, *args)
        assert status == 0, err
        assert err.count(note) == 1
        status, _, err = gmm(capsys, *args, "--missing", "drop")
        assert status == 0, err
        assert err.count(dropped) == 1
        assert "missing cell" not in err
        status, _, err = gmm(capsys, *args, "-q")
        assert status == 0 and err == ""


def test_complete_tables_write_no_missing_counts(tmp_path, capsys):
    path = tmp_path / "full.csv"
    path.write_text("a,b\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(40)))
    status, out, err = gmm(capsys, "fit", path, "-k", 2)
    assert status == 0
    fit = json.loads(out)["fit"]
    assert "n_missing_rows" not in fit and "n_missing_cells" not in fit
    assert "missing" not in err


def test_missing_error_and_drop_still_work(holed_csv, tmp_path, capsys):
    path, x = holed_csv
    status, out, err = gmm(capsys, "fit", path, "-k", 3, "--missing", "error")
    assert status == 2 and out == ""
    assert err.startswith(f"gmm: error: {path}: line ") and "missing value" in err
    status, out, err = gmm(capsys, "fit", path, "-k", 3, "--missing", "drop")
    assert status == 0, err
    fit = json.loads(out)["fit"]
    assert fit["n_samples"] == int((~np.isnan(x).any(axis=1)).sum())
    assert "n_missing_rows" not in fit


def test_plot_draws_a_table_with_missing_cells(holed_csv, tmp_path, capsys):
    """The pair grid (histograms of each column's values) and one pair of columns (the rows
    with both cells), each row coloured by the label of its observed cells."""
    pytest.importorskip("matplotlib")
    path, _ = holed_csv
    model = tmp_path / "m.json"
    assert gmm(capsys, "fit", path, "-k", 3, "-q", "-o", model)[0] == 0
    for name, extra in [("grid.png", []), ("pair.png", ["--x", "a", "--y", "c"])]:
        picture = tmp_path / name
        status, _, err = gmm(capsys, "plot", model, path, "-o", picture, *extra)
        assert status == 0, err
        assert picture.stat().st_size > 1000
        assert "scored by the density of their observed cells" in err


@pytest.mark.parametrize("n_parts", [3, 7])
def test_dask_partitions_match_memory(holed_csv, client, n_parts):
    """Partitions each with their own patterns of missing cells (and rows that workers may
    send to one another): the in-memory fit, iteration by iteration."""
    from gmmcli.engine.distributed import DaskSource
    from gmmcli.engine.em import EMOptions, fit, fit_source

    _, x = holed_csv
    options = EMOptions(3, covariance_type="full", tol=0.0, max_iter=8)
    reference = fit(x, options)
    parts = client.scatter(np.array_split(x, n_parts))
    ours = fit_source(DaskSource(client, parts, x.shape[1]), options)
    assert relative_error(ours.best.history, reference.best.history) < 1e-8
    for name in ["weights", "means", "covariances"]:
        a, b = getattr(ours.best.params, name), getattr(reference.best.params, name)
        assert relative_error(a, b) < 1e-8
