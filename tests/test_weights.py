"""Row weights (frequency weights): integer weights give the model of the rows repeated, from
the same start, on every engine and covariance model; weight 0 drops a row; scaling every
weight changes only n; BIC's n is Σ w; one EM step against a direct implementation; bad
weights are one line naming the line, exit 2, on every engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from engine_checks import gmm
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gmmcli.cli import run
from gmmcli.engine.em import EMOptions, fit, fit_source
from gmmcli.engine.mixture import GaussianMixture, n_parameters
from gmmcli.engine.params import MixtureParams
from gmmcli.engine.sources import BlockSource

MODELS = ["full", "diag", "spherical", "tied", "VVE", "EVI"]
TOL = 1e-10


def data(seed: int = 0, n: int = 240, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Three blobs and integer weights 0..3 (some rows weigh 0)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(3, d))
    x = centres[rng.integers(3, size=n)] + rng.normal(size=(n, d)) @ np.diag(rng.uniform(0.5, 2, d))
    weights = rng.integers(0, 4, size=n).astype(float)
    return x, weights


def close(a, b) -> float:
    """max |a − b| relative to the largest |b|."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def a_start(x: np.ndarray, k: int, covariance_type: str) -> MixtureParams:
    """A start from k-means++ on x (no EM step), to give both fits."""
    return fit(x, EMOptions(k, covariance_type=covariance_type, max_iter=0)).best.params


def assert_same(ours, reference) -> None:
    """The same iterations, history and parameters (``FitResult``s) to TOL."""
    a, b = ours.best, reference.best
    assert a.n_iter == b.n_iter
    assert close(a.history, b.history) < TOL
    assert close(a.log_likelihood, b.log_likelihood) < TOL
    for name in ["weights", "means", "covariances"]:
        assert close(getattr(a.params, name), getattr(b.params, name)) < TOL


def options(covariance_type: str, **more) -> EMOptions:
    return EMOptions(3, covariance_type=covariance_type, **more)


# -- integer weights are the rows repeated ----------------------------------------------------
@pytest.mark.parametrize("covariance_type", MODELS)
def test_integer_weights_fit_the_rows_repeated_in_memory(covariance_type):
    x, w = data()
    repeated = np.repeat(x, w.astype(int), axis=0)
    start = a_start(repeated, 3, covariance_type)
    reference = fit(repeated, options(covariance_type), start)
    ours = fit(x, options(covariance_type), start, weights=w)
    assert_same(ours, reference)
    assert ours.weight_total == repeated.shape[0] and ours.n_samples == x.shape[0]
    assert ours.best.history[-1] > ours.best.history[0]  # it did fit


def blocks_of(x: np.ndarray, w: np.ndarray, size: int):
    """A BlockSource's blocks: rows and their weight in the last column."""
    stacked = np.column_stack([x, w])
    return lambda: (stacked[i : i + size] for i in range(0, len(stacked), size))


@pytest.mark.parametrize("covariance_type", MODELS)
def test_integer_weights_fit_the_rows_repeated_on_a_block_source(covariance_type):
    x, w = data(1)
    repeated = np.repeat(x, w.astype(int), axis=0)
    start = a_start(repeated, 3, covariance_type)
    reference = fit(repeated, options(covariance_type), start)
    source = BlockSource(blocks_of(x, w, 70), x.shape[1], threads=1, weighted=True)
    assert_same(fit_source(source, options(covariance_type), start), reference)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "VVE"])
def test_integer_weights_with_missing_cells_fit_the_rows_repeated(covariance_type):
    x, w = data(2)
    rng = np.random.default_rng(5)
    x[rng.random(x.shape) < 0.12] = np.nan
    x = x[~np.isnan(x).all(axis=1)]
    w = w[: x.shape[0]]
    repeated = np.repeat(x, w.astype(int), axis=0)
    start = a_start(repeated, 3, covariance_type)
    reference = fit(repeated, options(covariance_type), start)
    assert_same(fit(x, options(covariance_type), start, weights=w), reference)
    source = BlockSource(blocks_of(x, w, 64), x.shape[1], threads=1, weighted=True)
    assert_same(fit_source(source, options(covariance_type), start), reference)


def test_weights_of_zero_are_the_rows_dropped_from_the_default_start():
    x, w = data(3)
    kept = w > 0
    for covariance_type in ["full", "EVI"]:
        reference = fit(x[kept], options(covariance_type, n_init=2, seed=4))
        ours = fit(x, options(covariance_type, n_init=2, seed=4), weights=kept.astype(float))
        assert_same(ours, reference)


def test_scaling_every_weight_changes_only_n():
    x, w = data(4)
    start = a_start(x[w > 0], 3, "full")
    one = GaussianMixture(3, **warm(start)).fit(x, sample_weight=w)
    scaled = GaussianMixture(3, **warm(start)).fit(x, sample_weight=2.5 * w)
    assert scaled.n_iter_ == one.n_iter_
    for name in ["weights_", "means_", "covariances_"]:
        assert close(getattr(scaled, name), getattr(one, name)) < 1e-9
    assert close(scaled.log_likelihood_, 2.5 * one.log_likelihood_) < 1e-9
    p = n_parameters("full", 3, x.shape[1])
    for model, weights in [(one, w), (scaled, 2.5 * w)]:
        direct_ll = float(np.sum(weights * model.score_samples(x)))
        assert close(model.log_likelihood_, direct_ll) < 1e-12
        direct_bic = -2 * direct_ll + p * np.log(weights.sum())
        assert model.summary().bic == pytest.approx(direct_bic, rel=1e-12)
        assert model.bic(x, sample_weight=weights) == pytest.approx(direct_bic, rel=1e-12)
        assert model.aic(x, sample_weight=weights) == pytest.approx(-2 * direct_ll + 2 * p)
        assert model.score(x, sample_weight=weights) == pytest.approx(
            direct_ll / weights.sum(), rel=1e-12
        )
        assert model.summary().mean_log_likelihood == pytest.approx(
            direct_ll / weights.sum(), rel=1e-12
        )


def warm(start: MixtureParams) -> dict:
    return {
        "covariance_type": start.covariance_type,
        "weights_init": start.weights,
        "means_init": start.means,
        "covariances_init": start.covariances,
    }


# -- one step against a direct weighted EM ----------------------------------------------------
def direct_em_step(
    x: np.ndarray, w: np.ndarray, params: MixtureParams, reg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One weighted EM step for full covariances, written out row by row: responsibilities
    r_ik, N_k = Σ w_i r_ik, μ_k = Σ w_i r_ik x_i / N_k, Σ_k = Σ w_i r_ik (x_i − μ_k)(x_i −
    μ_k)ᵀ / N_k + reg I, π_k = N_k / Σ w; and Σ w_i log p(x_i) of the starting parameters."""
    n, d = x.shape
    k = params.n_components
    log_joint = np.empty((n, k))
    for c in range(k):
        cov = params.covariances[c]
        inverse = np.linalg.inv(cov)
        _, log_det = np.linalg.slogdet(cov)
        for i in range(n):
            diff = x[i] - params.means[c]
            log_joint[i, c] = np.log(params.weights[c]) - 0.5 * (
                d * np.log(2 * np.pi) + log_det + diff @ inverse @ diff
            )
    top = log_joint.max(axis=1, keepdims=True)
    log_p = top[:, 0] + np.log(np.exp(log_joint - top).sum(axis=1))
    resp = np.exp(log_joint - log_p[:, None])
    counts = (w[:, None] * resp).sum(axis=0)
    means = (w[:, None] * resp).T @ x / counts[:, None]
    covariances = np.empty((k, d, d))
    for c in range(k):
        total = np.zeros((d, d))
        for i in range(n):
            diff = x[i] - means[c]
            total += w[i] * resp[i, c] * np.outer(diff, diff)
        covariances[c] = total / counts[c] + reg * np.eye(d)
    return counts / w.sum(), means, covariances, float(np.sum(w * log_p))


def test_one_weighted_em_step_matches_a_direct_implementation():
    x, _ = data(5, n=150)
    w = np.random.default_rng(6).uniform(0.0, 3.0, size=x.shape[0])  # not integers
    start = a_start(x, 3, "full")
    weights, means, covariances, ll_start = direct_em_step(x, w, start, 1e-6)
    model = GaussianMixture(3, max_iter=1, reg_covar=1e-6, reg_scale="absolute", **warm(start)).fit(
        x, sample_weight=w
    )
    assert close(model.weights_, weights) < TOL
    assert close(model.means_, means) < TOL
    assert close(model.covariances_, covariances) < TOL
    # the history's first entry is the starting parameters' mean, per unit of weight
    assert close(model.log_likelihood_history_[0], ll_start / w.sum()) < TOL


# -- a property --------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=st.lists(st.integers(0, 4), min_size=30, max_size=30),
    covariance_type=st.sampled_from(["full", "diag", "spherical", "EEV"]),
)
def test_property_integer_weights_are_repeated_rows(counts, covariance_type):
    x, _ = data(7, n=30, d=2)
    w = np.array(counts, dtype=float)
    assume(np.count_nonzero(w) >= 6)
    repeated = np.repeat(x, w.astype(int), axis=0)
    start = a_start(x[w > 0], 2, covariance_type)
    more = {"covariance_type": covariance_type, "max_iter": 8, "tol": 0.0}
    reference = fit(repeated, EMOptions(2, **more), start)
    ours = fit(x, EMOptions(2, **more), start, weights=w)
    assert close(ours.best.log_likelihood, reference.best.log_likelihood) < 1e-9
    assert close(ours.best.params.means, reference.best.params.means) < 1e-9
    assert close(ours.best.params.covariances, reference.best.params.covariances) < 1e-9


# -- the Python API refuses bad weights --------------------------------------------------------
@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, -1.0, 1.0, 1.0], r"sample_weight\[1\] is -1.0"),
        ([1.0, 1.0, np.nan, 1.0], r"sample_weight\[2\] is nan"),
        ([0.0, 0.0, 0.0, 0.0], "every sample_weight is 0"),
        ([1.0, 1.0], r"shape \(4,\)"),
    ],
)
def test_the_api_refuses_bad_weights(weights, message):
    x = np.arange(8.0).reshape(4, 2)
    with pytest.raises(ValueError, match=message):
        GaussianMixture(1).fit(x, sample_weight=weights)


# -- the command line, on every engine ---------------------------------------------------------
ENGINES = ["memory", "stream", "dask"]


def engine_flags(engine: str, request) -> list[str]:
    if engine != "dask":
        return ["--engine", engine]
    client = request.getfixturevalue("client")
    return ["--engine", "dask", "--scheduler", client.scheduler.address]


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    x, w = data(8, n=300, d=2)
    x[np.random.default_rng(9).random(x.shape) < 0.05] = np.nan  # a few missing cells
    x[np.isnan(x).all(axis=1), 0] = 1.0
    lines = ["a,w,b"] + [f"{_cell(r[0])},{int(v)},{_cell(r[1])}" for r, v in zip(x, w, strict=True)]
    (root / "weighted.csv").write_text("\n".join(lines) + "\n")
    copies = ["a,b"] + [
        f"{_cell(r[0])},{_cell(r[1])}" for r, v in zip(x, w, strict=True) for _ in range(int(v))
    ]
    (root / "repeated.csv").write_text("\n".join(copies) + "\n")
    assert run(["fit", str(root / "repeated.csv"), "-k", "3", "--max-iter", "0", "-q",
                "-o", str(root / "start.json")]) == 0  # fmt: skip
    return root


def _cell(value: float) -> str:
    return "" if np.isnan(value) else repr(float(value))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("engine", ENGINES)
def test_cli_weights_fit_the_rows_repeated_on_every_engine(
    engine, tables, tmp_path, request, capsys
):
    flags = engine_flags(engine, request)
    start = tables / "start.json"
    fits = {}
    for em in ("--no-accelerate", "--accelerate"):
        reference = tmp_path / f"repeated{em}.json"
        status, _, err = gmm("fit", tables / "repeated.csv", "--init", start, "-o", reference,
                             "-q", em, capsys=capsys)  # fmt: skip
        assert status == 0, err
        ours = tmp_path / f"weighted{em}.json"
        status, _, err = gmm("fit", tables / "weighted.csv", "--weights", "w", "--init", start,
                             "-o", ours, "-q", em, *flags, capsys=capsys)  # fmt: skip
        assert status == 0, err
        fits[em] = load(ours), load(reference)
    # Accelerated (the default), both take the same steps, but extrapolating magnifies the
    # sums' rounding (1e-16) into the last digits of parameters near a flat optimum: the
    # log-likelihoods agree to rounding, the parameters to ~1e-9.
    a, b = fits["--accelerate"]
    assert close(a["fit"]["log_likelihood"], b["fit"]["log_likelihood"]) < TOL
    for name in ["weights", "means", "covariances"]:
        assert close(a[name], b[name]) < 1e-7
    a, b = fits["--no-accelerate"]  # plain EM: the model of the rows repeated, to rounding
    assert a["fit"]["weight_total"] == b["fit"]["n_samples"]
    assert a["fit"]["n_samples"] == 300 and "weight_total" not in b["fit"]
    assert close(a["fit"]["log_likelihood"], b["fit"]["log_likelihood"]) < TOL
    assert close(a["fit"]["bic"], b["fit"]["bic"]) < TOL
    for name in ["weights", "means", "covariances"]:
        assert close(a[name], b[name]) < TOL
    # loglik: the weighted total and mean, BIC's n = Σ w
    status, out, err = gmm("loglik", ours, tables / "weighted.csv", "--weights", "w", "--json",
                           *flags, capsys=capsys)  # fmt: skip
    assert status == 0, err
    totals = json.loads(out)
    status, out, _ = gmm("loglik", ours, tables / "repeated.csv", "--json", capsys=capsys)
    plain = json.loads(out)
    assert totals["n_rows"] == 300 and totals["weight_total"] == plain["n_rows"]
    for key in ["log_likelihood", "mean_log_likelihood", "bic", "aic"]:
        assert close(totals[key], plain[key]) < TOL


def test_cli_select_with_weights_is_select_on_the_rows_repeated(tables, tmp_path, capsys):
    grids = []
    for name, more in [("weighted.csv", ["--weights", "w"]), ("repeated.csv", [])]:
        grid = tmp_path / f"{name}.grid.csv"
        status, _, err = gmm("select", tables / name, *more, "-k", "2-3", "--covariance",
                             "diag,VVV", "--init", "random-from-data", "--n-init", "1",
                             "--jobs", "1", "--table", grid, "-o", tmp_path / f"{name}.json",
                             "-q", capsys=capsys)  # fmt: skip
        assert status == 0, err
        grids.append(grid.read_text().splitlines())
    assert grids[0][0] == grids[1][0]
    weighted, repeated = grids
    assert len(weighted) == len(repeated) == 5
    # the starts differ (random rows of the table or of its copies): compare how BIC is built
    header = weighted[0].split(",")
    for line in weighted[1:]:
        cell = dict(zip(header, line.split(","), strict=True))
        n_total = load(tables / "start.json")["fit"]["n_samples"]
        p = int(cell["n_parameters"])
        ll = float(cell["log_likelihood"])
        assert float(cell["bic"]) == pytest.approx(-2 * ll + p * np.log(n_total), rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("cell", "line", "message"),
    [
        ("-2", 4, "line 4, column 'w' (2): weight is negative (-2)"),
        ("", 4, "line 4, column 'w' (2): missing weight (a weight is a number, 0 or more)"),
        ("NaN", 4, "line 4, column 'w' (2): missing weight (a weight is a number, 0 or more)"),
        ("heavy", 4, "line 4, column 'w' (2): cannot read 'heavy' as a number"),
        (None, None, "every weight (--weights w) is 0: there is nothing to fit"),
    ],
)
def test_cli_bad_weights_are_one_line_exit_2_on_every_engine(
    engine, cell, line, message, tmp_path, request, capsys
):
    rows = [f"{i}.5,1,{i}" for i in range(6)]
    if cell is None:
        rows = [f"{i}.5,0,{i}" for i in range(6)]
    else:
        rows[line - 2] = f"2.5,{cell},7"
    path = tmp_path / "bad.csv"
    path.write_text("a,w,b\n" + "\n".join(rows) + "\n")
    out_path = tmp_path / "model.json"
    status, out, err = gmm("fit", path, "--weights", "w", "-k", "1", "-o", out_path,
                           *engine_flags(engine, request), capsys=capsys)  # fmt: skip
    assert status == 2
    assert out == ""
    assert err == f"gmm: error: {path}: {message}\n"
    assert not out_path.exists()


def test_cli_weights_are_no_feature_and_missing_drop_drops_them_with_their_row(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("a,w\n1.0,1\n,5\n3.0,2\n2.5,1\n")
    status, out, err = gmm("fit", path, "--weights", "2", "-k", "1", "--missing", "drop", "-q",
                           capsys=capsys)  # fmt: skip
    assert status == 0, err
    model = json.loads(out)
    assert model["feature_names"] == ["a"]
    assert model["fit"]["weight_total"] == 4.0 and model["fit"]["n_samples"] == 3
    assert model["means"][0][0] == pytest.approx((1.0 + 2 * 3.0 + 2.5) / 4)
    status, _, err = gmm("fit", path, "--weights", "w", "--columns", "a,w", "-k", "1",
                         capsys=capsys)  # fmt: skip
    assert status == 2 and "selected as a feature and weights" in err


def test_unweighted_model_files_have_no_weight_total(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("a\n1\n2\n4\n")
    status, out, _ = gmm("fit", path, "-k", "1", "-q", capsys=capsys)
    assert status == 0 and "weight_total" not in json.loads(out)["fit"]


@pytest.mark.parametrize("engine", ["memory", "dask"])
def test_cli_weights_are_refused_on_parquet(engine, tmp_path, request, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1.0, 2.0, 4.0], "w": [1.0, 2.0, 1.0]}).to_parquet(path, index=False)
    status, out, err = gmm("fit", path, "--weights", "w", "-k", "1",
                           *engine_flags(engine, request), capsys=capsys)  # fmt: skip
    assert (status, out) == (2, "")
    assert err == f"gmm: error: {path}: --weights reads a column of CSV input, not of Parquet\n"
