"""The full kernel component by component (engine/bycomponent.py): the same statistics as
the kernel on features and as a direct implementation, for every case that goes through the
kernel (weights, noise, missing cells, far components, float32), and no bit changed by
threads or chunking."""

from __future__ import annotations

import numpy as np
import pytest
import test_engine
from engine_checks import blobs, direct_e_step, random_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmmcli import GaussianMixture
from gmmcli.engine import bycomponent, missing, stats
from gmmcli.engine.chunk import Rows
from gmmcli.engine.covariance import get_strategy
from gmmcli.engine.params import MixtureParams

# the models this kernel serves (``strategy.pairwise``); tied has its own (tests/test_tied.py)
PAIRWISE = ["full", "VEV"]


def forced(monkeypatch, on: bool) -> dict[str, int]:
    """Make every pairwise model's kernel go component by component (``on``) or on its
    features, whatever d and k; the counts of the component-by-component calls, so a test
    can show which kernel it checked."""
    calls = {"log_joint": 0, "block_moments": 0}
    for name in calls:
        real = getattr(bycomponent, name)

        def counted(*args, name=name, real=real):
            calls[name] += 1
            return real(*args)

        monkeypatch.setattr(bycomponent, name, counted)
    monkeypatch.setattr(bycomponent, "chosen", lambda strategy, d, k: on and strategy.pairwise)
    return calls


@pytest.fixture
def by_component(monkeypatch):
    calls = forced(monkeypatch, True)
    yield calls
    assert calls["log_joint"] > 0 and calls["block_moments"] > 0  # the kernel really ran


def both_ways(monkeypatch, model, make_rows, chunk_size=1024, threads=1):
    """The statistics of one pass on features and component by component."""
    out = []
    for on in (False, True):
        calls = forced(monkeypatch, on)
        out.append(stats.em_pass(model, make_rows(), chunk_size, n_worst=3, threads=threads))
        assert (calls["log_joint"] > 0) == on
    monkeypatch.undo()
    return out


def assert_close(a: np.ndarray, b: np.ndarray, tolerance: float) -> None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert np.max(np.abs(a - b), initial=0.0) <= tolerance


def assert_same_statistics(ours, reference, rtol):
    """The same sums to ``rtol`` of the size of their terms (a sum of terms of both signs,
    Σ r z about the data mean, can cancel to nothing): per component, with D_k the largest
    Σ r z_a² of S2_k, |S2_k,ab| ≤ D_k and |S1_k,a| ≤ √(N_k D_k) (Cauchy–Schwarz)."""
    k = reference.second.shape[0]
    d = reference.first.shape[1]
    a, b = np.triu_indices(d)
    diagonal = np.max(reference.second[:, a == b], axis=1)  # D_k
    total = reference.counts.sum() + (reference.noise or 0.0)
    assert_close(ours.counts, reference.counts, rtol * total)
    for j in range(k):
        assert_close(ours.first[j], reference.first[j], rtol * np.sqrt(total * diagonal[j]))
        assert_close(ours.second[j], reference.second[j], rtol * diagonal[j])
    assert ours.log_likelihood == pytest.approx(
        reference.log_likelihood, rel=rtol, abs=rtol * total
    )
    assert ours.n_rows == reference.n_rows
    assert (ours.noise is None) == (reference.noise is None)
    if reference.noise is not None:
        assert ours.noise == pytest.approx(reference.noise, rel=rtol, abs=rtol * total)


def direct_statistics(x, shift, params, weights):
    """One E-step and its sums, row by row from the covariances (no factors shared with
    the kernel): N_k, Σ w r z, the pairs a ≤ b of Σ w r z zᵀ, Σ w log p, N_0."""
    k, d = params.means.shape
    resp, log_density = direct_e_step(x, params, weights)
    z = x - shift
    a, b = np.triu_indices(d)
    second = np.stack([((resp[:, j, None] * z).T @ z)[a, b] for j in range(k)])
    noise = resp[:, k].sum() if params.noise is not None else None
    return resp[:, :k].sum(axis=0), resp[:, :k].T @ z, second, weights @ log_density, noise


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 1600),
    d=st.integers(1, 40),
    k=st.integers(1, 6),
    covariance_type=st.sampled_from(PAIRWISE),
    weighted=st.booleans(),
    noise=st.booleans(),
)
def test_the_same_statistics_as_on_features_and_as_directly(
    monkeypatch, seed, n, d, k, covariance_type, weighted, noise
):
    rng = np.random.default_rng(seed)
    x, shift, params = random_model(rng, n, d, k, covariance_type, noise)
    weights = rng.uniform(0.0, 3.0, n) if weighted else None
    model = stats.prepare(params, get_strategy(covariance_type), shift)
    size = 512 * int(rng.integers(1, 4))
    lifted, ours = both_ways(monkeypatch, model, lambda: Rows(x, shift, weights=weights), size)
    assert_same_statistics(ours, lifted, 1e-10)
    assert np.array_equal(ours.worst_rows, lifted.worst_rows)
    counts, first, second, log_likelihood, noise_count = direct_statistics(
        x, shift, params, np.ones(n) if weights is None else weights
    )
    direct = stats.SuffStats(counts, first, second, log_likelihood, n, None, None, noise_count)
    assert_same_statistics(ours, direct, 1e-10)


@pytest.mark.parametrize("covariance_type", PAIRWISE)
def test_rows_with_missing_cells_give_the_same_statistics(monkeypatch, covariance_type):
    rng = np.random.default_rng(5)
    x, shift, params = random_model(rng, 3000, 12, 3, covariance_type)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[np.all(np.isnan(x), axis=1), 0] = 1.0
    model = stats.prepare(params, get_strategy(covariance_type), shift)
    for compiled in (False, True):
        monkeypatch.setattr(missing, "COMPILED_FROM", 0 if compiled else 10**12)
        lifted, ours = both_ways(monkeypatch, model, lambda: missing.IncompleteRows(x, shift))
        assert_same_statistics(ours, lifted, 1e-10)
        assert np.array_equal(ours.worst_rows, lifted.worst_rows)
        assert_close(ours.worst_points, lifted.worst_points, 1e-10 * np.nanmax(np.abs(x)))


@pytest.mark.parametrize("covariance_type", PAIRWISE)
def test_far_components_and_other_origins_give_the_same_statistics(monkeypatch, covariance_type):
    rng = np.random.default_rng(6)
    x, shift, params = random_model(rng, 2000, 5, 3, covariance_type)
    x[:300] += 1e7  # a cluster far from the data mean, and a component on it
    params.means[0] = x[:300].mean(axis=0)
    shift = x.mean(axis=0)
    model = stats.prepare(params, get_strategy(covariance_type), shift)
    assert model.far.size >= 1
    lifted, ours = both_ways(monkeypatch, model, lambda: Rows(x, shift))
    assert_same_statistics(ours, lifted, 1e-10)
    origins = model.origins.copy()
    origins[1] += 1.0  # summed about another point
    moved = model.with_moment_origins(origins)
    lifted, ours = both_ways(monkeypatch, moved, lambda: Rows(x, shift))
    assert_same_statistics(ours, lifted, 1e-10)


@pytest.mark.parametrize("covariance_type", PAIRWISE)
def test_components_in_several_products_and_out_of_order(monkeypatch, covariance_type):
    """At d = 100 five components make one product, so seven take two; with a far one
    among them, the others are not consecutive."""
    rng = np.random.default_rng(8)
    x, shift, params = random_model(rng, 1200, 100, 7, covariance_type)
    assert bycomponent.STACK_ROWS // 100 < 7
    model = stats.prepare(params, get_strategy(covariance_type), shift)
    lifted, ours = both_ways(monkeypatch, model, lambda: Rows(x, shift))
    assert_same_statistics(ours, lifted, 1e-10)
    x[:200] += 1e7  # a far cluster, with component 3 on it
    params.means[3] = x[:200].mean(axis=0)
    shift = x[200:].mean(axis=0)  # the others' rows stay about the shift
    model = stats.prepare(params, get_strategy(covariance_type), shift)
    assert model.far.tolist() == [3]
    lifted, ours = both_ways(monkeypatch, model, lambda: Rows(x, shift))
    assert_same_statistics(ours, lifted, 1e-10)


@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("covariance_type", PAIRWISE)
def test_separated_clusters_sum_only_the_rows_that_count(monkeypatch, covariance_type, shuffled):
    """Clusters far apart in 20 columns: a row's responsibility for the other components is
    e^-700, and each component's sums take its own rows only (``NEGLIGIBLE``), with the
    statistics of the features' kernel and of a direct implementation."""
    rng = np.random.default_rng(9)
    x = blobs(9, n_per=900, d=20, k=4) * 10.0
    if not shuffled:
        x = x[np.argsort(np.linalg.norm(x - x[0], axis=1), kind="stable")]
    _, _, params = random_model(rng, len(x), 20, 4, covariance_type)
    means = x[[0, 900, 1800, 2700]]
    params = MixtureParams(params.covariance_type, params.weights, means, params.covariances)
    shift = x.mean(axis=0)
    model = stats.prepare(params, get_strategy(covariance_type), shift)
    shapes = []
    real = bycomponent._gram
    monkeypatch.setattr(bycomponent, "_gram", lambda z, r: shapes.append(r.shape) or real(z, r))
    lifted, ours = both_ways(monkeypatch, model, lambda: Rows(x, shift))
    assert_same_statistics(ours, lifted, 1e-10)
    assert any(g == 1 and s < bycomponent.BLOCK for g, s in shapes)  # the rows that count
    counts, first, second, log_likelihood, _ = direct_statistics(x, shift, params, np.ones(len(x)))
    direct = stats.SuffStats(counts, first, second, log_likelihood, len(x), None, None)
    assert_same_statistics(ours, direct, 1e-10)


@pytest.mark.parametrize("covariance_type", PAIRWISE)
def test_float32_statistics_stay_close(monkeypatch, covariance_type):
    rng = np.random.default_rng(7)
    x, shift, params = random_model(rng, 4000, 30, 4, covariance_type)
    model = stats.prepare(params, get_strategy(covariance_type), shift)
    lifted, ours = both_ways(monkeypatch, model, lambda: Rows(x, shift, np.float32))
    exact, _ = both_ways(monkeypatch, model, lambda: Rows(x, shift))
    assert_same_statistics(ours, exact, 1e-5)
    assert_same_statistics(lifted, exact, 1e-5)


# -- the engine's checks of the kernel, through this kernel ---------------------------------
@pytest.mark.parametrize("covariance_type", ["full"])
def test_chunk_size_and_threads_change_no_bit(by_component, covariance_type):
    test_engine.test_chunk_size_and_threads_change_no_bit_of_the_model(covariance_type)


def test_threads_and_cached_rows_change_no_bit(by_component):
    test_engine.test_threads_and_cached_rows_do_not_change_a_single_bit()


@pytest.mark.parametrize("covariance_type", ["full"])
def test_far_clusters_match_the_direct_reference(by_component, covariance_type):
    test_engine.test_clusters_1e9_apart_match_a_direct_reference(covariance_type)
    test_engine.test_a_cluster_found_far_away_is_summed_again_about_its_mean(covariance_type)


@pytest.mark.parametrize("covariance_type", ["full"])
def test_fits_match_scikit_learn(by_component, covariance_type):
    test_engine.test_matches_scikit_learn_from_the_same_start(covariance_type, None)


def test_wide_data_takes_it_by_default_and_threads_change_no_bit():
    """At d = 40, k = 3 the default rule goes component by component; one and two threads
    and other chunk sizes give the same model, to the bit."""
    x = blobs(4, n_per=1200, d=40, k=3)
    assert bycomponent.chosen(get_strategy("full"), 40, 3)
    fits = [
        GaussianMixture(3, tol=0.0, max_iter=4, chunk_size=size, threads=threads).fit(x)
        for size, threads in [(None, 1), (None, 2), (1024, 2), (2560, 1)]
    ]
    for other in fits[1:]:
        assert np.array_equal(other.means_, fits[0].means_)
        assert np.array_equal(other.covariances_, fits[0].covariances_)
        assert other.log_likelihood_history_ == fits[0].log_likelihood_history_
