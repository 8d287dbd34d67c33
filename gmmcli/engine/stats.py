"""The kernel: one chunk of rows → log densities, responsibilities and sufficient statistics.

Every engine (in memory, streaming, distributed) visits chunks with these functions and adds
the resulting ``SuffStats`` up; ``mstep`` turns the sum into new parameters. Rows enter as
``Z = X − shift`` with one shift per fit (the data mean), so second moments never cancel
catastrophically on data far from the origin.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from .covariance import CovarianceStrategy
from .params import MixtureParams

EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class Model:
    """Parameters prepared for the E-step: shifted means and precision Cholesky factors."""

    params: MixtureParams
    strategy: CovarianceStrategy
    shift: np.ndarray
    shifted_means: np.ndarray
    prec_chol: np.ndarray
    log_weights: np.ndarray

    def log_joint(self, z: np.ndarray) -> np.ndarray:
        """(chunk, k) log π_k + log N(x_i | μ_k, Σ_k)."""
        return self.strategy.log_gaussian(z, self.shifted_means, self.prec_chol) + self.log_weights


@dataclass
class SuffStats:
    """Sums over rows: N_k = Σ r_ik, S1_k = Σ r_ik z_i, S2 (type-shaped), the log-likelihood,
    the row count, and the ``n_worst`` rows with the lowest log density (for re-seeding)."""

    counts: np.ndarray
    first: np.ndarray
    second: np.ndarray
    log_likelihood: float
    n_rows: int
    worst_rows: np.ndarray
    worst_values: np.ndarray

    def __add__(self, other: SuffStats) -> SuffStats:
        rows = np.concatenate([self.worst_rows, other.worst_rows])
        values = np.concatenate([self.worst_values, other.worst_values])
        keep = _lowest(values, max(len(self.worst_rows), len(other.worst_rows)))
        return SuffStats(
            self.counts + other.counts,
            self.first + other.first,
            self.second + other.second,
            self.log_likelihood + other.log_likelihood,
            self.n_rows + other.n_rows,
            rows[keep],
            values[keep],
        )


def _lowest(values: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m lowest values, ordered lowest first (ties by position: stable)."""
    order = np.argsort(values, kind="stable")
    return order[:m]


def prepare(params: MixtureParams, strategy: CovarianceStrategy, shift: np.ndarray) -> Model:
    """Precision Cholesky factors and shifted means for the E-step."""
    prec_chol = strategy.precision_cholesky(params.covariances)
    with np.errstate(divide="ignore"):
        log_weights = np.log(params.weights)
    return Model(params, strategy, shift, params.means - shift, prec_chol, log_weights)


def chunks(n_rows: int, chunk_size: int) -> Iterator[slice]:
    """Consecutive row slices of at most chunk_size rows."""
    for start in range(0, n_rows, chunk_size):
        yield slice(start, min(start + chunk_size, n_rows))


def default_chunk_size(n_components: int, n_features: int) -> int:
    """Rows per chunk so that the (chunk, k) and (chunk, d) temporaries stay a few MiB."""
    return int(np.clip(2**19 // (n_components + n_features), 256, 65536))


def reduce_chunk(
    z: np.ndarray,
    resp: np.ndarray,
    strategy: CovarianceStrategy,
    offset: int = 0,
    log_density: np.ndarray | None = None,
    n_worst: int = 0,
) -> SuffStats:
    """Sufficient statistics of one chunk from its responsibilities."""
    if log_density is None or n_worst == 0:
        worst_rows = np.empty(0, dtype=np.int64)
        worst_values = np.empty(0)
    else:
        keep = _lowest(log_density, n_worst)
        worst_rows = keep.astype(np.int64) + offset
        worst_values = log_density[keep]
    ll = float(log_density.sum()) if log_density is not None else 0.0
    return SuffStats(
        resp.sum(axis=0),
        resp.T @ z,
        strategy.second_moment(z, resp),
        ll,
        z.shape[0],
        worst_rows,
        worst_values,
    )


def estep_chunk(model: Model, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities r_ik and log densities log Σ_k π_k N(x_i|μ_k,Σ_k) of one chunk.

    r_ik = exp(log π_k + log N_ik − logsumexp_k(...)): finite however far x_i lies.
    """
    log_joint = model.log_joint(z)
    log_density = logsumexp(log_joint, axis=1)
    resp = np.exp(log_joint - log_density[:, None])
    return resp, log_density


def total(parts: Iterable[SuffStats]) -> SuffStats:
    """The sum of the chunks' statistics (at least one chunk)."""
    return functools.reduce(operator.add, parts)


def em_pass(model: Model, x: np.ndarray, chunk_size: int, n_worst: int = 0) -> SuffStats:
    """One E-step over all rows, reduced to sufficient statistics chunk by chunk."""

    def part(rows: slice) -> SuffStats:
        z = x[rows] - model.shift
        resp, log_density = estep_chunk(model, z)
        return reduce_chunk(z, resp, model.strategy, rows.start, log_density, n_worst)

    return total(part(rows) for rows in chunks(x.shape[0], chunk_size))


def stats_from_labels(
    x: np.ndarray,
    labels: np.ndarray,
    k: int,
    shift: np.ndarray,
    strategy: CovarianceStrategy,
    chunk_size: int,
) -> SuffStats:
    """Statistics of hard assignments (one-hot responsibilities), as after k-means."""

    def part(rows: slice) -> SuffStats:
        z = x[rows] - shift
        resp = np.zeros((z.shape[0], k))
        resp[np.arange(z.shape[0]), labels[rows]] = 1.0
        return reduce_chunk(z, resp, strategy)

    return total(part(rows) for rows in chunks(x.shape[0], chunk_size))


@dataclass(frozen=True)
class MStep:
    """New parameters and the covariances before regularisation (for collapse checks)."""

    params: MixtureParams
    raw_covariances: np.ndarray


def mstep(
    stats: SuffStats, strategy: CovarianceStrategy, shift: np.ndarray, reg_covar: float
) -> MStep:
    """π_k = N_k / n, μ_k = shift + S1_k / N_k, Σ_k from S2 (see the strategy), + reg_covar.

    N_k gets 10·eps added, as in scikit-learn, so an empty component gives finite numbers.
    """
    n_k = stats.counts + 10 * EPS
    m = stats.first / n_k[:, None]
    raw = strategy.raw_covariances(n_k, stats.counts, m, stats.second)
    cov = strategy.regularise(raw, reg_covar)
    weights = n_k / n_k.sum()
    return MStep(MixtureParams(strategy.name, weights, m + shift, cov), raw)
