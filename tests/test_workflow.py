"""select, sample and --standardize: the engine functions and the commands."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from engine_checks import gmm_captured as gmm
from sklearn.metrics import adjusted_rand_score

from gmmcli import GaussianMixture, load_model
from gmmcli.cli import run
from gmmcli.engine.select import choose, parse_ks, run_grid

ROOT = Path(__file__).resolve().parent.parent
BLOBS = ROOT / "sample_data" / "blobs_2d.csv"
TYPES = ["full", "tied", "diag", "spherical"]


def separated(covariance_type: str, k: int = 3, seed: int = 0) -> np.ndarray:
    """k clusters far apart, each of the shape the covariance type assumes."""
    rng = np.random.default_rng(seed)
    shared = np.array([[1.0, 0.0], [0.6, 0.8]])
    parts = []
    for c in range(k):
        centre = np.array([12.0 * c, 9.0 * (c % 2)])
        if covariance_type == "full":
            shape = np.array([[1.0 + c, 0.0], [0.9 * (-1) ** c, 0.5]])
        elif covariance_type == "tied":
            shape = shared
        elif covariance_type == "diag":
            shape = np.diag([0.5 + c, 1.5 - 0.4 * c])
        else:
            shape = np.eye(2) * (0.5 + 0.3 * c)
        parts.append(rng.normal(size=(300, 2)) @ shape + centre)
    return np.concatenate(parts)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_select_recovers_k_for_each_covariance_type(covariance_type):
    x = separated(covariance_type)
    cells = run_grid(x, [1, 2, 3, 4, 5], [covariance_type], dict(n_init=3, seed=1), jobs=2)
    chosen = choose(cells, "bic")
    assert chosen.n_components == 3
    assert not chosen.degenerate
    bics = {c.n_components: c.bic for c in cells}
    assert bics[3] == min(bics.values())
    for cell in cells:  # BIC is −2 log L + p ln n with the documented parameter counts
        assert cell.bic == pytest.approx(-2 * cell.log_likelihood + cell.n_parameters * np.log(900))


def zero_inflated(seed: int = 0) -> np.ndarray:
    """A rounded column that is exactly 0 in 40 % of rows: a component can sit on the zeros
    with no spread, and its likelihood spikes."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0, 1, 600)
    x2 = np.where(rng.random(600) < 0.4, 0.0, np.round(rng.normal(3, 1, 600), 1))
    return np.column_stack([x1, x2])


def test_a_collapsed_spike_with_the_best_raw_bic_is_never_chosen():
    x = zero_inflated()
    cells = run_grid(x, [1, 2, 3, 4], ["full", "diag"], dict(n_init=3, seed=0), jobs=2)
    best_raw = min(cells, key=lambda c: c.bic)
    chosen = choose(cells, "bic")
    assert best_raw.degenerate  # the scenario is real: the spike wins on raw BIC ...
    assert not chosen.degenerate  # ... and is not chosen
    assert chosen.bic > best_raw.bic
    # scikit-learn on the same data picks a spike by BIC: its best covariance is ~reg_covar
    from sklearn.mixture import GaussianMixture as Sk

    sk = [Sk(k, n_init=3, random_state=0).fit(x) for k in (1, 2, 3, 4)]
    best_sk = min(sk, key=lambda m: m.bic(x))
    smallest = min(np.linalg.eigvalsh(c).min() for c in best_sk.covariances_)
    assert smallest < 1e-4


def test_grid_results_do_not_depend_on_processes():
    x = separated("diag", k=2)
    settings = dict(n_init=2, seed=3)
    serial = run_grid(x, [1, 2, 3], ["diag", "spherical"], settings, jobs=1)
    parallel = run_grid(x, [1, 2, 3], ["diag", "spherical"], settings, jobs=2)
    assert [c.bic for c in serial] == [c.bic for c in parallel]


def test_parse_ks():
    assert parse_ks("1-4") == [1, 2, 3, 4]
    assert parse_ks("2,4, 8") == [2, 4, 8]
    assert parse_ks("3") == [3]
    for bad in ["0-3", "5-2", "a", ""]:
        with pytest.raises(ValueError):
            parse_ks(bad)


def test_sample_then_fit_recovers_the_parameters():
    truth = GaussianMixture(3, n_init=3).fit(separated("full"))
    x, labels = truth.sample(60_000, seed=5)
    assert np.bincount(labels, minlength=3) / 60_000 == pytest.approx(truth.weights_, abs=0.01)
    refit = GaussianMixture(3, n_init=3, seed=2).fit(x)
    order = [int(np.argmin(np.linalg.norm(refit.means_ - m, axis=1))) for m in truth.means_]
    np.testing.assert_allclose(refit.means_[order], truth.means_, atol=0.05)
    np.testing.assert_allclose(refit.covariances_[order], truth.covariances_, rtol=0.05, atol=0.03)
    np.testing.assert_allclose(refit.weights_[order], truth.weights_, atol=0.01)
    again, _ = truth.sample(10, seed=5)
    assert np.array_equal(again, truth.sample(10, seed=5)[0])


@pytest.mark.parametrize("covariance_type", TYPES)
def test_standardized_and_raw_fits_agree(covariance_type):
    rng = np.random.default_rng(4)
    x = separated(covariance_type) * np.array([1000.0, 0.001]) + np.array([5e4, -3.0])
    raw = GaussianMixture(3, covariance_type="full", n_init=3).fit(x)
    std = GaussianMixture(3, covariance_type=covariance_type, n_init=3, standardize=True).fit(x)
    assert adjusted_rand_score(raw.predict(x), std.predict(x)) > 0.99
    # log-likelihoods are in the data's units: the Jacobian is included
    assert std.log_likelihood_ == pytest.approx(std.score(x) * len(x), rel=1e-9)
    params = std.params_
    assert params.standardized
    np.testing.assert_allclose(params.center, x.mean(axis=0))
    np.testing.assert_allclose(params.scale, x.std(axis=0))
    del rng


def test_standardize_round_trips_through_the_model_file(tmp_path, capsys):
    data = tmp_path / "wide.csv"
    frame = pd.read_csv(BLOBS)
    frame["x"] *= 1e4
    frame.to_csv(data, index=False)
    model = tmp_path / "m.json"
    assert gmm(capsys, "fit", data, "-k", "4", "--standardize", "-o", model)[0] == 0
    doc = json.loads(model.read_text())
    assert set(doc["standardize"]) == {"center", "scale"}
    loaded = load_model(str(model))
    x = frame.to_numpy()
    _, out, _ = gmm(capsys, "loglik", model, data, "--json")
    assert json.loads(out)["log_likelihood"] == pytest.approx(
        doc["fit"]["log_likelihood"], rel=1e-9
    )
    assert json.loads(out)["log_likelihood"] == pytest.approx(loaded.score(x) * len(x), rel=1e-12)
    _, out, _ = gmm(capsys, "sample", model, "-n", "2000", "--seed", "1")
    drawn = pd.read_csv(io.StringIO(out))
    assert list(drawn.columns) == ["x", "y", "component"]
    assert drawn["x"].std() == pytest.approx(frame["x"].std(), rel=0.1)  # original units


def test_select_command(tmp_path, capsys):
    table = tmp_path / "grid.csv"
    status, out, err = gmm(
        capsys,
        "select",
        BLOBS,
        "-k",
        "1-6",
        "--covariance",
        "full,diag",
        "--n-init",
        "2",
        "--table",
        table,
    )
    assert status == 0
    model = json.loads(out)
    assert model["n_components"] == 4 and model["covariance_type"] == "full"
    grid = pd.read_csv(table)
    assert len(grid) == 12 and set(grid.columns) >= {"bic", "aic", "degenerate", "converged"}
    best = grid.loc[grid["bic"].idxmin()]
    assert (best["n_components"], best["covariance_type"]) == (4, "full")
    assert "chosen: k = 4, full" in err and "BIC" in err
    assert model["fit"]["selection"]["criterion"] == "bic"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-k", "0-3"], "-k"),
        (["-k", "x"], "-k"),
        (["--covariance", "full,round"], "round"),
        (["--criterion", "hqc"], "--criterion"),
        (["-k", "1-2000"], "fewer"),
        (["--jobs", "0"], "--jobs"),
    ],
)
def test_select_bad_arguments(args, fragment, capsys):
    status, out, err = gmm(capsys, "select", BLOBS, *args)
    assert status == 2 and out == ""
    assert err.startswith("gmm: error:") and fragment in err and err.count("\n") == 1


def test_sample_command_is_reproducible_and_checks_n(tmp_path, capsys):
    model = tmp_path / "m.json"
    assert gmm(capsys, "fit", BLOBS, "-k", "4", "-q", "-o", model)[0] == 0
    _, first, _ = gmm(capsys, "sample", model, "-n", "50", "--seed", "3")
    _, second, _ = gmm(capsys, "sample", model, "-n", "50", "--seed", "3")
    _, other, _ = gmm(capsys, "sample", model, "-n", "50", "--seed", "4")
    assert first == second != other
    assert len(pd.read_csv(io.StringIO(first))) == 50
    status, _, err = gmm(capsys, "sample", model, "-n", "0")
    assert status == 2 and "-n" in err


# -- plot and describe through the command line -------------------------------------------------
@pytest.fixture(scope="module")
def blobs_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("m") / "blobs.json"
    assert run(["fit", str(BLOBS), "-k", "4", "-q", "-o", str(path)]) == 0
    return path


def png_is_drawn(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert float(image[..., :3].std()) > 0.05  # not blank


@pytest.mark.parametrize("extra", [[], ["--convergence"]])
def test_plot_command_draws_model_and_data(blobs_model, tmp_path, capsys, extra):
    out = tmp_path / "fig.png"
    status, stdout, err = gmm(capsys, "plot", blobs_model, BLOBS, "-o", out, *extra)
    assert status == 0, err
    assert stdout == ""
    png_is_drawn(out)


def test_plot_command_one_column_and_standardized(tmp_path, capsys):
    model = tmp_path / "m.json"
    one_d = ROOT / "sample_data" / "tutorial_1d.csv"
    assert gmm(capsys, "fit", one_d, "-k", "3", "--standardize", "-q", "-o", model)[0] == 0
    out = tmp_path / "hist.png"
    assert gmm(capsys, "plot", model, one_d, "-o", out)[0] == 0
    png_is_drawn(out)


def test_plot_errors_come_before_any_work(blobs_model, tmp_path, capsys, monkeypatch):
    status, _, err = gmm(capsys, "plot", blobs_model, BLOBS, "-o", tmp_path / "fig.bmp")
    assert status == 2 and "fig.bmp" in err and err.count("\n") == 1
    status, _, err = gmm(
        capsys, "plot", blobs_model, BLOBS, "-o", tmp_path / "f.png", "--x", "nope", "--y", "x"
    )
    assert status == 2 and "nope" in err
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    status, _, err = gmm(capsys, "plot", blobs_model, BLOBS, "-o", tmp_path / "f.png")
    assert status == 2 and "pip install 'gmmcli[plot]'" in err
    assert not (tmp_path / "f.png").exists()


def test_describe_command(blobs_model, capsys):
    status, out, err = gmm(capsys, "describe", blobs_model, "--json")
    assert status == 0 and err == ""
    summary = json.loads(out)
    assert summary["feature_names"] == ["x", "y"]
    assert sum(c["weight"] for c in summary["components"]) == pytest.approx(1.0)
    model = load_model(str(blobs_model))
    for c, component in enumerate(summary["components"]):
        np.testing.assert_allclose(component["std"], np.sqrt(np.diag(model.covariances_[c])))
    status, out, err = gmm(capsys, "describe", blobs_model)  # the text is data too: stdout
    assert status == 0 and err == "" and out.startswith("4 components, full covariance")


def test_describe_shows_original_units_of_a_standardized_model(tmp_path, capsys):
    model = tmp_path / "m.json"
    data = tmp_path / "big.csv"
    frame = pd.read_csv(BLOBS) * [1e3, 1.0] + [5e4, 0.0]
    frame.to_csv(data, index=False)
    assert gmm(capsys, "fit", data, "-k", "4", "--standardize", "-q", "-o", model)[0] == 0
    _, out, _ = gmm(capsys, "describe", model, "--json")
    summary = json.loads(out)
    assert summary["standardized"] is True
    weights = np.array([c["weight"] for c in summary["components"]])
    means = np.array([c["mean"] for c in summary["components"]])
    np.testing.assert_allclose(weights @ means, frame.mean().to_numpy(), rtol=1e-6)
