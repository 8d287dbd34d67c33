"""The kernel: one chunk of rows → log densities, responsibilities and sufficient statistics.

Every engine (in memory, streaming, distributed) visits chunks with these functions and adds
the resulting ``SuffStats`` up; ``mstep`` turns the sum into new parameters. Rows enter as a
``Chunk``: ``z = x − shift`` with one shift per fit (the data mean), so second moments never
cancel catastrophically on data far from the origin, stored transposed so that each step is
a BLAS product or a pass over contiguous memory. Statistics are always summed in float64.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import operator
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.lib.stride_tricks import as_strided
from threadpoolctl import ThreadpoolController

from . import bycomponent
from .chunk import Chunk, Rows, scratch
from .covariance import LOG_2PI, CovarianceStrategy, get_strategy
from .params import MixtureParams, Noise

T = TypeVar("T")

EPS = float(np.finfo(np.float64).eps)
EXP_FLOOR = {np.float64: -700.0, np.float32: -80.0}  # e^floor is still a normal number
# A component whose mean lies more than √FAR_REACH of its own standard deviations from the
# shift is "far": expanded about the shift, its quadratic form would lose about eps·reach to
# cancellation (2e-10 here), so it is computed about its own mean instead (see ``Model``).
FAR_REACH = 1e6


@dataclass(frozen=True)
class Model:
    """Parameters prepared for the E-step: log π_k N(x|μ_k,Σ_k) = coef_k · features + const_k.

    The features are expanded about the fit's shift, which is exact enough for every
    component whose mean lies within √FAR_REACH standard deviations of it — the usual case,
    done in one product. A *far* component (two clusters 1e9 apart, or a spike of variance
    1e-6 at 1e4) gets features of its own, x − μ_k, and its statistics are summed about μ_k
    too (``origins``), so neither its density nor its covariance loses digits; it costs one
    extra pass over the chunk per far component.
    """

    params: MixtureParams
    strategy: CovarianceStrategy
    shift: np.ndarray
    prec_chol: np.ndarray
    coefficients: np.ndarray  # (k, q), zero for far components
    constants: np.ndarray  # (k,)
    origins: np.ndarray  # (k, d): the shift, or a far component's own mean
    far: np.ndarray  # indices of the far components
    far_coefficients: np.ndarray  # (len(far), q), about their own means
    far_constants: np.ndarray  # (len(far),)
    # (k, d) where each component's statistics are summed about: ``origins`` unless
    # ``recentred`` moved them (see there)
    moment_origins: np.ndarray
    # with a noise component: log π_0 − log V, the noise's term of every complete row, and
    # (d,) log (upper_j − lower_j), what a missing cell j adds back to it; None without noise
    noise_term: float | None = None
    noise_log_ranges: np.ndarray | None = None
    # (d, d) Q when every component shares the quadratic −½‖Q z‖² (``strategy.row_factor``):
    # ``row_terms`` puts ‖Q z‖² in the features' first extra row, for the product
    row_factor: np.ndarray | None = None

    @functools.cached_property
    def factors(self) -> bycomponent.Factors:
        """The precision factors as the kernel component by component takes them."""
        log_const = log_constants(self.params, self.strategy, self.prec_chol)
        return bycomponent.Factors.of(self, log_const)

    def with_moment_origins(self, moment_origins: np.ndarray) -> Model:
        """The same model, summing the statistics about other points."""
        return dataclasses.replace(self, moment_origins=moment_origins)

    def log_joint(self, chunk: Chunk) -> np.ndarray:
        """(k, c) log π_k + log N(x_i | μ_k, Σ_k) of one chunk: one product (into a per-thread
        buffer, valid until the thread's next chunk), then one more per far component.

        With a noise component, (k + 1, c): the last row is the noise's log π_0 − log V_i,
        V_i the volume of the box over row i's observed columns (V for a complete row)."""
        dtype = chunk.features.dtype
        k = self.coefficients.shape[0]
        noisy = self.noise_term is not None
        everything = scratch("log_joint", (k + noisy, chunk.n_rows), dtype)
        out = everything[:k] if noisy else everything
        if chunk.by_component:
            bycomponent.log_joint(self, chunk, out)
        else:
            self._log_joint_of_features(chunk, out)
        if chunk.gaps is not None:  # rows with missing cells: their marginal densities
            from .missing import marginal_log_joint

            marginal_log_joint(self, chunk, out)
        if noisy:
            everything[k] = self.noise_term
            if chunk.gaps is not None:  # a missing cell's side leaves the row's box
                layout = chunk.gaps.layout
                observed_only = layout.mask.astype(np.float64) @ self.noise_log_ranges
                everything[k, layout.rows] += observed_only.astype(dtype, copy=False)
        return everything

    def _log_joint_of_features(self, chunk: Chunk, out: np.ndarray) -> None:
        """``log_joint`` of the Gaussians from the chunk's features, into ``out`` (k, c)."""
        dtype = chunk.features.dtype
        self.row_terms(chunk.features)
        _product_per_block(self.coefficients.astype(dtype, copy=False), chunk.features, out)
        if self.constants.any():  # none: the product added them (adding 0 changes nothing)
            out += self.constants.astype(dtype, copy=False)[:, None]
        for i, c in enumerate(self.far):
            local = local_features(chunk, self.origins[c], self.strategy)
            with np.errstate(over="ignore", invalid="ignore"):
                self.row_terms(local)
                np.matmul(self.far_coefficients[i].astype(dtype, copy=False), local, out=out[c])
            out[c] += dtype.type(self.far_constants[i])

    def row_terms(self, features: np.ndarray) -> None:
        """With a shared quadratic (``row_factor`` Q), the features' first extra row ←
        ‖Q z_i‖² of their rows z (the first d): once per row for all k components, before
        the product that takes it with coefficient −½. Q z per block of rows, as the
        E-step's product, so no bit depends on the chunks. Nothing for any other model."""
        if self.row_factor is None:
            return
        d = self.row_factor.shape[0]
        zt = features[:d]
        y = scratch("row_terms", zt.shape, zt.dtype)
        _product_per_block(self.row_factor.astype(zt.dtype, copy=False), zt, y)
        np.einsum("ac,ac->c", y, y, out=features[d])


def local_features(chunk: Chunk, origin: np.ndarray, strategy: CovarianceStrategy) -> np.ndarray:
    """The chunk's features about ``origin`` instead of the shift (from the rows as read, in
    float64, before any rounding to the working precision)."""
    dtype = chunk.features.dtype
    d = chunk.zt.shape[0]
    features = scratch("local", chunk.features.shape, dtype)
    np.subtract(chunk.x.T, origin[:, None], out=features[:d], dtype=np.float64, casting="same_kind")
    with np.errstate(over="ignore"):
        strategy.fill_features(Chunk(features, d))
    return features


class WorstRows:
    """The ``n`` rows of a chunk with the lowest log density and distinct values (for
    re-seeding): positions, log densities (float64) and values. Every pass asks for them and
    the loop reads them only after a collapse, so a chunk of one block leaves them to be found
    when first read (``of(…, later=True)``); in a sum, or pickled (a Dask worker's result), they are
    found first."""

    def __init__(self, rows: np.ndarray, values: np.ndarray, points: np.ndarray) -> None:
        self._found: tuple[np.ndarray, np.ndarray, np.ndarray] | None = (rows, values, points)
        self._pending: tuple[np.ndarray, np.ndarray, int, int, np.ndarray | None] | None = None

    @classmethod
    def of(
        cls,
        log_density: np.ndarray,
        x: np.ndarray,
        n: int,
        offset: int,
        among: np.ndarray | None = None,
        later: bool = False,
    ) -> WorstRows:
        """The worst rows of a chunk's rows ``x`` (its first at row ``offset``), among the rows
        ``among`` (positions in the chunk; None: all): found now, or with ``later`` when first
        read, from copies (a source may reuse its buffers for the next block of rows)."""
        if among is not None:
            log_density, x = log_density[among], x[among]
        if not later:
            return cls(*_find_worst(log_density, x, n, offset, among))
        worst = cls.__new__(cls)
        worst._found = None
        worst._pending = (log_density.copy(), np.array(x), n, offset, among)
        return worst

    def get(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._found is None:
            assert self._pending is not None
            self._found = _find_worst(*self._pending)
            self._pending = None
        return self._found

    def __getstate__(self) -> dict:
        self.get()
        return {"_found": self._found, "_pending": None}


def _find_worst(
    log_density: np.ndarray, x: np.ndarray, n: int, offset: int, among: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``WorstRows``' positions, log densities and values (``log_density`` and ``x`` already
    cut to the rows ``among``)."""
    keep = _lowest_distinct(log_density, x, n)
    where = keep if among is None else among[keep]
    return (
        where.astype(np.int64) + offset,
        log_density[keep].astype(np.float64),
        np.array(x[keep], dtype=np.float64),
    )


@dataclass
class SuffStats:
    """Sums over rows: N_k = Σ r_ik, S1_k = Σ r_ik z_i, S2 (type-shaped), the log-likelihood,
    the row count, and the ``n_worst`` rows with the lowest log density (for re-seeding): their
    positions, log densities and values, so that whoever re-seeds needs no access to the data.
    The worst rows hold distinct values: a value repeated in many rows counts once (at its
    first row), so re-seeding never has to put two components on one point while the data
    has other points."""

    counts: np.ndarray
    first: np.ndarray
    second: np.ndarray
    log_likelihood: float
    n_rows: int
    worst: WorstRows = dataclasses.field(repr=False, compare=False)
    origins: np.ndarray  # (k, d): S1_k and S2_k are sums of x_i − origin_k (see ``Model``)
    noise: float | None = None  # N_0 = Σ r_i0, the noise component's count (None: no noise)
    # the strategy's spread of these statistics, once ``unconstrained`` computed it
    spread: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def worst_rows(self) -> np.ndarray:
        return self.worst.get()[0]

    @property
    def worst_values(self) -> np.ndarray:
        return self.worst.get()[1]

    @property
    def worst_points(self) -> np.ndarray:
        return self.worst.get()[2]

    def __add__(self, other: SuffStats) -> SuffStats:
        if not np.array_equal(self.origins, other.origins):
            raise ValueError("statistics summed about different origins cannot be added")
        rows = np.concatenate([self.worst_rows, other.worst_rows])
        values = np.concatenate([self.worst_values, other.worst_values])
        points = np.concatenate([self.worst_points, other.worst_points])
        keep = _lowest_distinct(values, points, max(len(self.worst_rows), len(other.worst_rows)))
        return SuffStats(
            self.counts + other.counts,
            self.first + other.first,
            self.second + other.second,
            self.log_likelihood + other.log_likelihood,
            self.n_rows + other.n_rows,
            WorstRows(rows[keep], values[keep], points[keep]),
            self.origins,
            None if self.noise is None else self.noise + other.noise,
        )


def _lowest(values: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m lowest values, lowest first (ties by position); O(n) for small m."""
    if m >= len(values):
        return np.argsort(values, kind="stable")
    candidates = np.argpartition(values, m - 1)[:m]
    return candidates[np.lexsort((candidates, values[candidates]))]  # ties by position


def _lowest_distinct(values: np.ndarray, points: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m lowest values whose rows of ``points`` differ, lowest first (ties by
    position): among rows with equal points only the first of the lowest counts. The same as
    ``_lowest`` when its m rows are distinct (then in O(n) for small m)."""
    keep = _lowest(values, m)
    if len(keep) < 2 or count_distinct_rows(points[keep]) == len(keep):
        return keep
    order = np.argsort(values, kind="stable")
    _, first = np.unique(points[order], axis=0, return_index=True)
    return order[np.sort(first)[:m]]


def count_distinct_rows(points: np.ndarray) -> int:
    """How many distinct rows an (m, d) array holds (−0 and 0 are one value). A few rows (the
    worst rows of a chunk, checked every iteration) are compared pairwise, in O(m² d) but
    one tenth of the time ``np.unique`` takes on them."""
    m = points.shape[0]
    if m > 64:
        return int(np.unique(points, axis=0).shape[0])
    if m <= 16:  # as tuples of floats: == and hash agree with numpy's == (−0 is 0, NaN is
        # no value's equal), and a set of a few is ~5× quicker than the comparisons below
        return len(set(map(tuple, points.tolist())))
    same = (points[:, None, :] == points[None, :, :]).all(axis=2)
    same &= _earlier(m)
    return m - int(same.any(axis=0).sum())  # less the rows equal to an earlier row


@functools.cache
def _earlier(m: int) -> np.ndarray:
    """(m, m) bool: entry (i, j) is True where i < j (read-only)."""
    mask = np.triu(np.ones((m, m), dtype=bool), 1)
    mask.flags.writeable = False
    return mask


def prepare(params: MixtureParams, strategy: CovarianceStrategy, shift: np.ndarray) -> Model:
    """Precision Cholesky factors and the strategy's coefficients (about the shift)."""
    prec_chol = strategy.precision_cholesky(params.covariances)
    k, d = params.n_components, params.n_features
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_const = log_constants(params, strategy, prec_chol)
        m = params.means - shift
        far = np.flatnonzero(~(strategy.reach(m, prec_chol) <= FAR_REACH))
        coefficients, constants = strategy.coefficients(m, prec_chol, log_const)
        origins = np.repeat(shift[None, :], k, axis=0)
        if far.size:  # rare: only these need coefficients of their own
            far_coefficients, far_constants = strategy.coefficients(
                np.zeros((far.size, d)), strategy.select(prec_chol, far), log_const[far]
            )
            coefficients[far] = 0.0
            constants[far] = 0.0
            origins[far] = params.means[far]
        else:
            far_coefficients = np.empty((0, coefficients.shape[1]))
            far_constants = np.empty(0)
        noise_term = noise_log_ranges = None
        if params.noise is not None:
            noise_log_ranges = params.noise.log_ranges
            noise_term = float(np.log(params.noise.weight) - noise_log_ranges.sum())
        row_factor = strategy.row_factor(prec_chol)
    return Model(
        params,
        strategy,
        shift,
        prec_chol,
        coefficients,
        constants,
        origins,
        far,
        far_coefficients,
        far_constants,
        origins,
        noise_term,
        noise_log_ranges,
        row_factor,
    )


def log_constants(
    params: MixtureParams, strategy: CovarianceStrategy, prec_chol: np.ndarray
) -> np.ndarray:
    """(k,) log π_k + log det P_k − ½ d log 2π."""
    log_det = strategy.log_det_precision_chol(prec_chol, params.n_features)
    with np.errstate(divide="ignore"):
        return np.log(params.weights) + log_det - 0.5 * params.n_features * LOG_2PI


def make_chunk(
    rows: Rows, span: slice, strategy: CovarianceStrategy, n_components: int = 0
) -> Chunk:
    """The chunk of these rows with the strategy's features filled in; with z alone where
    the kernel goes component by component for ``n_components`` (``bycomponent.chosen``).

    A table that is one chunk (a small one) keeps its filled chunk for the whole fit, as
    the features depend only on the rows and the model: every pass of EM over 150 rows
    would otherwise spend a quarter of its kernel time making the same features again."""
    if bycomponent.chosen(strategy, rows.n_features, n_components):
        return bycomponent.chunk_of(rows, span)
    whole = span.start == 0 and span.stop == rows.n_rows and rows.cached is not None
    if whole and strategy.name in rows.filled:
        return rows.filled[strategy.name]
    chunk = rows.chunk(span, strategy.n_extra(rows.n_features))
    with np.errstate(over="ignore"):  # a square beyond the range: that row's density is 0
        strategy.fill_features(chunk)
    if whole and chunk.gaps is None:  # a copy: the chunk's features are a thread's buffer
        kept = Chunk(chunk.features.copy(), rows.n_features, 0, chunk.x, chunk.shift)
        kept.weights = chunk.weights
        kept.grams = chunk.grams
        rows.filled[strategy.name] = chunk = kept
    return chunk


def chunks(n_rows: int, chunk_size: int) -> Iterator[slice]:
    """Consecutive row slices of about chunk_size rows, rounded up to whole blocks (BLOCK):
    sums over rows are built from blocks, so a chunk must not split one."""
    size = max(BLOCK, -(-chunk_size // BLOCK) * BLOCK)
    for start in range(0, n_rows, size):
        yield slice(start, min(start + size, n_rows))


def default_chunk_size(n_components: int, n_features: int, covariance_type: str = "full") -> int:
    """Rows per chunk: the chunk's widest array — its q features, or the (k, c) log
    densities — near 16 MiB, and a power of two times BLOCK, so that chunks are whole
    subtrees of the sums' tree (see ``BlockSum``). Measured (1M × 16, k = 8, full): 4096
    rows 332 ms per iteration, 16384 rows 242 ms — each chunk costs ~0.2 ms of bookkeeping,
    more than larger arrays lose to the caches; d = 64 full is best near 1024–2048 rows.
    A chunk of the kernel component by component holds [z; 1] only, and works on pieces that
    fit the caches: near 4 MiB (8192 rows at d = 64), which leaves enough chunks for the
    threads to share evenly. A shared covariance's chunk (tied: [z; ‖Pᵀz‖²; 1]) goes
    through (d, c) temporaries too, the quadratic's product and the pooled Gram, so its
    features stay near 4 MiB while its (k, c) arrays may reach 16 MiB: one pass at
    d = 64, 200,000 rows, one thread, k = 8: 90 → 80 ms, k = 32: 151 → 121 ms (8192
    rows instead of 32768; CPU time, medians of 5–9, alternated); the same at d = 16, and
    d = 2, k = 32 keeps its 65536 rows (16384 were slower: 24–27 against 28–31 ms)."""
    strategy = get_strategy(covariance_type)
    if bycomponent.chosen(strategy, n_features, n_components):
        width, target = n_features + 1, 2**22
        rows = target / (8 * max(width, n_components))
    else:
        width = n_features + strategy.n_extra(n_features)
        rows = 2**24 / (8 * max(width, n_components))
        if strategy.shared:
            rows = min(rows, 2**22 / (8 * width))
    rows = float(np.clip(rows, 2 * BLOCK, 65536))
    return int(2 ** round(np.log2(rows)))


# -- sums over rows that do not depend on how the rows are chunked --------------------------
# Every sum over rows is built from blocks of BLOCK consecutive rows (block b holds rows
# b·BLOCK …), each summed the same way whatever chunk it comes in (one product per block, as
# a batch), and blocks are added in one fixed binary tree over block numbers. So chunk size
# and thread count change no bit of any result (any chunking into whole blocks, and any
# split of the chunks among threads, give the same tree).
BLOCK = 512


def _dyadic(first: int, stop: int) -> list[tuple[int, int]]:
    """[first, stop) as maximal aligned pieces (start, level): 2**level blocks from start,
    start a multiple of 2**level — the subtrees of the tree that lie inside the range."""
    pieces = []
    while first < stop:
        level = 0
        while first % (2 << level) == 0 and first + (2 << level) <= stop:
            level += 1
        pieces.append((first, level))
        first += 1 << level
    return pieces


def _tree_sum(parts: np.ndarray) -> np.ndarray:
    """The sum over axis 0 (of length a power of two) as a binary tree: left + right."""
    while parts.shape[0] > 1:
        parts = parts[0::2] + parts[1::2]
    return parts[0]


class BlockSum:
    """Statistics added in the fixed tree over block numbers, fed left to right.

    A node is a subtree: (first block, level, statistics of its 2**level blocks). Pushing a
    node merges it with its left sibling (left + right) as long as that is the last node
    held, so at most ~log2(n) nodes are held; another BlockSum's nodes (a later run of
    chunks, summed on another thread) can be pushed after ours with the same result as
    one sequence. ``result`` adds what is left, right to left: fixed by the row count.
    """

    def __init__(self) -> None:
        self.nodes: list[tuple[int, int, SuffStats]] = []

    def push(self, first: int, level: int, stats: SuffStats) -> None:
        while self.nodes:
            left_first, left_level, left = self.nodes[-1]
            sibling = (
                left_level == level
                and left_first % (2 << level) == 0
                and left_first + (1 << level) == first
            )
            if not sibling:
                break
            self.nodes.pop()
            first, level, stats = left_first, level + 1, left + stats
        self.nodes.append((first, level, stats))

    def extend(self, other: BlockSum) -> None:
        for node in other.nodes:
            self.push(*node)

    def result(self) -> SuffStats:
        stats = self.nodes[-1][2]
        for _, _, left in reversed(self.nodes[:-1]):
            stats = left + stats
        return stats


def _per_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(blocks, m, q): a (m, c) times bᵀ (c, q) for each block of BLOCK columns (the last
    may be short), as one batched product (as fast as one product, measured)."""
    c = a.shape[1]
    full = c // BLOCK
    parts = []
    if full:
        n = full * BLOCK
        blocks_a = a[:, :n].reshape(a.shape[0], full, BLOCK).transpose(1, 0, 2)
        blocks_b = b[:, :n].reshape(b.shape[0], full, BLOCK).transpose(1, 2, 0)
        parts.append(np.matmul(blocks_a, blocks_b).astype(np.float64, copy=False))
    if c > full * BLOCK:
        tail = a[:, full * BLOCK :] @ b[:, full * BLOCK :].T
        parts.append(tail[None].astype(np.float64, copy=False))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _product_per_block(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out (m, c) ← a (m, q) times b (q, c), as one product per block of BLOCK columns (one
    batched call, the last block on its own). OpenBLAS's result for a column can depend on
    how many columns one call has (at q = 77 or 104, not 44: measured), so the E-step's
    products go block by block, as the M-step's do, and no bit depends on the chunks."""
    c = out.shape[1]
    full = c // BLOCK * BLOCK
    if full:

        def blocks(x: np.ndarray) -> np.ndarray:  # (blocks, rows, BLOCK), a view whatever x
            rows, columns = x.strides
            shape = (full // BLOCK, x.shape[0], BLOCK)
            return as_strided(x, shape, (BLOCK * columns, rows, columns), writeable=x is out)

        np.matmul(a, blocks(b), out=blocks(out))
    if c > full:
        np.matmul(a, b[:, full:], out=out[:, full:])


def _block_sums(values: np.ndarray) -> np.ndarray:
    """(k, c) → (blocks, k), or (c,) → (blocks,): sums over each block of BLOCK columns, in
    float64."""
    c = values.shape[-1]
    full = c // BLOCK
    parts = []
    if full:
        head = values[..., : full * BLOCK].reshape(*values.shape[:-1], full, BLOCK)
        parts.append(head.sum(axis=-1, dtype=np.float64).T)
    if c > full * BLOCK:
        parts.append(values[..., full * BLOCK :].sum(axis=-1, dtype=np.float64)[None])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def reduce_chunk_blocks(
    chunk: Chunk,
    resp: np.ndarray,
    strategy: CovarianceStrategy,
    log_density: np.ndarray | None = None,
    n_worst: int = 0,
    origins: np.ndarray | None = None,
    noise: np.ndarray | None = None,
    normalised: bool = True,
) -> BlockSum:
    """Sufficient statistics of one chunk from its responsibilities resp (k, c), as the
    subtrees of the blocks' tree that the chunk holds. One product per block gives
    Σ_i r_ki f_i for every feature f, i.e. S1 (the z rows) and S2 (the rest); a model with a
    shared covariance (``strategy.shared``) takes S1 from z alone (its other features, the
    E-step's quadratic and ones, are no moments) and its one row of S2 from the Gram of z
    weighted by s_i = Σ_k r_ki, per block (``_pooled_second``). A component whose row of
    ``origins`` (k, d) is not the shift is summed about that point instead (one more product
    each, with the strategy's features). ``noise`` (c,): the noise component's
    responsibilities, summed into ``SuffStats.noise`` in the same tree.

    ``normalised``: ``resp`` and ``noise`` sum to 1 in each row, as the E-step's do (False:
    given responsibilities, which a pooled row sums). Rows with frequency weights
    (``chunk.weights``) count w_i times: each row's
    responsibilities become w_i r_ki before any sum (so N_k, S1 and S2, the missing cells'
    corrections and the noise's count too, are weighted sums), its log density counts
    w_i log p(x_i), and a row of weight 0 is never among the worst rows. Without weights
    nothing here changes."""
    if chunk.offset % BLOCK:
        raise ValueError(f"a chunk must start on a block boundary (row {chunk.offset})")
    weights = chunk.weights
    if weights is not None:
        resp = resp * weights.astype(resp.dtype, copy=False)
        if noise is not None:
            noise = noise * weights.astype(noise.dtype, copy=False)
    extra = None
    estep_resp = resp
    if chunk.gaps is not None:  # rows with missing cells: their conditional moments
        from .missing import conditional_moments

        resp, extra = conditional_moments(chunk, resp, origins)
    if chunk.by_component:
        moments = bycomponent.block_moments(chunk, resp, origins)
    else:  # (blocks, k, q), or (blocks, k, d) where S2 is pooled: the rest are no moments
        moments = _per_block(resp, chunk.zt if strategy.shared else chunk.features)
    about_shift = None
    if origins is None:
        origins = np.repeat(chunk.shift[None, :], resp.shape[0], axis=0)
    elif not chunk.by_component:
        elsewhere = (origins != chunk.shift).any(axis=1)
        about_shift = np.flatnonzero(~elsewhere) if elsewhere.any() else None
        for c in np.flatnonzero(elsewhere):
            local = local_features(chunk, origins[c], strategy)[: moments.shape[2]]
            with np.errstate(over="ignore", invalid="ignore"):
                moments[:, c] = _per_block(resp[c : c + 1], local)[:, 0]
    d = chunk.zt.shape[0]
    first = moments[:, :, :d]
    if strategy.shared:
        if about_shift is None and not normalised:
            about_shift = np.arange(resp.shape[0])  # s_i: the given responsibilities' sum
        second = _pooled_second(chunk, resp, noise, strategy, origins, about_shift)
    else:
        second = moments[:, :, d:]
    counts = _block_sums(resp)  # (blocks, k)
    if extra is not None:
        counts += extra.counts
        first += extra.moments[:, :, :d]
        added = extra.moments[:, :, d:]  # per component: pooled, their sum over components
        # not in place: a pooled row may be the one the rows keep (``Chunk.grams``)
        second = second + (added.sum(axis=1, keepdims=True) if strategy.shared else added)
    noise_counts = None if noise is None else _block_sums(noise)
    worst = None
    if chunk.gaps is not None and log_density is not None and n_worst:
        from .missing import best_filled  # the missing cells at their conditional means, now

        counted = None if weights is None else np.flatnonzero(weights > 0)  # rows that count
        rows, values, _ = WorstRows.of(log_density, chunk.x, n_worst, chunk.offset, counted).get()
        worst = WorstRows(rows, values, best_filled(chunk, estep_resp, rows - chunk.offset))
    return block_nodes(
        chunk.x, chunk.offset, weights, counts, first, second, log_density, n_worst, origins,
        noise_counts, worst,
    )  # fmt: skip


def _pooled_second(
    chunk: Chunk,
    resp: np.ndarray,
    noise: np.ndarray | None,
    strategy: CovarianceStrategy,
    origins: np.ndarray,
    about_shift: np.ndarray | None,
) -> np.ndarray:
    """(blocks, 1, n_second) per block, the pooled second moments of a shared covariance's
    model, Σ_k Σ_i r_ki (z_i − o_k)(z_i − o_k)ᵀ in the strategy's form (``moments_of``):
    one Gram per block of z weighted by s_i = Σ_k r_ki over the components ``about_shift``
    (summed about the shift), where per-component sums would cost k products; one more per
    component summed about its own point (``origins``).

    With every component about the shift and the E-step's responsibilities (``about_shift``
    None), s_i is what the row's responsibilities leave to the Gaussians, w_i − w_i r_i0
    (``noise`` holds w_i r_i0): no pass over the k rows of ``resp``. Without noise that is
    w_i, or 1 (the same to rounding: a row's responsibilities sum to 1), and the result is
    the rows' own Gram, the same in every pass, which rows held in memory keep
    (``Chunk.grams``)."""
    zt = chunk.zt
    weights = chunk.weights
    if about_shift is None and noise is None:
        key = (chunk.offset, chunk.n_rows)
        if chunk.grams is not None and key in chunk.grams:
            return chunk.grams[key]
        with np.errstate(over="ignore", invalid="ignore"):
            weighted = zt if weights is None else zt * weights.astype(zt.dtype, copy=False)
            gram = strategy.moments_of(_per_block(weighted, zt))[:, None, :]
        if chunk.grams is not None:
            chunk.grams[key] = gram
        return gram
    total = scratch("pooled_total", (zt.shape[1],), zt.dtype)
    if about_shift is not None:
        np.sum(resp[about_shift], axis=0, out=total)
    elif weights is None:
        np.subtract(1, noise, out=total)
    else:
        np.subtract(weights, noise, out=total)
    weighted = scratch("pooled_weighted", zt.shape, zt.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        np.multiply(zt, total, out=weighted)
        gram = _per_block(weighted, zt)
        if about_shift is not None:
            for c in np.setdiff1d(np.arange(resp.shape[0]), about_shift):
                local = local_features(chunk, origins[c], strategy)[: zt.shape[0]]
                gram += _per_block(local * resp[c], local)
    return strategy.moments_of(gram)[:, None, :]


def block_nodes(
    x: np.ndarray,
    offset: int,
    weights: np.ndarray | None,
    counts: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    log_density: np.ndarray | None,
    n_worst: int,
    origins: np.ndarray,
    noise_counts: np.ndarray | None = None,
    worst: WorstRows | None = None,
) -> BlockSum:
    """A chunk's statistics as the subtrees of the blocks' tree that it holds, from its
    per-block sums: counts (blocks, k), S1 ``first`` (blocks, k, d), S2 ``second`` (blocks,
    k or 1, n_second), the noise's counts (blocks,); the log-likelihood per block (w log p
    with weights) and the chunk's worst rows (``worst`` when the caller found them) from its
    log densities (c,). ``x`` (c, d): the chunk's rows as read, its first at row
    ``offset``."""
    n_rows, d = x.shape
    if log_density is None:
        lls = np.zeros(first.shape[0])
    elif weights is None:
        lls = _block_sums(log_density)
    else:  # w log p, 0 for a row of weight 0 (even where p underflows to 0)
        lls = _block_sums(np.where(weights > 0, weights * log_density.astype(np.float64), 0.0))
    if worst is None and log_density is not None and n_worst:
        # the chunk's worst rows ride on its first subtree (the selection is order-kept);
        # a chunk of one block leaves them to be found if ever read (copies of 512 rows cost
        # little), a bigger one finds them now, as its arrays are not kept for later
        counted = None if weights is None else np.flatnonzero(weights > 0)  # rows that count
        worst = WorstRows.of(log_density, x, n_worst, offset, counted, later=n_rows <= BLOCK)
    if worst is None:
        worst = WorstRows(*_NO_WORST_ROWS[d])
    first_block = offset // BLOCK
    out = BlockSum()
    for i, (start, level) in enumerate(_dyadic(first_block, first_block + first.shape[0])):
        span = slice(start - first_block, start - first_block + (1 << level))
        rows_in = min(n_rows, span.stop * BLOCK) - span.start * BLOCK
        stats = SuffStats(
            _tree_sum(counts[span]),
            _tree_sum(first[span]),
            _tree_sum(second[span]),
            float(_tree_sum(lls[span])),
            rows_in,
            worst if i == 0 else WorstRows(*_NO_WORST_ROWS[d]),
            origins,
            None if noise_counts is None else float(_tree_sum(noise_counts[span])),
        )
        out.nodes.append((start, level, stats))
    return out


class _NoWorstRows(dict):
    """d → (rows, values, points) of no rows (read-only), for statistics without worst rows."""

    def __missing__(self, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        empty = (np.empty(0, dtype=np.int64), np.empty(0), np.empty((0, d)))
        for array in empty:
            array.flags.writeable = False
        self[d] = empty
        return empty


_NO_WORST_ROWS = _NoWorstRows()


def estep_chunk(model: Model, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities r_ki (k, c) and log densities log Σ_k π_k N(x_i|μ_k,Σ_k) (c,); with
    a noise component, (k + 1, c) with the noise's last, and its term π_0 / V_i in the sum.

    r_ki = exp(log π_k N_ki − log Σ_j π_j N_ji), normalised about each row's largest term so
    it stays finite however far x_i lies (a responsibility is never below ~1e−304). Done in
    place on the (k, c) array: with k rows of contiguous memory this is a few fast passes
    (scipy.special.logsumexp, which allocates several temporaries, measured 2× slower here).
    """
    with np.errstate(over="ignore", invalid="ignore"):  # inf − inf is handled just below
        resp = model.log_joint(chunk)
    # A NaN can only come from an overflowing expansion (inf − inf), i.e. a row unimaginably
    # far from that component: fmax treats it as −inf, as the true value is below −1e300.
    top = np.fmax.reduce(resp, axis=0)
    nowhere = top == -np.inf  # a row too far from every component for float64
    top[~np.isfinite(top)] = 0.0
    resp -= top
    # exp() of arguments below about −708 (−87 in float32) returns subnormals through a path
    # ~50× slower; terms under e^−700 ≈ 1e−304 (e^−80 in float32) change no sum, so they are
    # raised to it.
    np.fmax(resp, EXP_FLOOR[resp.dtype.type], out=resp)
    np.exp(resp, out=resp)
    norm = resp.sum(axis=0)
    resp /= norm
    log_density = np.log(norm)
    log_density += top
    if nowhere.any():
        log_density[nowhere] = -np.inf
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
    with _blas_libraries("scipy" in sys.modules).limit(limits=1, user_api="blas"):
        yield


@functools.cache
def _blas_libraries(with_scipy: bool) -> ThreadpoolController:
    """The thread pools loaded, looked up once (about 1 ms, more than a whole fit of a small
    table takes per restart), and again once scipy, which brings its own OpenBLAS, is
    loaded."""
    return ThreadpoolController()


@functools.cache
def _executor(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gmm-chunk")


def em_pass(
    model: Model, rows: Rows, chunk_size: int, n_worst: int = 0, threads: int = 1
) -> SuffStats:
    """One E-step over all rows, reduced to sufficient statistics chunk by chunk (in the
    precision of ``rows``; statistics are summed in float64 either way). A large complete
    table of a diagonal model takes the compiled pass of ``diagonal`` (the same sums)."""
    from .diagonal import compiled_pass

    compiled = compiled_pass(model, rows)

    def part(span: slice) -> BlockSum:
        if compiled is not None:
            return compiled(span, n_worst)
        chunk = make_chunk(rows, span, model.strategy, model.params.n_components)
        resp, log_density = estep_chunk(model, chunk)
        origins = model.moment_origins
        noise = None
        if model.noise_term is not None:
            resp, noise = resp[:-1], resp[-1]
        return reduce_chunk_blocks(
            chunk, resp, model.strategy, log_density, n_worst, origins, noise
        )

    return fold_chunks(part, rows.n_rows, chunk_size, threads)


def fold_chunks(
    work: Callable[[slice], BlockSum], n_rows: int, chunk_size: int, threads: int = 1
) -> SuffStats:
    """The statistics of all chunks, added in the blocks' fixed tree: each thread folds its
    own run of chunks as it goes (so only ~log2(n) subtrees are held), then the runs are
    joined in order."""

    def run(spans: list[slice]) -> BlockSum:
        acc = BlockSum()
        for span in spans:
            acc.extend(work(span))
        return acc

    slices = list(chunks(n_rows, chunk_size))
    if threads <= 1 or len(slices) == 1:
        return run(slices).result()
    bounds = np.linspace(0, len(slices), min(threads, len(slices)) + 1).astype(int)
    runs = [slices[a:b] for a, b in itertools.pairwise(bounds)]
    acc = BlockSum()
    for done in _executor(threads).map(run, runs):
        acc.extend(done)
    return acc.result()


def recentred(stats: SuffStats, strategy: CovarianceStrategy) -> np.ndarray | None:
    """New points to sum the statistics about, or None if those used were good enough.

    Second moments about an origin lose about eps·‖μ_k − origin‖² to cancellation. When a
    component's new mean lies more than √FAR_REACH of its new standard deviations from the
    origin (e.g. the first M-step of a cluster 1e9 from the data mean, which the start did
    not know was tight), its covariance is rounding noise: the caller repeats the pass with
    the same model, summing that component about its new mean — the first moments, which do
    not cancel, give it to full precision. Never needed on ordinary data.
    """
    n_k = stats.counts + 10 * EPS
    m = stats.first / n_k[:, None]
    k, d = m.shape
    variances = strategy.component_variances(unconstrained(stats, strategy), k, d)
    squares = m * m
    if variances.min() > 0:  # the usual case: each term as below, in fewer passes
        with np.errstate(over="ignore"):
            reach = (squares / variances).sum(axis=1)
        if reach.max() <= FAR_REACH:
            return None
    # a variance at or below 0 is rounding noise too (or a collapse, summed again once: it
    # is far, and summed about its mean, from the next iteration on)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        terms = np.where(m == 0, 0.0, squares / np.where(variances > 0, variances, 0.0))
    reach = terms.sum(axis=1)
    move = (stats.counts > 0.5) & ~(reach <= FAR_REACH)
    if not move.any():
        return None
    origins = stats.origins.copy()
    origins[move] += m[move]
    return origins


def unconstrained(stats: SuffStats, strategy: CovarianceStrategy) -> np.ndarray:
    """``strategy.spread`` of the statistics (the covariances before any model constraint),
    computed once per statistics object: ``recentred`` and the M-step both need it."""
    if stats.spread is None:
        n_k = stats.counts + 10 * EPS
        m = stats.first / n_k[:, None]
        stats.spread = strategy.spread(n_k, stats.counts, m, stats.second)
    return stats.spread


def stats_from_responsibilities(
    rows: Rows,
    responsibilities: Callable[[slice], np.ndarray],
    strategy: CovarianceStrategy,
    chunk_size: int,
) -> SuffStats:
    """Statistics of given responsibilities (k, c) per chunk, e.g. one-hot after k-means;
    summed about the shift, or again about the components' means where ``recentred`` says
    (so ``responsibilities`` must give the same values when called twice). They need not
    sum to 1 in a row (a start without its noise component's share, say)."""

    def part(span: slice, origins: np.ndarray | None) -> BlockSum:
        resp = responsibilities(span).astype(rows.dtype, copy=False)
        chunk = make_chunk(rows, span, strategy, resp.shape[0])
        return reduce_chunk_blocks(chunk, resp, strategy, origins=origins, normalised=False)

    stats = fold_chunks(lambda span: part(span, None), rows.n_rows, chunk_size)
    origins = recentred(stats, strategy)
    if origins is not None:
        stats = fold_chunks(lambda span: part(span, origins), rows.n_rows, chunk_size)
    return stats


@dataclass(frozen=True)
class MStep:
    """New parameters and the covariances before regularisation (for collapse checks)."""

    params: MixtureParams
    raw_covariances: np.ndarray


def mstep(
    stats: SuffStats,
    strategy: CovarianceStrategy,
    reg_covar: float | np.ndarray,
    previous: np.ndarray | None = None,
    noise: Noise | None = None,
) -> MStep:
    """π_k = N_k / n, μ_k = origin_k + S1_k / N_k, Σ_k from S2 (see the strategy), + reg_covar;
    ``previous`` covariances start a model whose M-step iterates (so EM stays monotone).
    With a noise component (``noise``, its box; ``stats.noise`` its count N_0) π_0 = N_0 / n
    and π_k = N_k / n, n = N_0 + Σ N_k; the Gaussians' statistics hold their own
    responsibilities only.

    The origin is the shift, or a far component's previous mean (``Model``). N_k gets 10·eps
    added, as in scikit-learn, so an empty component gives finite numbers.
    """
    n_k = stats.counts + 10 * EPS
    m = stats.first / n_k[:, None]
    spread = unconstrained(stats, strategy)
    raw = strategy.raw_covariances(n_k, stats.counts, m, stats.second, previous, spread)
    cov = strategy.regularise(raw, reg_covar)
    if noise is None:
        weights = n_k / n_k.sum()
        return MStep(MixtureParams(strategy.name, weights, stats.origins + m, cov), raw)
    assert stats.noise is not None, "a noise component needs its count"
    n = n_k.sum() + stats.noise
    params = MixtureParams(
        strategy.name, n_k / n, stats.origins + m, cov, noise=noise.with_weight(stats.noise / n)
    )
    return MStep(params, raw)
