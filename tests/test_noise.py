"""The noise component (mclust's): a uniform density over the data's box beside the Gaussians,
its weight fitted by EM. Checked against a slow per-row EM written here, across the three
engines, through the model file and the command line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from engine_checks import gmm, relative_error
from hypothesis import given, settings
from hypothesis import strategies as st

from gmmcli import modelfile
from gmmcli.engine.em import EMOptions, fit, fit_source
from gmmcli.engine.mixture import GaussianMixture, n_parameters, score_rows
from gmmcli.engine.noise import START_WEIGHT, with_noise
from gmmcli.engine.params import MixtureParams, Noise
from gmmcli.engine.sources import BlockSource
from gmmcli.errors import GmmError

LOG_2PI = np.log(2 * np.pi)
TYPES = ["full", "tied", "diag", "spherical", "VEV", "EII"]


def outlier_blobs(seed: int = 0, n_per: int = 150, outliers: int = 45) -> np.ndarray:
    """Three 2-D blobs and uniform outliers in a box around them, rows shuffled."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 5.0], [0.0, 8.0]])
    x = np.concatenate([rng.normal(c, 1.0, (n_per, 2)) for c in centres])
    low, high = x.min(axis=0) - 3, x.max(axis=0) + 3
    x = np.concatenate([x, rng.uniform(low, high, (outliers, 2))])
    return x[rng.permutation(len(x))]


def start_with_noise(x: np.ndarray, k: int = 3, weight: float = 0.2) -> MixtureParams:
    """A rough common start (random rows, the data's covariance), noise over the data's box."""
    rng = np.random.default_rng(4)
    cov = np.cov(x.T, bias=True)
    weights = rng.uniform(0.5, 1.5, k)
    noise = Noise(weight, np.nanmin(x, axis=0), np.nanmax(x, axis=0))
    return MixtureParams(
        "full",
        weights / weights.sum() * (1 - weight),
        x[rng.choice(len(x), k, replace=False)],
        np.stack([cov] * k),
        noise=noise,
    )


# -- the slow reference: one row at a time ----------------------------------------------------
def direct_log_joint(x: np.ndarray, params: MixtureParams) -> np.ndarray:
    """(n, k + 1) log π_k N(x_i | μ_k, Σ_k) over each row's observed cells, then the noise's
    log π_0 − Σ_{j observed} log (upper_j − lower_j)."""
    noise = params.noise
    k = params.n_components
    covariances = params.full_covariances()
    out = np.empty((x.shape[0], k + 1))
    for i, row in enumerate(x):
        seen = ~np.isnan(row)
        for c in range(k):
            diff = row[seen] - params.means[c][seen]
            cov = covariances[c][np.ix_(seen, seen)]
            _, logdet = np.linalg.slogdet(cov)
            quad = diff @ np.linalg.solve(cov, diff)
            out[i, c] = np.log(params.weights[c]) - 0.5 * (seen.sum() * LOG_2PI + logdet + quad)
        widths = noise.upper[seen] - noise.lower[seen]
        out[i, k] = np.log(noise.weight) - np.log(widths).sum()
    return out


def direct_estep(x: np.ndarray, params: MixtureParams) -> tuple[np.ndarray, np.ndarray]:
    joint = direct_log_joint(x, params)
    top = joint.max(axis=1, keepdims=True)
    log_density = top[:, 0] + np.log(np.exp(joint - top).sum(axis=1))
    return np.exp(joint - log_density[:, None]), log_density


def direct_step(x: np.ndarray, params: MixtureParams, reg: float) -> MixtureParams:
    """One EM step of a full model with noise on complete rows, row by row."""
    resp, _ = direct_estep(x, params)
    n, d = x.shape
    k = params.n_components
    counts = resp.sum(axis=0)
    means = np.empty((k, d))
    covariances = np.empty((k, d, d))
    for c in range(k):
        means[c] = sum(resp[i, c] * x[i] for i in range(n)) / counts[c]
        scatter = sum(resp[i, c] * np.outer(x[i] - means[c], x[i] - means[c]) for i in range(n))
        covariances[c] = scatter / counts[c] + reg * np.eye(d)
    noise = params.noise.with_weight(counts[k] / n)
    return MixtureParams("full", counts[:k] / n, means, covariances, noise=noise)


def direct_log_likelihood(x: np.ndarray, params: MixtureParams) -> float:
    return float(direct_estep(x, params)[1].sum())


def options(max_iter: int, **kw) -> EMOptions:
    """Absolute reg_covar (what the reference adds) and exactly ``max_iter`` steps."""
    return EMOptions(
        3, tol=0.0, max_iter=max_iter, reg_scale="absolute", reg_covar=1e-6, noise=True, **kw
    )


def assert_same_params(a: MixtureParams, b: MixtureParams, tol: float = 1e-8) -> None:
    assert relative_error(a.weights, b.weights) < tol
    assert relative_error(a.means, b.means) < tol
    assert relative_error(a.covariances, b.covariances) < tol
    assert abs(a.noise.weight - b.noise.weight) < tol * b.noise.weight
    assert np.array_equal(a.noise.lower, b.noise.lower)
    assert np.array_equal(a.noise.upper, b.noise.upper)


def test_one_em_step_matches_the_direct_implementation():
    x = outlier_blobs()
    start = start_with_noise(x)
    result = fit(x, options(1), start)
    expected = direct_step(x, start, 1e-6)
    assert_same_params(result.best.params, expected)
    n = x.shape[0]
    assert abs(result.best.history[0] - direct_log_likelihood(x, start) / n) < 1e-10
    assert abs(result.best.log_likelihood - direct_log_likelihood(x, expected)) < 1e-8 * n


def test_the_converged_fit_matches_the_direct_implementation():
    """The fit from the same start, run to the default stopping rule, is the direct EM's
    after as many steps (plain EM, step for step; test_accel checks that the accelerated
    fit reaches plain EM's fixed point)."""
    x = outlier_blobs(1, n_per=60, outliers=20)
    start = start_with_noise(x)
    opts = EMOptions(3, reg_scale="absolute", reg_covar=1e-6, noise=True, accelerate=False)
    result = fit(x, opts, start)
    assert result.best.converged and 10 < result.best.n_iter < 200
    params = start
    for _ in range(result.best.n_iter):
        params = direct_step(x, params, 1e-6)
    assert_same_params(result.best.params, params)
    assert abs(result.best.log_likelihood - direct_log_likelihood(x, params)) < 1e-8 * len(x)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_scores_match_the_direct_densities_for_every_model(covariance_type):
    """The E-step of every covariance model: log densities and the k + 1 responsibilities."""
    x = outlier_blobs(2)
    model = GaussianMixture(3, covariance_type=covariance_type, noise=True).fit(x)
    resp, log_density = score_rows(x, model.params_)
    expected_resp, expected = direct_estep(x, model.params_)
    assert resp.shape == (x.shape[0], 4)
    assert np.max(np.abs(log_density - expected)) < 1e-9
    assert np.max(np.abs(resp - expected_resp)) < 1e-9
    assert model.noise_weight_ > 0.02


def test_rows_with_missing_cells_use_the_box_of_their_observed_columns():
    """A row missing cells: its Gaussians' marginal densities and the noise's density
    1 / Π_observed (upper_j − lower_j), as the direct implementation computes them."""
    rng = np.random.default_rng(5)
    x = np.column_stack([outlier_blobs(3), rng.normal(size=495)])
    gaps = x.copy()
    gaps[rng.random(x.shape) < 0.15] = np.nan
    gaps[np.isnan(gaps).all(axis=1), 0] = x[np.isnan(gaps).all(axis=1), 0]
    model = GaussianMixture(3, noise=True).fit(gaps)
    resp, log_density = score_rows(gaps, model.params_)
    expected_resp, expected = direct_estep(gaps, model.params_)
    assert np.isnan(gaps).any(axis=1).sum() > 100
    assert np.max(np.abs(log_density - expected)) < 1e-9
    assert np.max(np.abs(resp - expected_resp)) < 1e-9
    assert np.all(np.diff(model.log_likelihood_history_) > -1e-12)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    covariance_type=st.sampled_from(TYPES),
    k=st.integers(1, 4),
)
def test_the_log_likelihood_never_decreases(seed, covariance_type, k):
    x = outlier_blobs(seed, n_per=40, outliers=15)
    result = fit(x, EMOptions(k, covariance_type=covariance_type, noise=True, seed=seed))
    history = np.array(result.best.history)
    if not result.best.reseeds:  # a re-seed restarts the climb
        assert np.all(np.diff(history) >= -1e-9 * np.abs(history[:-1]))
    assert 0 <= result.best.params.noise.weight < 1
    total = result.best.params.weights.sum() + result.best.params.noise.weight
    assert abs(total - 1) < 1e-12


@pytest.mark.parametrize("covariance_type", ["full", "diag", "VEV"])
def test_streamed_blocks_give_the_memory_fit(covariance_type):
    x = outlier_blobs(6)
    source = BlockSource(lambda: np.array_split(x, 5), 2, threads=2)
    opts = EMOptions(3, covariance_type=covariance_type, noise=True, n_init=2)
    reference = fit(x, opts)
    ours = fit_source(source, opts)
    assert_same_params(ours.best.params, reference.best.params)
    assert relative_error(ours.best.history, reference.best.history) < 1e-8


def test_dask_partitions_give_the_memory_fit(client):
    from gmmcli.engine.distributed import DaskSource

    rng = np.random.default_rng(7)
    x = outlier_blobs(7)
    x[rng.random(x.shape) < 0.1] = np.nan
    x[np.isnan(x).all(axis=1), 1] = 0.5
    for covariance_type in ["full", "spherical"]:
        opts = EMOptions(3, covariance_type=covariance_type, noise=True)
        reference = fit(x, opts)
        source = DaskSource(client, client.scatter(np.array_split(x, 4)), 2)
        ours = fit_source(source, opts)
        assert_same_params(ours.best.params, reference.best.params)
        assert relative_error(ours.best.history, reference.best.history) < 1e-8
        streamed = fit_source(BlockSource(lambda: np.array_split(x, 3), 2, threads=1), opts)
        assert_same_params(streamed.best.params, reference.best.params)


def test_the_start_and_the_box():
    x = outlier_blobs()
    result = fit(x, EMOptions(3, noise=True, max_iter=0))
    noise = result.best.params.noise
    assert noise.weight == START_WEIGHT
    assert np.array_equal(noise.lower, x.min(axis=0))
    assert np.array_equal(noise.upper, x.max(axis=0))
    assert abs(result.best.params.weights.sum() - (1 - START_WEIGHT)) < 1e-12
    plain = fit(x, EMOptions(3, max_iter=0)).best.params  # the same Gaussians, scaled
    assert np.array_equal(plain.means, result.best.params.means)
    assert np.allclose(plain.weights * (1 - START_WEIGHT), result.best.params.weights)
    again = fit(x, EMOptions(3, noise=True, seed=0))
    once = fit(x, EMOptions(3, noise=True, seed=0))
    assert again.best.history == once.best.history  # deterministic given the seed
    # a given volume: the data's box grown about its centre alike in every column
    given = fit(x, EMOptions(3, noise=True, noise_volume=5000.0, max_iter=0)).best.params.noise
    assert abs(given.volume - 5000.0) < 1e-9 * 5000
    assert np.allclose(0.5 * (given.lower + given.upper), 0.5 * (x.min(axis=0) + x.max(axis=0)))
    ratio = (given.upper - given.lower) / (x.max(axis=0) - x.min(axis=0))
    assert abs(ratio[0] - ratio[1]) < 1e-12 and given.volume_given


def test_a_constant_column_has_no_box():
    x = outlier_blobs()
    x[:, 1] = 2.0
    from gmmcli.engine.params import NumericalRangeError

    with pytest.raises(NumericalRangeError, match="constant") as error:
        fit(x, EMOptions(2, noise=True))
    assert error.value.column == 1


def test_with_noise_scales_the_gaussians_weights():
    params = MixtureParams("spherical", np.array([0.25, 0.75]), np.zeros((2, 1)), np.ones(2))
    noise = Noise(0.1, np.zeros(1), np.ones(1))
    started = with_noise(params, noise)
    assert np.allclose(started.weights, [0.225, 0.675]) and started.noise is noise


def test_parameters_are_counted_as_mclust_counts_them():
    """nMclustParams("VVV", d = 2, G = 3, noise = TRUE) is 19 (mclust 6.0.0): the weight and
    the volume (estimated from the data) are two more; a given volume is not a parameter."""
    box = Noise(0.1, np.zeros(2), np.ones(2))
    assert n_parameters("full", 3, 2) == 17
    assert n_parameters("full", 3, 2, box) == 19
    assert n_parameters("full", 3, 2, Noise(0.1, np.zeros(2), np.ones(2), True)) == 18


def test_standardized_fit_is_the_same_model_in_the_data_units():
    """EM with noise commutes with rescaling the columns (reg_covar relative to the data):
    the standardized fit's log-likelihood (with its Jacobian) is the raw fit's."""
    x = outlier_blobs(8) * np.array([1000.0, 0.01]) + np.array([5e4, -3.0])
    raw = GaussianMixture(3, noise=True).fit(x)
    scaled = GaussianMixture(3, noise=True, standardize=True).fit(x)
    assert abs(raw.log_likelihood_ - scaled.log_likelihood_) < 1e-6 * abs(raw.log_likelihood_)
    assert abs(raw.noise_weight_ - scaled.noise_weight_) < 1e-4  # each stopped near the limit
    assert abs(raw.noise_volume_ - scaled.noise_volume_) < 1e-9 * raw.noise_volume_
    assert np.max(np.abs(raw.score_samples(x) - scaled.score_samples(x))) < 1e-4
    given = GaussianMixture(3, noise=True, standardize=True, noise_volume=1e6).fit(x)
    assert abs(given.noise_volume_ - 1e6) < 1e-3
    with pytest.raises(ValueError, match="noise_volume needs noise=True"):
        GaussianMixture(3, noise_volume=1e6).fit(x)


def test_the_api_labels_noise_minus_one():
    x = outlier_blobs(9)
    model = GaussianMixture(3, noise=True).fit(x)
    proba, noise = model.predict_proba(x), model.predict_noise_proba(x)
    labels = model.predict(x)
    assert proba.shape == (len(x), 3)
    assert np.allclose(proba.sum(axis=1) + noise, 1.0)
    assert np.array_equal(labels == -1, noise > proba.max(axis=1))
    assert 20 < (labels == -1).sum() < 80
    rows, drawn = model.sample(20_000, seed=3)
    share = (drawn == -1).mean()
    assert abs(share - model.noise_weight_) < 0.015
    inside = rows[drawn == -1]
    box = model.params_.noise
    assert np.all(inside >= box.lower) and np.all(inside <= box.upper)


# -- the model file ---------------------------------------------------------------------------
def test_model_file_round_trip(tmp_path):
    x = outlier_blobs()
    model = GaussianMixture(3, noise=True, standardize=True).fit(x)
    path = tmp_path / "m.json"
    modelfile.save_model(str(path), model.params_, ["a", "b"], {})
    params, _, _ = modelfile.load_model(str(path))
    assert params.noise.weight == model.params_.noise.weight
    assert np.array_equal(params.noise.lower, model.params_.noise.lower)
    assert np.array_equal(params.noise.upper, model.params_.noise.upper)
    assert params.noise.volume_given is model.params_.noise.volume_given is False
    assert np.array_equal(params.weights, model.params_.weights)
    doc = json.loads(path.read_text())
    assert set(doc["noise"]) == {"weight", "log_volume", "volume", "volume_given", "lower", "upper"}
    reloaded = GaussianMixture.from_params(params)
    assert np.array_equal(reloaded.score_samples(x), model.score_samples(x))


def _doc_with_noise() -> dict:
    x = outlier_blobs()
    model = GaussianMixture(2, noise=True).fit(x)
    return modelfile.model_to_dict(model.params_, ["a", "b"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n: n.update(weight=1.0), "noise.weight should be in [0, 1)"),
        (lambda n: n.update(weight=0.5), "should sum to 1"),
        (lambda n: n.update(lower=n["upper"]), "noise.upper[0] should be above noise.lower[0]"),
        (lambda n: n.update(log_volume=n["log_volume"] + 1), "noise.log_volume should be"),
        (lambda n: n.update(volume=n["volume"] * 2), "noise.volume should be exp"),
        (lambda n: n.update(lower=[0.0]), "noise.lower"),
        (lambda n: n.pop("upper"), "'noise' should be an object"),
        (lambda n: n.update(volume_given="yes"), "noise.volume_given should be true or false"),
    ],
)
def test_a_bad_noise_section_is_one_error(change, message):
    doc = _doc_with_noise()
    change(doc["noise"])
    with pytest.raises(GmmError) as error:
        modelfile.model_from_dict(doc, "m.json")
    assert error.value.message.startswith("m.json: ") and message in error.value.message
    assert "\n" not in error.value.message


def test_an_old_model_file_loads_without_noise(tmp_path, capsys):
    """A model file written before the noise component (by the code of that time) loads and
    scores as before; a model without noise writes no "noise" key."""
    old = "tests/fixtures/noise/model_before_noise.json"
    params, names, _ = modelfile.load_model(old)
    assert params.noise is None and names == ["x", "y"]
    status, out, _ = gmm("predict", old, "sample_data/blobs_2d.csv", capsys=capsys)
    assert status == 0 and out.splitlines()[0] == "label,prob_0,prob_1,prob_2"
    assert "noise" not in modelfile.model_to_dict(params, names)


# -- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("noise") / "blobs.csv"
    x = outlier_blobs()
    np.savetxt(path, x, delimiter=",", header="a,b", comments="", fmt="%.17g")
    return path, x


def test_cli_fit_predict_loglik_describe_sample(csv, tmp_path, capsys):
    path, x = csv
    model = tmp_path / "m.json"
    assert gmm("fit", path, "-k", 3, "--noise", "-o", model, "-q", capsys=capsys)[0] == 0
    params, _, fit_info = modelfile.load_model(str(model))
    api = GaussianMixture(3, noise=True).fit(x)
    assert abs(params.noise.weight - api.noise_weight_) < 1e-12
    assert fit_info["n_parameters"] == 19
    status, out, _ = gmm("predict", model, path, "--uncertainty", capsys=capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "label,prob_0,prob_1,prob_2,prob_noise,uncertainty"
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    assert np.array_equal(rows[:, 0], api.predict(x))
    assert np.max(np.abs(rows[:, 4] - api.predict_noise_proba(x))) < 1e-12
    assert (rows[:, 0] == -1).sum() > 20
    status, out, _ = gmm("loglik", model, path, "--json", capsys=capsys)
    assert abs(json.loads(out)["log_likelihood"] - api.log_likelihood_) < 1e-6
    assert json.loads(out)["n_parameters"] == 19
    status, out, _ = gmm("describe", model, "--json", capsys=capsys)
    described = json.loads(out)["noise"]
    assert abs(described["weight"] - api.noise_weight_) < 1e-12
    assert abs(described["volume"] - np.prod(np.ptp(x, axis=0))) < 1e-9 * described["volume"]
    status, out, _ = gmm("describe", model, capsys=capsys)
    assert "noise component: weight" in out
    status, out, _ = gmm("sample", model, "-n", 2000, capsys=capsys)
    labels = [int(line.rsplit(",", 1)[1]) for line in out.splitlines()[1:]]
    assert status == 0 and -1 in labels and set(labels) <= {-1, 0, 1, 2}


@pytest.mark.parametrize("engine", ["stream", "dask"])
def test_cli_engines_write_the_memory_model(csv, tmp_path, capsys, engine):
    pytest.importorskip("distributed") if engine == "dask" else None
    path, _ = csv
    memory, other = tmp_path / "memory.json", tmp_path / f"{engine}.json"
    for out, e in [(memory, "memory"), (other, engine)]:
        args = ("fit", path, "-k", 3, "--noise", "--engine", e, "-o", out, "-q")
        assert gmm(*args, capsys=capsys)[0] == 0
    a, b = json.loads(memory.read_text()), json.loads(other.read_text())
    assert relative_error(a["means"], b["means"]) < 1e-8
    assert abs(a["noise"]["weight"] - b["noise"]["weight"]) < 1e-10
    memory_rows = gmm("predict", memory, path, capsys=capsys)[1]
    other_rows = gmm("predict", other, path, "--engine", engine, capsys=capsys)[1]
    assert memory_rows.splitlines()[0] == other_rows.splitlines()[0]
    assert [r.split(",")[0] for r in memory_rows.splitlines()] == [
        r.split(",")[0] for r in other_rows.splitlines()
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--noise", "--noise-volume", "0"], "--noise-volume 0.0: must be a finite number > 0"),
        (["--noise", "--noise-volume", "-3"], "--noise-volume -3.0: must be a finite number > 0"),
        (["--noise", "--noise-volume", "nan"], "--noise-volume nan: must be a finite number > 0"),
        (["--noise", "--noise-volume", "inf"], "--noise-volume inf: must be a finite number > 0"),
        (["--noise", "--noise-volume", "big"], "Invalid value for '--noise-volume'"),
        (["--noise-volume", "10"], "--noise-volume needs --noise"),
    ],
)
@pytest.mark.parametrize("command", ["fit", "select"])
def test_bad_noise_volume_is_one_line(csv, tmp_path, capsys, args, message, command):
    path, _ = csv
    out = tmp_path / "m.json"
    status, stdout, err = gmm(command, path, "-k", 2, *args, "-o", out, capsys=capsys)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("gmm: error: ")
    assert message in err
    assert stdout == "" and not out.exists()


def test_cli_constant_column_is_one_line(tmp_path, capsys):
    path = tmp_path / "flat.csv"
    path.write_text("a,b\n" + "".join(f"{i % 7},3\n" for i in range(40)))
    status, _, err = gmm("fit", path, "-k", 2, "--noise", capsys=capsys)
    assert status == 2 and err.count("\n") == 1
    assert "'b'" in err and "constant" in err


def test_select_with_and_without_noise(csv, tmp_path, capsys):
    path, _ = csv
    grid, model = tmp_path / "grid.csv", tmp_path / "m.json"
    args = ("select", path, "-k", "2-3", "--covariance", "full,diag", "--compare-noise")
    status, _, err = gmm(*args, "--table", grid, "-o", model, "--jobs", 1, capsys=capsys)
    assert status == 0
    lines = grid.read_text().splitlines()
    assert lines[0].split(",")[:3] == ["n_components", "covariance_type", "noise"]
    assert len(lines) == 1 + 2 * 2 * 2
    assert "full+noise" in err
    chosen = json.loads(model.read_text())
    assert "noise" in chosen  # outliers: the noise component wins by BIC
    cells = chosen["fit"]["selection"]["grid"]
    best = min(cells, key=lambda c: c["bic"])
    assert best["noise"] is True and best["n_components"] == 3
    status, _, err = gmm(*args, "--noise", "-o", model, capsys=capsys)
    assert status == 2 and "leave out --noise" in err
    status, _, _ = gmm("select", path, "-k", 3, "--covariance", "full", "--noise", "-o", model,
                       "-q", capsys=capsys)  # fmt: skip
    assert status == 0 and "noise" in json.loads(model.read_text())


# -- against mclust ---------------------------------------------------------------------------
MCLUST = {"full": "VVV", "diag": "VVI", "tied": "EEE", "spherical": "VII"}


@pytest.mark.parametrize("covariance_type", list(MCLUST))
def test_em_with_noise_converges_where_mclust_does(covariance_type):
    """mclust's me() with a noise component (tests/fixtures/noise/make_fixture.R): from the
    same starting z (its M-step first, noise column last) and the same box, EM reaches the
    same weights, means, covariances and log-likelihood (to ~1e-8: me() stops by its own
    rule, a few 1e-8 short in the weights); BIC as mclust's, in gmm's sign."""
    from gmmcli.engine.covariance import get_strategy
    from gmmcli.engine.missing import rows_of
    from gmmcli.engine.mixture import information_criteria
    from gmmcli.engine.stats import mstep, stats_from_responsibilities

    reference = json.loads(open("tests/fixtures/noise/mclust_noise.json").read())  # noqa: SIM115
    fitted = reference["fits"][MCLUST[covariance_type]]
    table = np.loadtxt("tests/fixtures/noise/outliers.csv", delimiter=",", skiprows=1)
    x, classes = table[:, :2], table[:, 2].astype(int) - 1
    z = np.eye(4)[classes]
    strategy = get_strategy(covariance_type)
    rows = rows_of(x, x.mean(axis=0))
    stats = stats_from_responsibilities(rows, lambda span: z[span, :3].T, strategy, 512)
    stats.noise = float(z[:, 3].sum())
    box = Noise(0.0, x.min(axis=0), x.max(axis=0))
    assert abs(box.volume - 1 / reference["vinv"]) < 1e-12 * box.volume
    start = mstep(stats, strategy, 0.0, None, box).params
    opts = EMOptions(
        3, covariance_type=covariance_type, tol=0.0, max_iter=400, reg_covar=0.0,
        reg_scale="absolute", noise=True,
    )  # fmt: skip
    result = fit(x, opts, start).best
    params = result.params
    weights = np.append(params.weights, params.noise.weight)
    assert np.max(np.abs(weights - fitted["weights"])) < 1e-7
    assert np.max(np.abs(params.means - np.array(fitted["means"]))) < 1e-6
    covariances = params.full_covariances()
    assert np.max(np.abs(covariances - np.array(fitted["covariances"]))) < 1e-6
    assert abs(result.log_likelihood - fitted["log_likelihood"]) < 1e-7
    p = n_parameters(covariance_type, 3, 2, params.noise)
    assert p == fitted["n_parameters"]
    bic = information_criteria(result.log_likelihood, p, x.shape[0])[0]
    assert abs(bic + fitted["bic"]) < 1e-6  # mclust's BIC is 2 log L − p log n


def test_a_warm_start_continues_the_models_noise(csv, tmp_path, capsys):
    """--init MODEL with a noise component starts from its weight and box (and needs
    --noise); a warm start without one gets the noise's usual start."""
    path, _ = csv
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    # plain EM, step for step (an accelerated run's cycle starts afresh after --init)
    args = ("fit", path, "-k", 3, "--noise", "--max-iter", 3, "--tol", 0, "--no-accelerate", "-q")
    assert gmm(*args, "-o", first, capsys=capsys)[0] == 0
    assert gmm(*args, "--init", first, "-o", second, capsys=capsys)[0] == 0
    six = tmp_path / "six.json"
    args6 = ("fit", path, "-k", 3, "--noise", "--max-iter", 6, "--tol", 0, "--no-accelerate", "-q",
             "-o", six)  # fmt: skip
    assert gmm(*args6, capsys=capsys)[0] == 0
    a, b = json.loads(second.read_text()), json.loads(six.read_text())
    assert relative_error(a["means"], b["means"]) < 1e-10  # 3 + 3 steps are 6 steps
    assert abs(a["noise"]["weight"] - b["noise"]["weight"]) < 1e-12
    status, _, err = gmm("fit", path, "--init", first, "-o", second, capsys=capsys)
    assert status == 2 and "add --noise" in err and err.count("\n") == 1
    plain = tmp_path / "plain.json"
    assert gmm("fit", path, "-k", 3, "-q", "-o", plain, capsys=capsys)[0] == 0
    assert gmm("fit", path, "--init", plain, "--noise", "-q", "-o", second, capsys=capsys)[0] == 0
    assert "noise" in json.loads(second.read_text())


def test_integer_weights_with_noise_are_the_rows_repeated():
    """Row weights (frequency weights) and the noise together: integer weights give the fit
    of the rows repeated, from the same start (the noise's count is weighted too)."""
    x = outlier_blobs(10, n_per=50, outliers=20)
    weights = np.random.default_rng(2).integers(0, 4, len(x))
    weights[np.argmax(x[:, 0])] = 2  # the box is the same whether weights or repeats
    weights[np.argmin(x[:, 0])] = 1
    weights[np.argmax(x[:, 1])] = 3
    weights[np.argmin(x[:, 1])] = 1
    start = start_with_noise(x[weights > 0])
    # plain EM: an extrapolation magnifies the sums' rounding (see test_weights)
    opts = dataclasses.replace(options(25), accelerate=False)
    weighted = fit(x, opts, start, weights=weights.astype(float)).best
    repeated = fit(np.repeat(x, weights, axis=0), opts, start).best
    assert_same_params(weighted.params, repeated.params, 1e-10)
    assert abs(weighted.log_likelihood - repeated.log_likelihood) < 1e-8
