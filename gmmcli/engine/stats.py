"""The kernel: one chunk of rows → log densities, responsibilities and sufficient statistics.

Every engine (in memory, streaming, distributed) visits chunks with these functions and adds
the resulting ``SuffStats`` up; ``mstep`` turns the sum into new parameters. Rows enter as a
``Chunk``: ``z = x − shift`` with one shift per fit (the data mean), so second moments never
cancel catastrophically on data far from the origin, stored transposed so that each step is
a BLAS product or a pass over contiguous memory. Statistics are always summed in float64.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

from .chunk import Chunk, Rows, scratch
from .covariance import LOG_2PI, CovarianceStrategy
from .params import MixtureParams

T = TypeVar("T")

EPS = float(np.finfo(np.float64).eps)
EXP_FLOOR = {np.float64: -700.0, np.float32: -80.0}  # e^floor is still a normal number


@dataclass(frozen=True)
class Model:
    """Parameters prepared for the E-step: log π_k N(x|μ_k,Σ_k) = coef_k · features + const_k."""

    params: MixtureParams
    strategy: CovarianceStrategy
    shift: np.ndarray
    prec_chol: np.ndarray
    coefficients: np.ndarray  # (k, q)
    constants: np.ndarray  # (k,)

    def log_joint(self, chunk: Chunk) -> np.ndarray:
        """(k, c) log π_k + log N(x_i | μ_k, Σ_k) of one chunk: one product (into a per-thread
        buffer, valid until the thread's next chunk)."""
        dtype = chunk.features.dtype
        out = scratch("log_joint", (self.coefficients.shape[0], chunk.n_rows), dtype)
        np.matmul(self.coefficients.astype(dtype, copy=False), chunk.features, out=out)
        out += self.constants.astype(dtype, copy=False)[:, None]
        return out


@dataclass
class SuffStats:
    """Sums over rows: N_k = Σ r_ik, S1_k = Σ r_ik z_i, S2 (type-shaped), the log-likelihood,
    the row count, and the ``n_worst`` rows with the lowest log density (for re-seeding): their
    positions, log densities and values, so that whoever re-seeds needs no access to the data."""

    counts: np.ndarray
    first: np.ndarray
    second: np.ndarray
    log_likelihood: float
    n_rows: int
    worst_rows: np.ndarray
    worst_values: np.ndarray
    worst_points: np.ndarray

    def __add__(self, other: SuffStats) -> SuffStats:
        rows = np.concatenate([self.worst_rows, other.worst_rows])
        values = np.concatenate([self.worst_values, other.worst_values])
        points = np.concatenate([self.worst_points, other.worst_points])
        keep = _lowest(values, max(len(self.worst_rows), len(other.worst_rows)))
        return SuffStats(
            self.counts + other.counts,
            self.first + other.first,
            self.second + other.second,
            self.log_likelihood + other.log_likelihood,
            self.n_rows + other.n_rows,
            rows[keep],
            values[keep],
            points[keep],
        )


def _lowest(values: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m lowest values, lowest first (ties by position); O(n) for small m."""
    if m >= len(values):
        return np.argsort(values, kind="stable")
    candidates = np.argpartition(values, m - 1)[:m]
    candidates.sort()  # by position, so the stable sort below breaks ties by position
    return candidates[np.argsort(values[candidates], kind="stable")]


def prepare(params: MixtureParams, strategy: CovarianceStrategy, shift: np.ndarray) -> Model:
    """Precision Cholesky factors and the strategy's coefficients (about the shift)."""
    prec_chol = strategy.precision_cholesky(params.covariances)
    d = params.n_features
    with np.errstate(divide="ignore"):
        log_weights = np.log(params.weights)
    log_det = strategy.log_det_precision_chol(prec_chol, d)
    log_const = log_weights + log_det - 0.5 * d * LOG_2PI
    coefficients, constants = strategy.coefficients(params.means - shift, prec_chol, log_const)
    return Model(params, strategy, shift, prec_chol, coefficients, constants)


def make_chunk(rows: Rows, span: slice, strategy: CovarianceStrategy) -> Chunk:
    """The chunk of these rows with the strategy's features filled in."""
    chunk = rows.chunk(span, strategy.n_extra(rows.n_features))
    strategy.fill_features(chunk)
    return chunk


def chunks(n_rows: int, chunk_size: int) -> Iterator[slice]:
    """Consecutive row slices of at most chunk_size rows."""
    for start in range(0, n_rows, chunk_size):
        yield slice(start, min(start + chunk_size, n_rows))


def default_chunk_size(n_components: int, n_features: int, covariance_type: str = "full") -> int:
    """Rows per chunk: the chunk's widest array — its q features, or the (k, c) log
    densities — stays near 4 MiB, inside the caches."""
    from .covariance import strategy

    q = n_features + strategy(covariance_type).n_extra(n_features)
    return int(np.clip(2**22 // (8 * max(q, n_components)), 512, 65536))


def reduce_chunk(
    chunk: Chunk,
    resp: np.ndarray,
    log_density: np.ndarray | None = None,
    n_worst: int = 0,
) -> SuffStats:
    """Sufficient statistics of one chunk from its responsibilities resp (k, c): one product
    gives Σ_i r_ki f_i for every feature f, i.e. S1 (the z rows) and S2 (the rest)."""
    d = chunk.zt.shape[0]
    if log_density is None or n_worst == 0:
        worst_rows = np.empty(0, dtype=np.int64)
        worst_values = np.empty(0)
        worst_points = np.empty((0, d))
    else:
        keep = _lowest(log_density, n_worst)
        worst_rows = keep.astype(np.int64) + chunk.offset
        worst_values = log_density[keep].astype(np.float64)
        worst_points = np.array(chunk.x[keep], dtype=np.float64)
    ll = float(log_density.sum(dtype=np.float64)) if log_density is not None else 0.0
    moments = (resp @ chunk.features.T).astype(np.float64, copy=False)
    return SuffStats(
        resp.sum(axis=1, dtype=np.float64),
        moments[:, :d],
        moments[:, d:],
        ll,
        chunk.n_rows,
        worst_rows,
        worst_values,
        worst_points,
    )


def estep_chunk(model: Model, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities r_ki (k, c) and log densities log Σ_k π_k N(x_i|μ_k,Σ_k) (c,).

    r_ki = exp(log π_k N_ki − log Σ_j π_j N_ji), normalised about each row's largest term so
    it stays finite however far x_i lies (a responsibility is never below ~1e−304). Done in
    place on the (k, c) array: with k rows of contiguous memory this is a few fast passes
    (scipy.special.logsumexp, which allocates several temporaries, measured 2× slower here).
    """
    resp = model.log_joint(chunk)
    top = resp.max(axis=0)
    top[~np.isfinite(top)] = 0.0
    resp -= top
    # exp() of arguments below about −708 (−87 in float32) returns subnormals through a path
    # ~50× slower; terms under e^−700 ≈ 1e−304 (e^−80 in float32) change no sum, so they are
    # raised to it.
    np.maximum(resp, EXP_FLOOR[resp.dtype.type], out=resp)
    np.exp(resp, out=resp)
    norm = resp.sum(axis=0)
    resp /= norm
    log_density = np.log(norm)
    log_density += top
    return resp, log_density


def total(parts: Iterable[SuffStats]) -> SuffStats:
    """The sum of the chunks' statistics (at least one chunk), in chunk order."""
    return functools.reduce(operator.add, parts)


def map_chunks(
    work: Callable[[slice], T], n_rows: int, chunk_size: int, threads: int = 1
) -> list[T]:
    """work(rows) for each chunk, returned in chunk order; on ``threads`` threads when > 1.

    Each thread takes one contiguous run of chunks (one task each: per-chunk tasks cost more
    in hand-offs than they gained). numpy and BLAS release the GIL, so the runs really go
    side by side, and as results come back in chunk order, sums over them are the same
    whatever the number of threads.
    """
    slices = list(chunks(n_rows, chunk_size))
    if threads <= 1 or len(slices) == 1:
        return [work(span) for span in slices]
    bounds = np.linspace(0, len(slices), min(threads, len(slices)) + 1).astype(int)
    runs = [slices[a:b] for a, b in itertools.pairwise(bounds)]
    done = _executor(threads).map(lambda run: [work(span) for span in run], runs)
    return [result for run in done for result in run]


def default_threads() -> int:
    """Worker threads for the chunks: one per core (at most 8)."""
    return max(1, min(os.cpu_count() or 1, 8))


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while our own threads share out the chunks.

    Two reasons, both measured: numpy and scipy each bring an OpenBLAS whose idle threads
    spin after a call and slowed the other's next call ~2×; and the chunk products are small,
    so splitting chunks across cores beats splitting each product.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@functools.cache
def _executor(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gmm-chunk")


def em_pass(
    model: Model, rows: Rows, chunk_size: int, n_worst: int = 0, threads: int = 1
) -> SuffStats:
    """One E-step over all rows, reduced to sufficient statistics chunk by chunk (in the
    precision of ``rows``; statistics are summed in float64 either way)."""

    def part(span: slice) -> SuffStats:
        chunk = make_chunk(rows, span, model.strategy)
        resp, log_density = estep_chunk(model, chunk)
        return reduce_chunk(chunk, resp, log_density, n_worst)

    return total(map_chunks(part, rows.n_rows, chunk_size, threads))


def stats_from_responsibilities(
    rows: Rows,
    responsibilities: Callable[[slice], np.ndarray],
    strategy: CovarianceStrategy,
    chunk_size: int,
) -> SuffStats:
    """Statistics of given responsibilities (k, c) per chunk, e.g. one-hot after k-means."""

    def part(span: slice) -> SuffStats:
        chunk = make_chunk(rows, span, strategy)
        return reduce_chunk(chunk, responsibilities(span).astype(rows.dtype, copy=False))

    return total(map(part, chunks(rows.n_rows, chunk_size)))


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
