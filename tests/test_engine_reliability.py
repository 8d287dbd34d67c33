"""Engine reliability (issue 11): components that stay identical, constant columns that depend
on the data alone, and a data summary that costs what the covariance model needs."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

from gmmcli.engine.chunk import Rows
from gmmcli.engine.covariance import get_strategy
from gmmcli.engine.em import (
    DUPLICATE_TOL,
    Duplicate,
    EMOptions,
    ReseedEvent,
    RestartResult,
    better,
    constant_columns,
    find_duplicates,
    fit,
    fit_source,
)
from gmmcli.engine.init import (
    Start,
    from_random_rows,
    kmeans_plusplus,
    summarise,
)
from gmmcli.engine.params import MixtureParams
from gmmcli.engine.sources import ArraySource, BlockSource
from gmmcli.engine.stats import em_pass, prepare

TYPES = ["full", "tied", "diag", "spherical"]
POINTS = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


def four_points(n: int = 400, seed: int = 0) -> np.ndarray:
    """n rows that take only the four corners of the unit square (two values per column)."""
    rng = np.random.default_rng(seed)
    return POINTS[rng.integers(4, size=n)]


def blobs(seed: int = 0, n_per: int = 200, d: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * d, [6.0] + [0.0] * (d - 1), [0.0] * (d - 1) + [6.0]])
    return np.concatenate([rng.normal(size=(n_per, d)) + c for c in centres])


def distinct(rows: np.ndarray) -> int:
    return len({tuple(r) for r in np.asarray(rows).tolist()})


# -- item 10: identical components -----------------------------------------------------------
@pytest.mark.parametrize("covariance_type", TYPES)
def test_four_points_and_four_components_end_on_the_four_points_and_are_reported(
    covariance_type,
):
    """The issue's case: 400 rows on four points, k = 4. It used to end as four copies of one
    component (weights 0.25, the data's mean) with nothing to report; now each component sits
    on its own point with the point's share of the rows, and the fit is reported degenerate
    (every component is a point mass)."""
    x = four_points()
    result = fit(x, EMOptions(4, covariance_type=covariance_type))
    best = result.best
    order = np.lexsort(best.params.means.T[::-1])
    np.testing.assert_allclose(best.params.means[order], POINTS, atol=1e-9)
    shares = np.array([np.all(x == p, axis=1).mean() for p in POINTS])
    np.testing.assert_allclose(best.params.weights[order], shares, atol=1e-9)
    assert best.degenerate
    assert len(best.collapsed) >= 1
    assert result.all_degenerate


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_no_component_is_ever_reseeded_onto_a_point_another_reseed_took(covariance_type):
    """Re-seeding puts every moved component on a distinct point (the old code wrapped round
    the worst rows, all one point here, and made identical components)."""
    events: list = []
    fit(four_points(), EMOptions(4, covariance_type=covariance_type), on_event=events.append)
    by_iteration: dict[int, list[np.ndarray]] = {}
    for event in events:
        if isinstance(event, ReseedEvent):
            by_iteration.setdefault(event.iteration, []).append(event.new_mean)
    assert by_iteration  # there were re-seeds
    for means in by_iteration.values():
        assert distinct(np.array(means)) == len(means)


def test_worst_rows_hold_distinct_values_lowest_density_first():
    """The statistics' worst rows: the rows of lowest density, a repeated value once (at its
    first row), checked against scipy's densities; the same whatever the chunking."""
    rng = np.random.default_rng(3)
    x = np.concatenate([POINTS[rng.integers(4, size=1500)], rng.normal(size=(40, 2)) * 0.2])
    x = x[rng.permutation(len(x))]
    shift = x.mean(axis=0)
    params = MixtureParams(
        "full",
        np.array([0.5, 0.5]),
        np.array([[0.5, 0.5], [0.0, 0.0]]),
        np.array([np.eye(2) * 2.0, np.eye(2) * 0.1]),
    )
    model = prepare(params, get_strategy("full"), shift)
    density = params.weights[0] * multivariate_normal(params.means[0], params.covariances[0]).pdf(
        x
    ) + params.weights[1] * multivariate_normal(params.means[1], params.covariances[1]).pdf(x)
    order = np.argsort(np.log(density), kind="stable")
    expected, seen = [], set()
    for i in order:
        if tuple(x[i]) not in seen:
            seen.add(tuple(x[i]))
            expected.append(int(i))
        if len(expected) == 6:
            break
    assert distinct(x[order[:6]]) < 6  # the plain 6 lowest repeat a point: the case at hand
    for chunk_size, threads in [(512, 1), (1024, 2), (4096, 1)]:
        stats = em_pass(model, Rows(x, shift), chunk_size, n_worst=6, threads=threads)
        assert stats.worst_rows.tolist() == expected
        np.testing.assert_array_equal(stats.worst_points, x[expected])


def test_kmeans_plusplus_picks_distinct_points_while_any_remain():
    x = four_points(n=600, seed=1)
    shift = x.mean(axis=0)
    for seed in range(20):
        centres = kmeans_plusplus(x, shift, 4, np.random.default_rng(seed), 256) + shift
        assert distinct(centres) == 4
        np.testing.assert_array_equal(centres[np.lexsort(centres.T[::-1])], POINTS)
    # five centres on four points: one repeat is unavoidable, the four points are all there
    centres = kmeans_plusplus(x, shift, 5, np.random.default_rng(0), 256) + shift
    assert distinct(centres) == 4


def test_kmeans_plusplus_tells_a_near_point_from_rounding_noise():
    """Three points ~1000 from the mean and three more 1e-5 from them: the expanded
    distance's rounding noise (~1e-10 at the chosen points) is as large as the true 1e-10, so
    D² sampling drew chosen points again (4 distinct of 6); the distances within the noise
    are computed directly."""
    rng = np.random.default_rng(2)
    base = rng.normal(size=(3, 2)) * 1000
    points = np.concatenate([base, base + rng.normal(size=(3, 2)) * 1e-5])
    x = points[rng.integers(6, size=600)]
    shift = x.mean(axis=0)
    for seed in range(10):
        centres = kmeans_plusplus(x, shift, 6, np.random.default_rng(seed), 128) + shift
        assert distinct(centres) == 6


@pytest.mark.parametrize("covariance_type", TYPES)
def test_random_rows_start_draws_distinct_values(covariance_type):
    """With 400 rows on 4 points, 4 random rows repeat a point ~90% of the time; the start
    draws other rows until the values differ."""
    x = four_points()
    strategy = get_strategy(covariance_type)
    summary = summarise(x, 1024, strategy.is_diagonal)
    for seed in range(20):
        request = Start(4, strategy, summary, 1e-6, np.random.default_rng(seed), 1024)
        start = from_random_rows(x, request)
        means = start.means
        np.testing.assert_array_equal(means[np.lexsort(means.T[::-1])], POINTS)
    # fewer distinct values than components: every value once, then repeats
    summary = summarise(x[:, :1], 64, True)
    request = Start(3, get_strategy("diag"), summary, 1e-6, np.random.default_rng(0), 64)
    start = from_random_rows(x[:, :1], request)
    assert sorted(set(start.means[:, 0].tolist())) == [0.0, 1.0]


def _params(covariance_type, means, covs, weights=None):
    k = len(means)
    weights = np.full(k, 1.0 / k) if weights is None else np.asarray(weights)
    return MixtureParams(covariance_type, weights, np.asarray(means, float), np.asarray(covs))


def test_find_duplicates_compares_means_and_covariances_in_the_data_scale():
    x = blobs()
    summary = summarise(x, 1024)
    sd = np.sqrt(summary.variances)
    cov = np.cov(x.T, bias=True)
    base = np.array([1.0, 2.0])
    near = base + 0.5 * DUPLICATE_TOL * sd  # within the tolerance in every column
    far = base + np.array([3 * DUPLICATE_TOL * sd[0], 0.0])
    full = get_strategy("full")
    found = find_duplicates(
        _params("full", [base, [5.0, 5.0], near], [cov, cov, cov], [0.2, 0.5, 0.3]),
        full,
        summary,
    )
    assert found == (Duplicate(2, 0, pytest.approx(0.5 * DUPLICATE_TOL, rel=1e-6)),)
    assert find_duplicates(_params("full", [base, far], [cov, cov]), full, summary) == ()
    # the same mean with another covariance is another component (e.g. a spike and a slab)
    assert find_duplicates(_params("full", [base, base], [cov, cov * 1.01]), full, summary) == ()
    # tied: one covariance for all, so equal means are enough
    found = find_duplicates(
        _params("tied", [base, [9.0, 9.0], base], cov), get_strategy("tied"), summary
    )
    assert found == (Duplicate(2, 0, 0.0),)
    # three copies: each later one names the first
    diag = np.diag(cov)
    found = find_duplicates(
        _params("diag", [base, base, base], [diag] * 3), get_strategy("diag"), summary
    )
    assert [(d.component, d.same_as) for d in found] == [(1, 0), (2, 0)]


@pytest.mark.parametrize("covariance_type", TYPES)
def test_a_symmetric_start_is_found_as_identical_components(covariance_type):
    """A start with two equal components: EM moves both alike, so they end identical; the
    result says which (a warm start, so the engine keeps the start as given)."""
    x = blobs(2)
    strategy = get_strategy(covariance_type)
    data_cov = np.cov(x.T, bias=True)
    covs = strategy.from_data_covariance(data_cov, 3)
    start = _params(covariance_type, [[0.0, 0.0], [3.0, 3.0], [3.0, 3.0]], covs)
    result = fit(x, EMOptions(3, covariance_type=covariance_type), start=start)
    best = result.best
    assert [(d.component, d.same_as) for d in best.duplicates] == [(2, 1)]
    assert best.duplicates[0].distance == 0.0
    np.testing.assert_array_equal(best.params.means[1], best.params.means[2])
    assert best.degenerate and result.all_duplicated and result.all_degenerate
    # from k-means++ the same data gives three distinct components
    fresh = fit(x, EMOptions(3, covariance_type=covariance_type)).best
    assert fresh.duplicates == () and not fresh.degenerate


def test_a_restart_without_identical_components_beats_one_with():
    params = _params("spherical", [[0.0], [1.0]], [1.0, 1.0])
    copies = RestartResult(0, params, 5, True, -10.0, [1.0], duplicates=(Duplicate(1, 0, 0.0),))
    honest = RestartResult(1, params, 5, True, -50.0, [1.0])
    assert better(honest, copies) and not better(copies, honest)
    also_copies = RestartResult(2, params, 5, True, -5.0, [1.0], duplicates=copies.duplicates)
    assert better(also_copies, copies)  # between two degenerate ones, the likelihood
    assert not better(copies, also_copies)


# -- item 17: a constant column is a property of the data ------------------------------------
@pytest.mark.parametrize("reg_scale", ["data", "absolute"])
@pytest.mark.parametrize("reg_covar", [1e-6, 1.0, 1e10])
def test_constant_columns_depend_on_the_data_not_on_reg_covar(reg_scale, reg_covar):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 2)) * np.sqrt([6.85, 0.3]) + [10.0, -2.0]
    with_constant = np.column_stack([x, np.full(300, 3.7)])
    options = EMOptions(2, reg_covar=reg_covar, reg_scale=reg_scale)
    assert fit(x, options).flat_columns == []
    assert fit(with_constant, options).flat_columns == [2]
    assert fit(with_constant, replace(options, covariance_type="diag")).flat_columns == [2]
    assert np.var(x, axis=0)[0] == pytest.approx(6.85, rel=0.2)  # the scale


def test_constant_columns_allow_rounding_noise_of_the_mean_only():
    """One value in every row is constant, however far the computed mean is off (3.7 in 300
    rows: 25 eps, a variance of 4e-28); a column that varies, however little, is not."""
    tiny = np.linspace(0, 1e-12, 300)
    x = np.column_stack([np.full(300, 3.7), np.full(300, 0.0), tiny, 3.7 + tiny * 1e3])
    for diagonal in (False, True):
        summary = summarise(x, 256, diagonal)
        assert summary.variances[0] > 0  # 3.7 repeated: its variance is rounding noise
        assert constant_columns(summary).tolist() == [True, True, False, False]
    blocks = BlockSource(lambda: iter(np.array_split(x, 3)), 4, threads=1)
    assert constant_columns(blocks.summarise(64)[1]).tolist() == [True, True, False, False]


# -- item 20: a summary of the size of the model ---------------------------------------------
@pytest.mark.parametrize("covariance_type", TYPES)
def test_summary_holds_what_the_model_needs(covariance_type):
    x = blobs(5, d=3)
    strategy = get_strategy(covariance_type)
    summary = summarise(x, 128, strategy.is_diagonal)
    np.testing.assert_allclose(summary.shift, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(summary.variances, x.var(axis=0), rtol=1e-12)
    if strategy.is_diagonal:
        assert summary.covariance is None and np.isnan(summary.min_eigenvalue)
    else:
        np.testing.assert_allclose(summary.covariance, np.cov(x.T, bias=True), rtol=1e-12)
        assert np.array_equal(summary.variances, np.diag(summary.covariance))
        assert summary.min_eigenvalue == pytest.approx(
            np.linalg.eigvalsh(np.cov(x.T, bias=True))[0]
        )


@pytest.mark.parametrize("covariance_type", TYPES)
def test_block_source_summary_and_fit_match_memory(covariance_type):
    """The block source merges per-block summaries (the diagonal alone for diag and
    spherical); with the sample holding every row its fit is the in-memory one, bit for bit."""
    x = blobs(6, d=3)
    strategy = get_strategy(covariance_type)
    source = BlockSource(lambda: iter(np.array_split(x, 7)), 3, threads=1)
    n, summary = source.summarise(256, strategy.is_diagonal)
    assert n == len(x)
    np.testing.assert_allclose(summary.variances, x.var(axis=0), rtol=1e-12)
    assert (summary.covariance is None) == strategy.is_diagonal
    options = EMOptions(3, covariance_type=covariance_type, n_init=2, reg_covar=1e-3)
    ours = fit_source(source, options)
    reference = fit(x, options)
    for mine, theirs in zip(ours.restarts, reference.restarts, strict=True):
        np.testing.assert_allclose(mine.params.means, theirs.params.means, rtol=1e-9)
        np.testing.assert_allclose(mine.params.covariances, theirs.params.covariances, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
@pytest.mark.parametrize("engine", ["memory", "blocks"])
def test_a_wide_diagonal_fit_needs_memory_in_proportion_to_d(covariance_type, engine):
    """20 rows × 4000 columns: a d × d matrix would be 128 MB (and its eigenvalues seconds);
    the whole fit stays far below one."""
    rng = np.random.default_rng(7)
    d = 4000
    x = rng.normal(size=(20, d))
    x[:10] += 3.0
    options = EMOptions(2, covariance_type=covariance_type)
    tracemalloc.start()
    try:
        if engine == "memory":
            result = fit(x, options)
        else:
            result = fit_source(BlockSource(lambda: iter([x[:7], x[7:]]), d, threads=1), options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * d * d * 8
    # the two groups of rows are found
    shifted = int(np.argmax(result.best.params.means.mean(axis=1)))
    np.testing.assert_allclose(result.best.params.weights, [0.5, 0.5], rtol=1e-12)
    np.testing.assert_allclose(result.best.params.means[shifted], x[:10].mean(axis=0), atol=1e-9)


def test_array_source_passes_the_model_s_need_to_the_summary():
    x = blobs(8)
    n, summary = ArraySource(x, 1).summarise(256, True)
    assert n == len(x) and summary.covariance is None
    n, summary = ArraySource(x, 1).summarise(256)
    assert summary.covariance is not None


def test_identical_components_are_worded_with_what_to_try():
    from gmmcli.engine.em import Duplicate
    from gmmcli.engine.mixture import IdenticalComponents
    from gmmcli.report import notice_text

    notice = IdenticalComponents(False, (Duplicate(3, 1, 1e-5),))
    assert notice_text(notice, ["x"]) == (
        "the best restart has identical components: component 3 is a copy of component 1 "
        "(same mean and covariance to 0.1% of each column's spread); the model has fewer "
        "distinct components than asked for (try fewer components or more --n-init)"
    )


def test_a_float32_fit_needs_no_float64_copy_of_the_table():
    """float32 iterations keep a float32 copy of the shifted table (n·d·4) and a chunk's
    arrays (~16 MiB of features and their products); checking that the rows are near enough
    for float32 once made x − shift and its abs(), two n × d float64 temporaries."""
    rng = np.random.default_rng(0)
    n, d, k = 200_000, 16, 4
    x = rng.normal(size=(n, d))
    start = MixtureParams(
        "full", np.full(k, 1 / k), x[:k].copy(), np.broadcast_to(np.eye(d), (k, d, d)).copy()
    )
    options = EMOptions(
        k, covariance_type="full", dtype="float32", max_iter=2, tol=0.0, accelerate=False
    )
    tracemalloc.start()
    try:
        result = fit(x, options, start)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.isfinite(result.best.log_likelihood)
    assert peak < n * d * 4 + 24 * 2**20


# -- a direction with no spread, whatever the columns' units ---------------------------------
@settings(max_examples=40, deadline=None)
@given(
    exponents=st.lists(st.floats(-5.0, 5.0), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_a_flat_direction_is_a_collapse_whatever_the_columns_units(exponents, seed):
    """A component whose covariance has no spread along some direction (two rows in three
    columns, say) has collapsed, and one that spreads as the data do has not, in any units:
    columns 1e-5 to 1e5 apart in scale change nothing (the regularisation is relative to
    each column's variance, so the check works in its units). On wine's columns (variances
    0.015 to 98,600) the check was once off, and a 3-row component of VVE was reported."""
    from gmmcli.engine.em import CollapseCheck, regularisation

    rng = np.random.default_rng(seed)
    scale = 10.0 ** np.array(exponents)
    x = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 3)) * scale
    summary = summarise(x, 128)
    strategy = get_strategy("full")
    reg = regularisation(EMOptions(2), summary)
    healthy = summary.covariance
    direction = rng.normal(size=3) / scale  # flat along some combination of the columns
    project = np.eye(3) - np.outer(direction, direction) / (direction @ direction)
    flat = project.T @ healthy @ project
    assert np.linalg.eigvalsh(flat / np.outer(scale, scale))[0] < 1e-9  # the case
    check = CollapseCheck.of(strategy, summary, reg)
    found = check(np.array([150.0, 150.0]), np.stack([healthy, flat]))
    assert [(c.component, c.reason) for c in found] == [(1, "subspace")]
    assert check(np.array([150.0, 150.0]), np.stack([healthy, healthy])) == []


def test_collinear_columns_are_the_datas_and_no_collapse():
    """A column that is another's multiple makes every component flat in that direction:
    the data's property, so the subspace check is off, in any units."""
    from gmmcli.engine.em import CollapseCheck, regularisation

    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 2))
    for scale in (np.ones(3), np.array([1e-4, 1.0, 1e4])):
        x = np.column_stack([a, 2.0 * a[:, 0]]) * scale
        summary = summarise(x, 128)
        check = CollapseCheck.of(
            get_strategy("full"), summary, regularisation(EMOptions(2), summary)
        )
        assert not check.subspace
        assert check(np.array([150.0, 150.0]), np.stack([summary.covariance] * 2)) == []
