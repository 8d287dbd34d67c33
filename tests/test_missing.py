"""Missing cells by EM (issue 13, item 1): the kernel against a slow row-by-row implementation
from the same start (numpy's kernel and the compiled one), the observed-data log-likelihood
never decreasing, sums that do not depend on chunking, far components, scoring by the
marginal density, the two kernels against each other, and complete data never leaving the
old path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from engine_checks import blobs, relative_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from gmmcli import GaussianMixture
from gmmcli.engine import missing
from gmmcli.engine.covariance import get_strategy
from gmmcli.engine.em import EMOptions, fit, fit_source
from gmmcli.engine.families import IN_EM_MAX_ITER, IN_EM_TOL
from gmmcli.engine.families import m_step as family_m_step
from gmmcli.engine.params import MixtureParams
from gmmcli.engine.sources import BlockSource

MODELS = ["full", "tied", "diag", "spherical", "VVE", "EEV", "EII", "VEI"]


# -- a slow, direct implementation: loops over rows and components ---------------------------
def reference_step(x, weights, means, covariances, model, reg_covar):
    """One EM iteration with missing cells (NaN), row by row and component by component:
    the observed-data log-likelihood of the parameters given, and the new weights, means and
    (k, d, d) covariances (``reg_covar`` added as it is)."""
    n, d = x.shape
    k = len(weights)
    log_p = np.empty((n, k))
    for i in range(n):
        o = ~np.isnan(x[i])
        for c in range(k):
            cov = covariances[c][np.ix_(o, o)]
            diff = x[i, o] - means[c, o]
            _, log_det = np.linalg.slogdet(cov)
            quadratic = diff @ np.linalg.solve(cov, diff)
            log_p[i, c] = np.log(weights[c]) - 0.5 * (
                o.sum() * np.log(2 * np.pi) + log_det + quadratic
            )
    log_density = logsumexp(log_p, axis=1)
    resp = np.exp(log_p - log_density[:, None])
    counts = resp.sum(axis=0)
    new_means = np.zeros((k, d))
    scatter = np.zeros((k, d, d))
    for c in range(k):
        filled = x.copy()
        conditional = np.zeros((n, d, d))
        for i in range(n):
            o = ~np.isnan(x[i])
            m = ~o
            if m.any():
                s_oo = covariances[c][np.ix_(o, o)]
                s_mo = covariances[c][np.ix_(m, o)]
                filled[i, m] = means[c, m] + s_mo @ np.linalg.solve(s_oo, x[i, o] - means[c, o])
                schur = covariances[c][np.ix_(m, m)] - s_mo @ np.linalg.solve(s_oo, s_mo.T)
                conditional[i][np.ix_(m, m)] = schur
        new_means[c] = resp[:, c] @ filled / counts[c]
        dev = filled - new_means[c]
        scatter[c] = (resp[:, c, None] * dev).T @ dev + np.einsum(
            "i,iab->ab", resp[:, c], conditional
        )
    eye = np.eye(d)
    if model == "full":
        cov = scatter / counts[:, None, None] + reg_covar * eye
    elif model == "tied":
        cov = np.broadcast_to(scatter.sum(axis=0) / n + reg_covar * eye, (k, d, d)).copy()
    elif model == "diag":
        cov = np.stack(
            [np.diag(np.diag(s) / c + reg_covar) for s, c in zip(scatter, counts, strict=True)]
        )
    elif model == "spherical":
        cov = np.stack(
            [eye * (np.trace(s) / c / d + reg_covar) for s, c in zip(scatter, counts, strict=True)]
        )
    else:  # the engine's Family M-step, with its jitter of 1e-12 of the pooled variance
        unconstrained = scatter / counts[:, None, None]
        pooled = np.einsum("k,kii->", counts, unconstrained) / (d * counts.sum())
        jittered = (unconstrained + 1e-12 * pooled * eye) * counts[:, None, None]
        # as inside EM: at most IN_EM_MAX_ITER sweeps from the last covariances, to IN_EM_TOL
        cov = family_m_step(
            model, jittered, counts, covariances, tol=IN_EM_TOL, max_iter=IN_EM_MAX_ITER
        )
        cov = cov + reg_covar * eye
    return log_density.sum(), counts / n, new_means, cov


def holed(x: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """x with a fraction of its cells set to NaN at random (no row left without a value)."""
    rng = np.random.default_rng(seed)
    y = x.copy()
    y[rng.random(y.shape) < fraction] = np.nan
    return y[~np.isnan(y).all(axis=1)]


def start_of(model: str, x: np.ndarray, k: int) -> tuple[MixtureParams, np.ndarray]:
    """A common start: the parameters and their (k, d, d) covariances."""
    strategy = get_strategy(model)
    d = x.shape[1]
    cov = np.cov(np.nan_to_num(x - np.nanmean(x, axis=0)).T) + np.eye(d)
    full = strategy.to_full(strategy.from_data_covariance(cov, k), k, d)
    if not strategy.shared:
        full = full * (1.0 + 0.2 * np.arange(k))[:, None, None]
        if model not in ("full", "diag", "spherical"):  # keep the model's constraints
            full = family_m_step(model, full, np.ones(k))
    covariances = {
        "tied": full[0],
        "diag": np.diagonal(full, axis1=1, axis2=2).copy(),
        "spherical": full[:, 0, 0].copy(),
    }.get(strategy.name, full)
    rows = np.linspace(0, len(x) - 1, k).astype(int)
    means = np.where(np.isnan(x[rows]), np.nanmean(x, axis=0), x[rows])
    weights = np.linspace(1.0, 2.0, k) / np.linspace(1.0, 2.0, k).sum()
    return MixtureParams(strategy.name, weights, means, covariances), full


@pytest.fixture(params=["numpy", "compiled"])
def kernels(request, monkeypatch):
    """Which kernel the full models' missing cells take: numpy's, or the compiled one
    (``missing_compiled``, numba) from the first incomplete row on; for the compiled one,
    numpy's per-group functions refuse to run, so the test shows which one it checked."""
    if request.param == "compiled":
        monkeypatch.setattr(missing, "COMPILED_FROM", 0)
        for name in ["_solve", "_general_moments"]:
            monkeypatch.setattr(missing, name, _refuse(name))
    else:
        monkeypatch.setattr(missing, "COMPILED_FROM", 10**12)
        for name in ["_compiled_marginal", "_compiled_moments"]:
            monkeypatch.setattr(missing, name, _refuse(name))
    return request.param


def _refuse(name):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{name} ran")

    return refuse


@pytest.mark.parametrize("model", MODELS)
def test_em_matches_a_row_by_row_implementation(model, kernels):
    x = holed(blobs(0, n_per=50, d=4, k=3), 0.25, seed=1)
    k, iterations = 3, 5
    start, covariances = start_of(model, x, k)
    options = EMOptions(
        k, covariance_type=model, tol=0.0, max_iter=iterations, reg_covar=1e-6,
        reg_scale="absolute", accelerate=False,  # the reference is plain EM, step by step
    )  # fmt: skip
    ours = fit(x, options, start).best
    weights, means = start.weights, start.means
    history = []
    for _ in range(iterations):
        ll, weights, means, covariances = reference_step(
            x, weights, means, covariances, model, 1e-6
        )
        history.append(ll)
    strategy = get_strategy(model)
    assert relative_error(np.array(ours.history[:iterations]) * len(x), history) < 1e-10
    assert relative_error(ours.params.weights, weights) < 1e-10
    assert relative_error(ours.params.means, means) < 1e-10
    fitted = strategy.to_full(ours.params.covariances, k, x.shape[1])
    assert np.max(np.abs(fitted - covariances)) < 1e-10 * np.max(np.abs(covariances))
    assert ours.history[-1] > ours.history[0]  # it did fit


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    fraction=st.floats(0.05, 0.5),
    model=st.sampled_from(["full", "tied", "diag", "spherical", "VVE"]),
    k=st.integers(1, 3),
)
def test_the_observed_data_log_likelihood_never_decreases(seed, fraction, model, k):
    """Between re-seeds (which move a collapsed component, and start the climb again)."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 5))
    x = holed(blobs(seed, n_per=60, d=d, k=2), fraction, seed)
    options = EMOptions(
        k, covariance_type=model, tol=0.0, max_iter=15, reg_covar=1e-9, reg_scale="absolute",
        init="random", seed=seed,
    )  # fmt: skip
    result = fit(x, options)
    history = np.array(result.best.history)
    climbs = np.diff(history)
    reseeded = [event.iteration - 1 for event in result.best.reseeds]
    climbs = np.delete(climbs, reseeded)
    assert climbs.size >= 8
    assert np.all(climbs >= -1e-9 * np.abs(history).max())


def test_sums_do_not_depend_on_chunks_or_threads(kernels):
    x = holed(blobs(2, n_per=1500, d=5, k=3), 0.2, seed=2)
    for model in ["full", "diag", "VVE"]:
        runs = [
            GaussianMixture(3, covariance_type=model, chunk_size=size, threads=threads,
                            tol=0.0, max_iter=4).fit(x)
            for size, threads in [(512, 1), (2048, 2), (65536, 1)]
        ]  # fmt: skip
        for other in runs[1:]:
            assert np.array_equal(other.means_, runs[0].means_)
            assert np.array_equal(other.covariances_, runs[0].covariances_)
            assert other.log_likelihood_history_ == runs[0].log_likelihood_history_


@pytest.mark.parametrize("model", ["full", "diag"])
def test_far_apart_clusters_fit_as_each_alone(model):
    """Two clusters 1e9 apart (each component computed about its own mean): the same as a
    one-component fit of each cluster's rows."""
    rng = np.random.default_rng(4)
    near = rng.normal(size=(400, 3)) @ np.array([[1.0, 0.3, 0], [0, 1.0, 0.2], [0, 0, 0.5]])
    far = rng.normal(size=(400, 3)) * 2.0 + 1e9
    x = holed(np.concatenate([near, far]), 0.2, seed=4)
    split = int(np.sum(np.nanmax(x, axis=1) < 1e8))
    options = EMOptions(2, covariance_type=model, tol=0.0, max_iter=8, reg_scale="absolute")
    one = EMOptions(1, covariance_type=model, tol=0.0, max_iter=8, reg_scale="absolute")
    strategy = get_strategy(model)
    d = x.shape[1]
    cov = np.eye(d) if model == "full" else np.ones(d)
    start = MixtureParams(
        model, np.array([0.5, 0.5]), np.array([[0.1] * 3, [1e9 + 0.1] * 3]), np.stack([cov] * 2)
    )
    x = x[np.argsort(np.nanmax(x, axis=1))]  # the near cluster's rows first
    both = fit(x, options, start).best.params
    for c, rows in enumerate([slice(0, split), slice(split, None)]):
        alone_start = MixtureParams(model, np.ones(1), start.means[c : c + 1], np.stack([cov]))
        alone = fit(x[rows], one, alone_start).best.params
        assert relative_error(both.means[c], alone.means[0]) < 1e-12
        ours = strategy.to_full(both.covariances, 2, d)[c]
        theirs = strategy.to_full(alone.covariances, 1, d)[0]
        assert np.max(np.abs(ours - theirs)) < 1e-7 * np.max(np.abs(theirs))


def test_scoring_uses_the_marginal_density_of_the_observed_cells(kernels):
    x = blobs(5, n_per=200, d=3, k=2)
    model = GaussianMixture(2, covariance_type="full").fit(x)
    rows = x[:6].copy()
    rows[0, 1] = rows[1, 0] = rows[2, 2] = np.nan
    rows[3, :2] = np.nan
    density = model.score_samples(rows)
    resp = model.predict_proba(rows)
    for i, row in enumerate(rows):
        o = ~np.isnan(row)
        terms = [
            np.log(w) + multivariate_normal(mu[o], cov[np.ix_(o, o)]).logpdf(row[o])
            for w, mu, cov in zip(model.weights_, model.means_, model.covariances_, strict=True)
        ]
        assert density[i] == pytest.approx(logsumexp(terms), rel=1e-12)
        expected = np.exp(terms - logsumexp(terms))
        np.testing.assert_allclose(resp[i], expected, rtol=1e-10, atol=1e-300)


def test_a_standardized_fit_counts_the_jacobian_of_observed_cells_only():
    """log-likelihoods in the data's units: the same optimum as without --standardize, and
    each row's density by the model in the data's units (the Jacobian of a missing cell's
    scaling does not count)."""
    x = holed(blobs(9, n_per=300, d=3, k=2) * [1.0, 30.0, 0.2], 0.2, seed=9)
    plain = GaussianMixture(2, tol=1e-10, max_iter=500).fit(x)
    scaled = GaussianMixture(2, tol=1e-10, max_iter=500, standardize=True).fit(x)
    assert scaled.log_likelihood_ == pytest.approx(plain.log_likelihood_, rel=1e-8)
    density = scaled.score_samples(x[:20])
    units = scaled.params_.in_data_units()
    for i, row in enumerate(x[:20]):
        o = ~np.isnan(row)
        terms = [
            np.log(w) + multivariate_normal(mu[o], cov[np.ix_(o, o)]).logpdf(row[o])
            for w, mu, cov in zip(units.weights, units.means, units.full_covariances(), strict=True)
        ]
        assert density[i] == pytest.approx(logsumexp(terms), rel=1e-10)


def test_float32_iterations_stay_close():
    """As close as on complete data (1.4e-6 relative there, 1.8e-6 with the holes)."""
    x = holed(blobs(6, n_per=500, d=4, k=3), 0.15, seed=6)
    exact = GaussianMixture(3, tol=0.0, max_iter=10).fit(x)
    fast = GaussianMixture(3, tol=0.0, max_iter=10, dtype="float32").fit(x)
    assert abs(fast.log_likelihood_ - exact.log_likelihood_) < 1e-5 * abs(exact.log_likelihood_)
    assert relative_error(fast.means_, exact.means_) < 1e-4


def test_streamed_blocks_match_memory(kernels):
    x = holed(blobs(7, n_per=700, d=3, k=3), 0.2, seed=7)
    x[:300] = np.where(np.isnan(x[:300]), 0.5, x[:300])  # a block with no missing cell
    options = EMOptions(3, tol=0.0, max_iter=6)
    reference = fit(x, options)
    for n_blocks in [1, 4, 9]:
        parts = np.array_split(x, n_blocks)
        ours = fit_source(BlockSource(lambda parts=parts: iter(parts), 3, threads=2), options)
        assert relative_error(ours.best.history, reference.best.history) < 1e-12
        for name in ["weights", "means", "covariances"]:
            a, b = getattr(ours.best.params, name), getattr(reference.best.params, name)
            assert relative_error(a, b) < 1e-10


def test_complete_data_never_leaves_the_old_path(monkeypatch):
    """Without a missing cell no function of engine/missing.py runs (so complete data give
    what they gave before, bit for bit): every engine path is checked by making it fail."""

    def refuse(*args, **kwargs):
        raise AssertionError("the missing-cell path ran on complete data")

    for name in ["marginal_log_joint", "conditional_moments", "summarise", "IncompleteRows"]:
        monkeypatch.setattr(missing, name, refuse)
    monkeypatch.setattr(missing.PairMoments, "of", classmethod(refuse))
    x = blobs(8)
    for model in ["full", "diag"]:
        fitted = GaussianMixture(3, covariance_type=model, n_init=2).fit(x)
        fitted.predict(x)
        parts = np.array_split(x, 3)
        blocks = BlockSource(lambda parts=parts: iter(parts), 3, threads=2)
        fit_source(blocks, EMOptions(3, max_iter=3))


def _fit_both(x, sample_weight=None, **options):
    """The same fit with numpy's kernel and with the compiled one."""
    fits = []
    for threshold in [10**12, 0]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(missing, "COMPILED_FROM", threshold)
            fits.append(GaussianMixture(tol=0.0, **options).fit(x, sample_weight=sample_weight))
    return fits


def test_the_compiled_kernel_takes_row_weights():
    """Integer weights through the compiled kernel: numpy's fit, and the rows repeated."""
    x = holed(blobs(12, n_per=200, d=5, k=3), 0.3, seed=12)
    weights = np.random.default_rng(12).integers(0, 4, size=len(x)).astype(float)
    numpy_fit, compiled = _fit_both(x, weights, n_components=3, max_iter=6)
    assert relative_error(compiled.means_, numpy_fit.means_) < 1e-10
    assert relative_error(compiled.covariances_, numpy_fit.covariances_) < 1e-10
    start = {"weights_init": compiled.weights_, "means_init": compiled.means_}
    start["covariances_init"] = compiled.covariances_
    repeated = np.repeat(x, weights.astype(int), axis=0)
    both = [
        _fit_both(data, w, n_components=3, max_iter=3, **start)[1]
        for data, w in [(x, weights), (repeated, None)]
    ]
    assert relative_error(both[0].means_, both[1].means_) < 1e-10
    assert relative_error(both[0].covariances_, both[1].covariances_) < 1e-10


@pytest.mark.parametrize("model", ["full", "tied", "EEV", "VEV", "VVE", "EVV"])
@pytest.mark.parametrize("k", [1, 4, 5])
def test_the_compiled_kernel_gives_numpy_s_fit(model, k):
    """Every model with full precisions, k at and below the kernel's LANES (components go
    eight at a time; padded), rows missing from one cell to all but one."""
    rng = np.random.default_rng(k)
    x = blobs(k, n_per=300, d=6, k=3)
    x[rng.random(x.shape) < rng.uniform(0.05, 0.6, size=(len(x), 1))] = np.nan
    x = x[~np.isnan(x).all(axis=1)]
    assert np.isnan(x).sum(axis=1).max() == x.shape[1] - 1
    numpy_fit, compiled = _fit_both(x, n_components=k, covariance_type=model, max_iter=8)
    # the iterated M-steps (VVE, EVV) carry rounding differences further (measured 1e-9)
    tolerance = 1e-8 if model in ("VVE", "EVV") else 1e-10
    history = np.array(compiled.log_likelihood_history_)
    assert relative_error(history, np.array(numpy_fit.log_likelihood_history_)) < 1e-12
    assert relative_error(compiled.means_, numpy_fit.means_) < tolerance
    assert relative_error(compiled.covariances_, numpy_fit.covariances_) < tolerance
    assert relative_error(compiled.score_samples(x), numpy_fit.score_samples(x)) < tolerance


def _lanes_table(d: int) -> np.ndarray:
    """d at or above the kernel's LANES (the M-step's products and sums eight columns at a
    time, then the rest), for k = 10 above it (two groups of components in the E-step, the
    M-step's pairs from several components in its windows of pairs)."""
    return holed(blobs(13, n_per=150, d=d, k=10), 0.3, seed=13)


@pytest.mark.parametrize("d", [8, 11])
def test_the_compiled_kernel_in_lanes_gives_numpy_s_fit(d):
    numpy_fit, compiled = _fit_both(_lanes_table(d), n_components=10, max_iter=6)
    history = np.array(compiled.log_likelihood_history_)
    assert relative_error(history, np.array(numpy_fit.log_likelihood_history_)) < 1e-12
    assert relative_error(compiled.means_, numpy_fit.means_) < 1e-10
    assert relative_error(compiled.covariances_, numpy_fit.covariances_) < 1e-10


@pytest.mark.parametrize("d", [8, 11])
def test_the_compiled_kernel_in_lanes_changes_no_bit_with_chunks_or_threads(d):
    """The windows of pairs, and which pairs share a vector, change with the chunks and
    threads; the sums must not."""
    x = _lanes_table(d)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(missing, "COMPILED_FROM", 0)
        runs = [
            GaussianMixture(10, chunk_size=size, threads=threads, tol=0.0, max_iter=4).fit(x)
            for size, threads in [(512, 1), (1024, 2), (65536, 1)]
        ]
    for other in runs[1:]:
        assert np.array_equal(other.means_, runs[0].means_)
        assert np.array_equal(other.covariances_, runs[0].covariances_)
        assert other.log_likelihood_history_ == runs[0].log_likelihood_history_


@pytest.mark.parametrize("d", [8, 11])
def test_the_tabled_factors_give_the_rows_own(d):
    """Rows read the factors of their first missing cells from a table made once per pass
    (``Patterns.compiled_table``) and factor only the rest, by the same operations (the
    log det of the first cells and of the rest taken apart): tabling no columns, the
    default or more gives the same fit (also for the tiny-scale case, whose pivots'
    product leaves the range), and the same bits whatever the chunks and threads."""
    tiny = holed(blobs(11, n_per=300, d=d, k=2), 0.5, seed=11) * 1e-40
    tiny_options = {"n_components": 2, "reg_scale": "absolute", "reg_covar": 1e-90}
    for x, options in [(_lanes_table(d), {"n_components": 10}), (tiny, tiny_options)]:
        runs = []
        for tabled, size, threads in [(0, None, 1), (missing.TABLED, None, 1), (5, None, 1),
                                      (missing.TABLED, 512, 2)]:  # fmt: skip
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(missing, "COMPILED_FROM", 0)
                patch.setattr(missing, "TABLED", tabled)
                fit = GaussianMixture(
                    tol=0.0, max_iter=4, chunk_size=size, threads=threads, **options
                )
                runs.append(fit.fit(x))
        for other in runs[1:3]:  # the iterations carry rounding differences (measured 1e-12)
            assert relative_error(other.means_, runs[0].means_) < 1e-10
            assert relative_error(other.covariances_, runs[0].covariances_) < 1e-10
            history = np.array(other.log_likelihood_history_)
            assert relative_error(history, np.array(runs[0].log_likelihood_history_)) < 1e-12
        assert np.array_equal(runs[3].means_, runs[1].means_)
        assert np.array_equal(runs[3].covariances_, runs[1].covariances_)
        assert runs[3].log_likelihood_history_ == runs[1].log_likelihood_history_


def test_the_compiled_kernel_keeps_tiny_scales_in_range():
    """Data in units of 1e-40: the precisions are ~1e80, so the product of a row's pivots
    would overflow float64 with four missing cells; the kernel moves it into the log in
    time."""
    x = holed(blobs(11, n_per=300, d=6, k=2), 0.5, seed=11) * 1e-40
    assert np.isnan(x).sum(axis=1).max() >= 4
    numpy_fit, compiled = _fit_both(x, n_components=2, max_iter=5, reg_scale="absolute",
                                    reg_covar=1e-90)  # fmt: skip
    assert np.isfinite(compiled.log_likelihood_)
    assert compiled.log_likelihood_ == pytest.approx(numpy_fit.log_likelihood_, rel=1e-12)
    assert relative_error(compiled.means_, numpy_fit.means_) < 1e-11


def test_numba_is_imported_only_for_a_large_table_with_missing_cells():
    """Start-up time: a complete table, or a small one with missing cells, never imports
    numba; a table with COMPILED_FROM incomplete rows does."""
    script = """
import sys
import numpy as np
from gmmcli import GaussianMixture
from gmmcli.engine import missing
rng = np.random.default_rng(0)
x = rng.normal(size=(int(sys.argv[1]), 3))
x[: int(sys.argv[2]), 0] = np.nan
GaussianMixture(2, max_iter=2).fit(x)
print("numba" in sys.modules, missing.COMPILED_FROM)
"""
    threshold = missing.COMPILED_FROM
    cases = [(3 * threshold, 0, False), (500, 100, False), (2 * threshold, threshold, True)]
    for n, holes, imported in cases:
        run = subprocess.run(
            [sys.executable, "-c", script, str(n), str(holes)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert run.stdout.split() == [str(imported), str(threshold)]
