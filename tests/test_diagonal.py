"""The compiled pass of the diagonal models (``engine/diagonal.py``): the same statistics as
numpy's kernel to rounding (hypothesis, over shapes, weights, noise, k and d), and as a
direct implementation row by row; no bit changed by chunks or threads; the cases it leaves
to numpy's kernel; numba imported only for a large table."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from engine_checks import blobs, relative_error, start_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmmcli.engine import bycomponent, diagonal
from gmmcli.engine.chunk import Rows
from gmmcli.engine.covariance import get_strategy
from gmmcli.engine.missing import rows_of
from gmmcli.engine.mixture import GaussianMixture
from gmmcli.engine.params import MixtureParams, Noise
from gmmcli.engine.stats import em_pass, prepare

MODELS = ["diag", "spherical", "full"]
# mclust's diagonal families, stored as (k, d, d) matrices but passed as diag is, and one
# with correlations, passed as full is
FAMILIES = ["EII", "EEI", "VEI", "EVI", "EEV"]


@pytest.fixture
def compiled(monkeypatch):
    """Every pass of a diagonal model takes the compiled path, however small the table."""
    monkeypatch.setattr(diagonal, "COMPILED_FROM", 0)


def both_passes(model, rows, chunk_size, threads=1, n_worst=3):
    """The statistics of one pass by numpy's kernel and by the compiled one."""
    passes = []
    with pytest.MonkeyPatch.context() as patch:
        for threshold, taken in [(1 << 62, False), (0, True)]:
            patch.setattr(diagonal, "COMPILED_FROM", threshold)
            assert (diagonal.compiled_pass(model, rows) is not None) == taken
            passes.append(em_pass(model, rows, chunk_size, n_worst=n_worst, threads=threads))
    return passes


def params_for(x, k, model, seed, noise=False):
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    variances = (x.var(axis=0) + 0.01) * rng.uniform(0.3, 2.0, size=(k, d))
    covariances = {"diag": variances, "spherical": variances.mean(axis=1)}.get(model)
    if covariances is None:  # matrices: these variances on the diagonal
        covariances = variances[:, :, None] * np.eye(d)
        if not get_strategy(model).is_diagonal:  # and correlations
            a = rng.normal(size=(k, d, d)) * np.sqrt(variances)[:, :, None] * 0.5
            covariances = covariances + a @ a.transpose(0, 2, 1)
    weights = rng.uniform(0.5, 1.5, k)
    weights /= weights.sum()
    means = x[rng.choice(len(x), k, replace=False)] + rng.normal(scale=0.1, size=(k, d))
    box = None
    if noise:
        box = Noise(0.1, x.min(axis=0) - 1.0, x.max(axis=0) + 1.0)
        weights *= 0.9
    return MixtureParams(model, weights, means, covariances, noise=box)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 2600),
    d=st.integers(1, 12),
    k=st.integers(1, 6),
    model=st.sampled_from(MODELS),
    weighted=st.booleans(),
    noisy=st.booleans(),
    chunk_size=st.sampled_from([512, 1024, 4096]),
    offset=st.floats(-1e4, 1e4),
    layout=st.sampled_from(["C", "F", "columns of a wider array"]),
    one_block_pieces=st.booleans(),
)
def test_the_compiled_pass_gives_numpys_statistics(
    seed, n, d, k, model, weighted, noisy, chunk_size, offset, layout, one_block_pieces
):
    if get_strategy(model).pairwise:  # from these columns the full kernel has no features
        d = min(d, bycomponent.FROM_FEATURES - 1)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + offset
    x[: n // 2] += rng.normal(scale=3.0, size=d)  # two groups
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout != "C":  # as a weighted stream's block without its weights column
        x = np.concatenate([x, np.ones((n, 1))], axis=1)[:, :d]
    k = min(k, n)
    weights = rng.integers(0, 4, size=n).astype(float) if weighted else None
    if weights is not None and not weights.any():
        weights[0] = 1.0
    params = params_for(x, k, model, seed, noisy)
    shift = x.mean(axis=0)
    prepared = prepare(params, get_strategy(model), shift)
    rows = Rows(x, shift, weights=weights)
    with pytest.MonkeyPatch.context() as patch:
        if one_block_pieces:  # many pieces to a chunk
            patch.setattr(diagonal, "PIECE_BYTES", 1)
        numpy_stats, ours = both_passes(prepared, rows, chunk_size)
    scale = np.abs(numpy_stats.log_likelihood) + np.abs(numpy_stats.counts).sum()
    assert abs(ours.log_likelihood - numpy_stats.log_likelihood) <= 1e-12 * scale
    total = numpy_stats.counts.sum()
    assert np.max(np.abs(ours.counts - numpy_stats.counts)) <= 1e-12 * total
    # |Σ r z| ≤ √(Σ r · Σ r z²): the size of the terms S1 sums (S1 itself cancels to ~0)
    squares = square_moments(model, numpy_stats.second, d)
    terms = np.sqrt(numpy_stats.counts[:, None] * squares)
    assert np.all(np.abs(ours.first - numpy_stats.first) <= 1e-12 * (terms + 1e-300))
    # and |Σ r z_a z_b| ≤ √(Σ r z_a² · Σ r z_b²), the size of a pair's terms
    size = np.sqrt(square_moments(model, numpy_stats.second, d, pairs=True))
    assert np.all(np.abs(ours.second - numpy_stats.second) <= 1e-12 * size)
    if noisy:
        assert ours.noise == pytest.approx(numpy_stats.noise, rel=1e-12, abs=1e-12 * total)
    else:
        assert ours.noise is None and numpy_stats.noise is None
    assert ours.n_rows == numpy_stats.n_rows == n
    assert np.array_equal(ours.worst_rows, numpy_stats.worst_rows)
    assert np.array_equal(ours.worst_points, numpy_stats.worst_points)


def square_moments(model, second, d, pairs=False):
    """Σ r z_a² per component (k, d) — for spherical Σ r ‖z‖² (k, 1) — from S2 in the
    model's form; with ``pairs``, the products Σ r z_a² · Σ r z_b² at S2's places."""
    if not get_strategy(model).pairwise:
        return second * second if pairs else second
    a, b = np.triu_indices(d)
    squares = second[:, a == b]
    return squares[:, a] * squares[:, b] if pairs else squares


@pytest.mark.parametrize("model", MODELS + FAMILIES)
@pytest.mark.parametrize("noisy", [False, True])
def test_one_pass_against_a_direct_row_by_row_implementation(model, noisy):
    """N_k, Σ r x, Σ r x xᵀ (in the model's form) and the log-likelihood of one E-step,
    written out row by row with the normal densities through each covariance's Cholesky
    factor (and the noise's 1/V), in float64."""
    x = blobs(4, n_per=400, d=5, k=3)[:1100]
    w = np.random.default_rng(5).integers(0, 3, size=len(x)).astype(float)
    params = params_for(x, 3, model, 6, noisy)
    shift = x.mean(axis=0)
    prepared = prepare(params, get_strategy(model), shift)
    _, ours = both_passes(prepared, Rows(x, shift, weights=w), 512)
    k, d = params.means.shape
    strategy = get_strategy(model)
    matrices = strategy.to_full(params.covariances, k, d)
    log_terms = np.empty((len(x), k + noisy))
    for j in range(k):
        factor = np.linalg.cholesky(matrices[j])
        solved = np.linalg.solve(factor, (x - params.means[j]).T)
        log_det = 2.0 * np.log(np.diag(factor)).sum()
        log_terms[:, j] = np.log(params.weights[j]) - 0.5 * (
            d * np.log(2 * np.pi) + log_det + (solved**2).sum(axis=0)
        )
    if noisy:
        log_terms[:, k] = np.log(params.noise.weight) - np.sum(params.noise.log_ranges)
    top = log_terms.max(axis=1, keepdims=True)
    log_density = top[:, 0] + np.log(np.exp(log_terms - top).sum(axis=1))
    resp = np.exp(log_terms - log_density[:, None]) * w[:, None]
    counts = resp[:, :k].sum(axis=0)
    z = x - shift
    second = strategy.moments_of(z[:, :, None] * z[:, None, :])
    assert relative_error(ours.counts, counts) < 1e-10
    assert relative_error(ours.first, resp[:, :k].T @ z) < 1e-9
    assert relative_error(ours.second, resp[:, :k].T @ second) < 1e-10
    assert ours.log_likelihood == pytest.approx(np.sum(w * log_density), rel=1e-12)
    if noisy:
        assert ours.noise == pytest.approx(resp[:, k].sum(), rel=1e-10)


@pytest.mark.parametrize("model", MODELS)
def test_threads_and_chunks_change_no_bit(compiled, model):
    """The compiled pass sums per block in row order and adds the blocks in the one tree:
    any chunk size and thread count give the same model, bit for bit."""
    x = blobs(12, n_per=1700, d=6, k=3)  # 5100 rows: nine blocks and a short one
    start = start_params(x, 3, model)
    weights, means, covariances = start.weights, start.means, start.covariances
    fits = [
        GaussianMixture(
            3, covariance_type=model, tol=0, max_iter=6, weights_init=weights,
            means_init=means, covariances_init=covariances, chunk_size=chunk_size,
            threads=threads, accelerate=False,
        ).fit(x)
        for chunk_size, threads in [(None, 1), (None, 2), (512, 2), (1536, 1), (1024, 3)]
    ]  # fmt: skip
    for other in fits[1:]:
        assert np.array_equal(other.means_, fits[0].means_)
        assert np.array_equal(other.covariances_, fits[0].covariances_)
        assert np.array_equal(other.weights_, fits[0].weights_)
        assert other.log_likelihood_history_ == fits[0].log_likelihood_history_


@pytest.mark.parametrize("model", MODELS + FAMILIES)
def test_a_fit_by_the_compiled_pass_is_numpys_fit(monkeypatch, model):
    x = blobs(3, n_per=900, d=7, k=4)
    w = np.random.default_rng(1).integers(1, 4, size=len(x)).astype(float)
    start = params_for(x, 4, model, 2) if model in FAMILIES else start_params(x, 4, model)
    weights, means, covariances = start.weights, start.means, start.covariances
    fits = []
    for threshold in (1 << 62, 0):
        monkeypatch.setattr(diagonal, "COMPILED_FROM", threshold)
        fits.append(
            GaussianMixture(
                4, covariance_type=model, tol=0, max_iter=20, weights_init=weights,
                means_init=means, covariances_init=covariances, accelerate=False,
            ).fit(x, sample_weight=w)
        )  # fmt: skip
    numpy_fit, ours = fits
    assert relative_error(ours.log_likelihood_history_, numpy_fit.log_likelihood_history_) < 1e-12
    for name in ["weights_", "means_", "covariances_"]:
        assert relative_error(getattr(ours, name), getattr(numpy_fit, name)) < 1e-10


def test_the_cases_left_to_numpys_kernel(compiled):
    x = blobs(2, n_per=300, d=4, k=2)
    shift = x.mean(axis=0)
    params = params_for(x, 2, "diag", 1)
    model = prepare(params, get_strategy("diag"), shift)
    assert diagonal.compiled_pass(model, Rows(x, shift)) is not None
    holed = x.copy()
    holed[5, 1] = np.nan
    assert diagonal.compiled_pass(model, rows_of(holed, shift)) is None  # missing cells
    assert diagonal.compiled_pass(model, Rows(x, shift, np.float32)) is None
    assert (
        diagonal.compiled_pass(
            prepare(start_params(x, 2, "full"), get_strategy("full"), shift), Rows(x, shift)
        )
        is not None
    )
    tied = prepare(start_params(x, 2, "tied"), get_strategy("tied"), shift)
    assert diagonal.compiled_pass(tied, Rows(x, shift)) is None  # no compiled features
    wide = blobs(2, n_per=300, d=bycomponent.FROM_FEATURES, k=2)
    centre = wide.mean(axis=0)
    full = prepare(start_params(wide, 2, "full"), get_strategy("full"), centre)
    assert bycomponent.chosen(full.strategy, wide.shape[1], 2)
    assert diagonal.compiled_pass(full, Rows(wide, centre)) is None  # no features at all
    # against the compiled pass the by-component kernel is the faster for k ≤ d/5 only
    mid = blobs(2, n_per=300, d=16, k=4)
    centre = mid.mean(axis=0)
    four = prepare(params_for(mid, 4, "full", 3), get_strategy("full"), centre)
    assert bycomponent.chosen(four.strategy, 16, 4)
    assert not bycomponent.chosen(four.strategy, 16, 4, compiled=True)
    assert diagonal.compiled_pass(four, Rows(mid, centre)) is not None
    means = params.means + np.array([1e9, 0, 0, 0])
    far = MixtureParams("diag", params.weights, means, params.covariances)
    far_model = prepare(far, get_strategy("diag"), shift)
    assert far_model.far.size
    assert diagonal.compiled_pass(far_model, Rows(x, shift)) is None
    moved = model.with_moment_origins(model.origins + 1.0)
    assert diagonal.compiled_pass(moved, Rows(x, shift)) is None


@pytest.mark.parametrize("model", MODELS)
def test_rows_beyond_every_component_match_numpys_kernel(model):
    """A row whose densities all underflow (log density −∞ is not reached: they are
    normalised about the largest), one whose squares overflow, and a table far from 0."""
    x = blobs(7, n_per=300, d=3, k=2) + 1e6
    x[3] = 1e6 + 1e4
    x[4] = 1e6 + 1e160
    shift = x[10:].mean(axis=0)  # the data's mean but for the two rows
    params = params_for(x[10:], 2, model, 2)
    prepared = prepare(params, get_strategy(model), shift)
    numpy_stats, ours = both_passes(prepared, Rows(x, shift), 512)
    assert ours.log_likelihood == numpy_stats.log_likelihood or (
        np.isnan(ours.log_likelihood) and np.isnan(numpy_stats.log_likelihood)
    )
    assert np.array_equal(ours.worst_rows, numpy_stats.worst_rows)
    assert np.array_equal(np.isfinite(ours.second), np.isfinite(numpy_stats.second))


def test_numba_is_imported_only_for_a_large_table():
    """Start-up time: a small fit (or a large full one whose kernel goes component by
    component) never imports numba; a diag or full fit of COMPILED_FROM rows × columns ×
    components does."""
    script = """
import sys
import numpy as np
from gmmcli import GaussianMixture
from gmmcli.engine import bycomponent, diagonal
n, d, k, model = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
x = np.random.default_rng(0).normal(size=(n, d))
GaussianMixture(k, covariance_type=model, max_iter=2).fit(x)
print("numba" in sys.modules, diagonal.COMPILED_FROM)
"""
    threshold = diagonal.COMPILED_FROM
    big = -(-threshold // (8 * 2))
    wide = -(-threshold // (16 * 2))  # full at 16 columns, k = 2, goes component by component
    cases = [
        (150, 4, 3, "diag", False),
        (wide, 16, 2, "full", False),
        (big, 8, 2, "diag", True),
        (big, 8, 2, "full", True),
    ]
    for n, d, k, model, imported in cases:
        run = subprocess.run(
            [sys.executable, "-c", script, str(n), str(d), str(k), model],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert run.stdout.split() == [str(imported), str(threshold)]


@pytest.mark.parametrize("model", MODELS)
def test_a_weighted_stream_by_the_compiled_pass_is_the_memory_fit_by_numpys(monkeypatch, model):
    """The engines agree whichever kernel each pass takes: blocks of a weighted stream (the
    weight in a last column, so the rows are a strided view) through the compiled pass,
    the table in memory through numpy's kernel."""
    from engine_checks import assert_same_fit

    from gmmcli.engine.em import EMOptions, fit, fit_source
    from gmmcli.engine.sources import BlockSource

    x = blobs(8, n_per=800, d=5, k=3)
    w = np.random.default_rng(2).integers(0, 3, size=len(x)).astype(float)
    start = start_params(x, 3, model)
    options = EMOptions(3, covariance_type=model, tol=0.0, max_iter=10, accelerate=False)
    monkeypatch.setattr(diagonal, "COMPILED_FROM", 1 << 62)
    reference = fit(x, options, start, weights=w)
    monkeypatch.setattr(diagonal, "COMPILED_FROM", 0)
    table = np.column_stack([x, w])
    blocks = lambda: (table[i : i + 700] for i in range(0, len(table), 700))  # noqa: E731
    calls = []
    monkeypatch.setattr(diagonal, "_chunk_pass", counted(diagonal._chunk_pass, calls))
    ours = fit_source(BlockSource(blocks, 5, threads=2, weighted=True), options, start)
    assert_same_fit(ours, reference)
    assert len(calls) >= 10 * 4  # every block of every pass went through it


def counted(function, calls):
    """``function``, noting each call in ``calls``."""

    def wrapper(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    return wrapper


def test_the_cached_copy_is_written_only_where_chunks_ask(compiled):
    """``Rows.cached`` (the shifted transposed table) fills piece by piece as chunks first
    ask for their rows: the compiled pass reads the table itself and writes none of it,
    while numpy's kernel gets the same features from it as from rows shifted on the fly."""
    from gmmcli.engine.chunk import FILL_ROWS

    x = blobs(5, n_per=3000, d=3, k=4)  # 12,000 rows: three pieces
    shift = x.mean(axis=0)
    rows = Rows(x, shift, cache=True)
    model = prepare(params_for(x, 4, "diag", 0), get_strategy("diag"), shift)
    em_pass(model, rows, 2048)
    assert rows._unfilled.all()
    assert rows._unfilled.size == -(-len(x) // FILL_ROWS)
    plain = Rows(x, shift)
    span = slice(FILL_ROWS + 512, FILL_ROWS + 1024)
    cached = rows.chunk(span, 0).features.copy()  # features live in a reused scratch buffer
    np.testing.assert_array_equal(cached, plain.chunk(span, 0).features)
    assert rows._unfilled.tolist() == [True, False, True]
    whole = slice(0, len(x))
    cached = rows.chunk(whole, 0).features.copy()
    np.testing.assert_array_equal(cached, plain.chunk(whole, 0).features)
    assert not rows._unfilled.any()
