"""The tied model's own kernel (issue 14): a chunk carries z alone, the quadratic that every
component shares is one product per row (``Model.row_terms``), and the M-step sums one pooled
row of second moments, Σ_i s_i z_i z_iᵀ with s_i the row's Gaussian responsibilities. Checked
against a direct implementation (densities from the covariance, responsibilities, then the
sums) and against the full model's kernel with the shared matrix in every component, whose
per-component second moments must add up to the pooled row."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from engine_checks import direct_e_step, random_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmmcli import GaussianMixture
from gmmcli.engine import missing, stats
from gmmcli.engine.chunk import Rows
from gmmcli.engine.covariance import get_strategy
from gmmcli.engine.params import MixtureParams

TIED = get_strategy("tied")
FULL = get_strategy("full")


def random_tied(rng, n, d, k, noise=False):
    """Rows, their shift and a tied model with random means and a well-conditioned Σ."""
    return random_model(rng, n, d, k, "tied", noise)


def as_full(params: MixtureParams) -> MixtureParams:
    """The same mixture as a full model: Σ in every component."""
    k, d = params.means.shape
    cov = TIED.to_full(params.covariances, k, d)
    return MixtureParams("full", params.weights, params.means, cov, noise=params.noise)


def direct(x, shift, params, weights):
    """One E-step and the tied model's sums, row by row from Σ (nothing shared with the
    kernel): N_k, Σ w r z, the pairs a ≤ b of Σ_i w_i s_i z_i z_iᵀ (s_i = Σ_k r_ik, the
    Gaussians' share), Σ w log p, N_0."""
    k, d = params.means.shape
    resp, log_density = direct_e_step(x, params, weights)
    z = x - shift
    s = resp[:, :k].sum(axis=1)
    a, b = np.triu_indices(d)
    second = ((s[:, None] * z).T @ z)[a, b][None]
    noise = resp[:, k].sum() if params.noise is not None else None
    return resp[:, :k].sum(axis=0), resp[:, :k].T @ z, second, weights @ log_density, noise


def assert_same(ours, reference, rtol):
    """The same sums to ``rtol`` of the size of their terms: |S2_ab| ≤ D (the largest
    diagonal entry of S2), |S1_k,a| ≤ √(n D)."""
    d = reference.first.shape[1]
    a, b = np.triu_indices(d)
    scale = np.max(reference.second[:, a == b])
    total = reference.counts.sum() + (reference.noise or 0.0)
    assert ours.second.shape == reference.second.shape == (1, d * (d + 1) // 2)
    np.testing.assert_allclose(ours.counts, reference.counts, rtol=0, atol=rtol * total)
    np.testing.assert_allclose(
        ours.first, reference.first, rtol=0, atol=rtol * np.sqrt(total * scale)
    )
    np.testing.assert_allclose(ours.second, reference.second, rtol=0, atol=rtol * scale)
    assert ours.log_likelihood == pytest.approx(
        reference.log_likelihood, rel=rtol, abs=rtol * total
    )
    assert (ours.noise is None) == (reference.noise is None)
    if reference.noise is not None:
        assert ours.noise == pytest.approx(reference.noise, rel=rtol, abs=rtol * total)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 2500),
    d=st.integers(1, 24),
    k=st.integers(1, 9),
    weighted=st.booleans(),
    noise=st.booleans(),
    chunk_blocks=st.integers(1, 3),
)
def test_pooled_statistics_match_a_direct_computation(seed, n, d, k, weighted, noise, chunk_blocks):
    rng = np.random.default_rng(seed)
    x, shift, params = random_tied(rng, n, d, k, noise)
    weights = rng.uniform(0.0, 3.0, n) if weighted else None
    model = stats.prepare(params, TIED, shift)
    ours = stats.em_pass(model, Rows(x, shift, weights=weights), 512 * chunk_blocks, n_worst=3)
    counts, first, second, log_likelihood, noise_count = direct(
        x, shift, params, np.ones(n) if weights is None else weights
    )
    reference = stats.SuffStats(counts, first, second, log_likelihood, n, None, None, noise_count)
    assert_same(ours, reference, 1e-10)


def full_and_tied(params, shift, make_rows, chunk_size=1024, origins=None):
    """One pass of the tied model and of the same mixture as a full model."""
    out = []
    for p, strategy in ((params, TIED), (as_full(params), FULL)):
        model = stats.prepare(p, strategy, shift)
        if origins is not None:
            model = model.with_moment_origins(origins)
        out.append(stats.em_pass(model, make_rows(), chunk_size, n_worst=3))
    return out


def assert_pooled_from_full(tied, full, rtol):
    """The tied statistics are the full kernel's, its second moments summed over components."""
    pooled = stats.SuffStats(
        full.counts,
        full.first,
        full.second.sum(axis=0, keepdims=True),
        full.log_likelihood,
        full.n_rows,
        None,
        None,
        full.noise,
    )
    assert_same(tied, pooled, rtol)
    assert np.array_equal(tied.worst_rows, full.worst_rows)


@pytest.mark.parametrize("d, k", [(2, 4), (16, 8), (40, 3), (64, 6)])
def test_the_full_kernels_sums_over_components(d, k):
    """At d = 40 and 64 the full model goes component by component (``bycomponent``): the
    tied statistics match both full kernels."""
    rng = np.random.default_rng(d * k)
    x, shift, params = random_tied(rng, 3000, d, k, noise=True)
    tied, full = full_and_tied(params, shift, lambda: Rows(x, shift))
    assert_pooled_from_full(tied, full, 1e-10)


@pytest.mark.parametrize("compiled", [False, True])
def test_rows_with_missing_cells_pool_their_conditional_moments(monkeypatch, compiled):
    rng = np.random.default_rng(3)
    x, shift, params = random_tied(rng, 3000, 7, 4, noise=True)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[np.all(np.isnan(x), axis=1), 0] = 1.0
    monkeypatch.setattr(missing, "COMPILED_FROM", 0 if compiled else 10**12)
    tied, full = full_and_tied(params, shift, lambda: missing.IncompleteRows(x, shift))
    assert_pooled_from_full(tied, full, 1e-10)


@pytest.mark.parametrize("incomplete", [False, True])
def test_far_components_and_other_origins(incomplete):
    """A component 1e7 away is summed about its own mean, another about a moved point: the
    pooled row adds each one's second moments about its own origin."""
    rng = np.random.default_rng(6)
    x, _, params = random_tied(rng, 2000, 5, 3)
    x[:300] += 1e7
    if incomplete:
        x[rng.random(x.shape) < 0.1] = np.nan
        x[np.all(np.isnan(x), axis=1), 0] = 1.0
    means = params.means.copy()
    means[0] = np.nanmean(x[:300], axis=0)
    params = MixtureParams("tied", params.weights, means, params.covariances)
    shift = np.nanmean(x[300:], axis=0)  # the other components stay about the shift

    def make_rows():
        return missing.IncompleteRows(x, shift) if incomplete else Rows(x, shift)

    model = stats.prepare(params, TIED, shift)
    assert model.far.tolist() == [0]
    tied, full = full_and_tied(params, shift, make_rows)
    assert_pooled_from_full(tied, full, 1e-10)
    origins = model.origins.copy()
    origins[1] += 1.0
    tied, full = full_and_tied(params, shift, make_rows, origins=origins)
    assert_pooled_from_full(tied, full, 1e-10)


def test_float32_stays_close():
    rng = np.random.default_rng(11)
    x, shift, params = random_tied(rng, 5000, 12, 5)
    tied, full = full_and_tied(params, shift, lambda: Rows(x, shift, np.float32))
    exact, _ = full_and_tied(params, shift, lambda: Rows(x, shift))
    assert_pooled_from_full(tied, full, 1e-5)
    assert_same(tied, exact, 1e-5)


@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_chunks_threads_and_kept_grams_change_no_bit_and_the_sum_pickles(noise, weighted):
    """Without noise the pooled row is the rows' own Gram, which rows held in memory keep
    for the later passes: those passes, and passes of another model, give the same bits."""
    rng = np.random.default_rng(12)
    x, shift, params = random_tied(rng, 6000, 9, 5, noise=noise)
    weights = rng.uniform(0.0, 2.0, len(x)) if weighted else None
    model = stats.prepare(params, TIED, shift)
    kept = Rows(x, shift, cache=True, weights=weights)
    runs = [
        stats.em_pass(model, rows, size, n_worst=3, threads=threads)
        for size, threads, rows in [
            (512, 1, Rows(x, shift, weights=weights)),
            (1536, 2, kept),
            (1536, 1, kept),
            (8192, 1, Rows(x, shift, cache=True, weights=weights)),
        ]
    ]
    assert (len(kept.grams) > 0) != noise
    for other in runs[1:]:
        assert np.array_equal(other.first, runs[0].first)
        assert np.array_equal(other.second, runs[0].second)
        assert other.log_likelihood == runs[0].log_likelihood
    again = pickle.loads(pickle.dumps(runs[0]))
    assert np.array_equal((again + runs[0]).second, 2 * runs[0].second)
    means = params.means + 0.5  # another model: the kept Grams are the rows', not its
    moved = MixtureParams("tied", params.weights, means, params.covariances, noise=params.noise)
    other = stats.prepare(moved, TIED, shift)
    fresh = stats.em_pass(other, Rows(x, shift, weights=weights), 1536, n_worst=3)
    again = stats.em_pass(other, kept, 1536, n_worst=3)
    assert np.array_equal(again.second, fresh.second)
    assert np.array_equal(again.first, fresh.first)


@pytest.mark.parametrize("accelerate", [False, True])
def test_a_fit_equals_the_full_models_m_step_pooled(accelerate):
    """A whole tied fit against its definition: from the tied fit's parameters, one pass
    of the full kernel (Σ in every component) and the tied M-step of its summed second
    moments give the same parameters again (a fixed point of EM), to rounding."""
    rng = np.random.default_rng(13)
    blobs = [rng.normal(size=(800, 4)) @ rng.normal(size=(4, 4)) + 4 * i for i in range(3)]
    x = np.concatenate(blobs)
    fit = GaussianMixture(
        3, covariance_type="tied", tol=0.0, max_iter=400, reg_scale="absolute",
        accelerate=accelerate,
    ).fit(x)  # fmt: skip
    params = MixtureParams("tied", fit.weights_, fit.means_, fit.covariances_)
    shift = x.mean(axis=0)
    full = stats.em_pass(stats.prepare(as_full(params), FULL, shift), Rows(x, shift), 1024)
    full.second = full.second.sum(axis=0, keepdims=True)
    step = stats.mstep(full, TIED, fit.reg_covar)
    np.testing.assert_allclose(step.params.means, fit.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(step.params.covariances, fit.covariances_, rtol=1e-7, atol=1e-9)


def test_given_responsibilities_need_not_sum_to_one():
    """A start's responsibilities (a one-hot partition with its noise column left out, or
    any others) are summed over the components for the pooled row, not taken to sum to 1:
    the full kernel's per-component sums, added up."""
    rng = np.random.default_rng(14)
    x, shift, _ = random_tied(rng, 1500, 4, 3)
    drawn = rng.random((3, len(x)))
    drawn[:, :200] = 0.0  # rows a noise column would hold
    tied = stats.stats_from_responsibilities(Rows(x, shift), lambda s: drawn[:, s], TIED, 1024)
    full = stats.stats_from_responsibilities(Rows(x, shift), lambda s: drawn[:, s], FULL, 1024)
    scale = np.max(full.second.sum(axis=0))
    np.testing.assert_allclose(tied.second[0], full.second.sum(axis=0), rtol=0, atol=1e-12 * scale)
    np.testing.assert_array_equal(tied.first, full.first)
