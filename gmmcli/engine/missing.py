"""Rows with missing cells (NaN), under missing-at-random: the E-step scores a row by the
marginal density of its observed cells, and the M-step sums its conditional moments
E[z | x_o] and E[z zᵀ | x_o] (Ghahramani & Jordan 1994), exactly, for every covariance model.

A chunk's rows reach the kernel filled with the shift (z = 0 in a missing cell), so the one
product of ``stats`` gives every component's log density at the filled row x̄, and the M-step
product the moments of the filled rows. This module corrects both for the rows that have a
missing cell (``stats`` calls it from ``Model.log_joint`` and ``reduce_chunk_blocks``); a chunk
without one never comes here, so complete data run exactly as before.

* E-step. With Λ = Σ⁻¹, u = x̄ − μ and m a row's missing cells (r of them),

      log N(x_o | μ_o, Σ_oo) = log N(x̄ | μ, Σ) + ½ r log 2π − ½ log det Λ_mm + ½ vᵀ Λ_mm⁻¹ v,

  v = (Λ u)_m, since det Σ_oo = det Σ · det Λ_mm and Σ_oo⁻¹ = Λ_oo − Λ_om Λ_mm⁻¹ Λ_mo.
* M-step. The conditional mean of the missing cells is x̄_m + e with e = −Λ_mm⁻¹ v, and their
  conditional covariance is C = Λ_mm⁻¹ (the Schur complement Σ_mm − Σ_mo Σ_oo⁻¹ Σ_om). With
  ẑ = z̄ + e the row adds r·ẑ to S1 and r·(ẑ ẑᵀ + C) to the second moments instead of r·z̄ and
  r·z̄ z̄ᵀ: the product's sums get r·e and r·(z̄ eᵀ + e z̄ᵀ + e eᵀ + C) more, which the strategy
  turns into its features (``CovarianceStrategy.moments_of``).

Λ_mm is factored once per pattern of missing cells and component in each chunk (rows grouped
by their number of missing cells, patterns found once per chunk of data and kept); small
patterns by hand over arrays of patterns (numpy's batched LAPACK costs ~1 µs per 3 × 3
matrix), larger ones by LAPACK. Diagonal models (diag, spherical) need none of it: Λ_mm is
diagonal, e = μ_m − x̄_m and C = Σ_mm, so a missing cell's terms drop out of the density and
the M-step adds one product of the responsibilities with the missing-cell mask.

Row-component pairs whose responsibility is below ``NEGLIGIBLE`` × the component's weight add
nothing to its conditional moments (their share of any sum is below 1e-24 of it); the
densities are always exact. Every sum goes per block of rows, in the order of the rows, so
the answer does not depend on how rows are chunked.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from .chunk import Chunk, Rows
from .covariance import LOG_2PI, CovarianceStrategy
from .init import SUM_ROWS, DataSummary, column_range

if TYPE_CHECKING:
    from .stats import Model

BLOCK = 512  # stats.BLOCK (not imported: stats imports this module where it needs it)
NEGLIGIBLE = 2.0**-60  # ≈ 9e-19: responsibilities below this × π_k skip the M-step correction
HAND_FACTORED = 12  # patterns of at most this many missing cells are factored by hand
FACTOR_BATCH = 512  # patterns factored together (their arrays fit in the caches)
# Rows with missing cells from which a table's full models take the compiled kernels
# (``missing_compiled``, numba) instead of numpy's: they save ~1 µs per such row and
# iteration (d = 16, k = 8), and cost ~1–2 s per process to import numba and load them
# from numba's cache (their first compilation, once per installation, ~10 s).
COMPILED_FROM = 20_000
# The factors of every set of at most this many columns are computed once per pass for the
# compiled E-step (``Patterns.compiled_table``): a row reads those of its first missing
# cells (all of them if it misses at most as many) and factors only the rest. 696 sets at
# d = 16 (~300 KB at k = 8, in the caches); fewer columns if their table would pass
# TABLE_BYTES (read at random, it would miss the caches more than factoring again costs).
TABLED = 3
TABLE_BYTES = 2**20


def compiled_kernels(n_incomplete: int) -> ModuleType | None:
    """The compiled kernels for a table with this many incomplete rows: None below
    COMPILED_FROM, or when numba cannot be imported (then numpy does the same sums)."""
    return None if n_incomplete < COMPILED_FROM else _compiled()


@functools.cache
def _compiled() -> ModuleType | None:
    try:
        from . import missing_compiled
    except ImportError:
        return None
    return missing_compiled


def has_missing(x: np.ndarray) -> bool:
    """Whether an (n, d) array holds a NaN (one pass, no copy: min propagates NaN)."""
    return bool(x.size) and bool(np.isnan(x.min()))


def impute(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """x with each missing cell set to its column's value (``values``, e.g. the column means);
    x itself when it has no missing cell."""
    if not has_missing(x):
        return x
    return np.where(np.isnan(x), values, x)


def starting_rows(x: np.ndarray, means: np.ndarray, n_components: int) -> np.ndarray:
    """The rows the initialisers (k-means++, hc, random) start from, which must be complete:
    x itself without missing cells; else its complete rows, when there are at least
    max(10 k, k (d + 1)) of them (enough for k clusters and their covariances); else x with
    each missing cell set to its column's mean (``means``), which draws clusters together."""
    if not has_missing(x):
        return x
    complete = ~np.isnan(x).any(axis=1)
    k, d = n_components, x.shape[1]
    if complete.sum() >= max(10 * k, k * (d + 1)):
        return np.ascontiguousarray(x[complete])
    return impute(x, means)


def rows_of(
    x: np.ndarray,
    shift: np.ndarray,
    dtype: np.dtype | type = np.float64,
    cache: bool = False,
    weights: np.ndarray | None = None,
) -> Rows:
    """The kernel's ``Rows`` of x (with the rows' ``weights``, if any): ``IncompleteRows``
    when x has a missing cell."""
    if has_missing(x):
        return IncompleteRows(x, shift, dtype, cache, weights)
    return Rows(x, shift, dtype, cache, weights)


@dataclass(frozen=True)
class Group:
    """The incomplete rows of a chunk that miss r cells: which, and where their cells are."""

    members: np.ndarray  # (n,) indices into Layout.rows, ascending
    columns: np.ndarray  # (n, r) each row's missing columns, ascending
    inverse: np.ndarray  # (n,) each row's pattern, in ``Patterns.tables[r]``
    start: int  # its first cell in the layout's cells (n·r of them, row by row)

    @property
    def size(self) -> int:
        return int(self.columns.shape[1])

    @property
    def cells(self) -> slice:
        return slice(self.start, self.start + self.columns.size)


@dataclass(frozen=True)
class Layout:
    """Where a chunk's rows miss cells (data only: found once per chunk of data)."""

    rows: np.ndarray  # (m,) positions in the chunk of the rows with a missing cell
    mask: np.ndarray  # (m, d) bool: their missing cells
    blocks: np.ndarray  # (m,) the block (of BLOCK rows) of the chunk each row is in
    n_blocks: int
    spans: tuple[tuple[int, int], ...]  # the runs of ``rows`` in one block each
    groups: tuple[Group, ...]  # by number of missing cells
    cell_rows: np.ndarray  # (cells,) each missing cell's row (index into ``rows``), and
    cell_columns: np.ndarray  # its column: the groups' cells one after the other
    by_column: tuple[np.ndarray, ...]  # the cells of each column
    # row by row (for ``missing_compiled``): each row's first missing cell in ``row_columns``
    # (m + 1,), their columns (cells,), and each row's first slot of packed factors (m + 1,)
    row_starts: np.ndarray
    row_columns: np.ndarray
    tri_starts: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray, patterns: np.ndarray) -> Layout | None:
        """The layout of a chunk whose missing cells are ``mask`` (c, d), each row's pattern
        ``patterns`` (c,) (``Patterns.index``); None if no row misses a cell."""
        rows = np.flatnonzero(mask.any(axis=1))
        if not rows.size:
            return None
        n_rows = mask.shape[0]
        sub = mask[rows]
        d = sub.shape[1]
        counts = sub.sum(axis=1)
        groups, cell_rows, cell_columns = [], [], []
        start = 0
        for r in np.unique(counts):
            members = np.flatnonzero(counts == r)
            columns = np.nonzero(sub[members])[1].reshape(members.size, int(r))
            groups.append(Group(members, columns, patterns[rows[members]], start))
            cell_rows.append(np.repeat(members, int(r)))
            cell_columns.append(columns.ravel())
            start += columns.size
        cell_rows_all = np.concatenate(cell_rows)
        cell_columns_all = np.concatenate(cell_columns)
        order = np.argsort(cell_columns_all, kind="stable")
        bounds = np.searchsorted(cell_columns_all[order], np.arange(d + 1))
        by_column = tuple(order[bounds[b] : bounds[b + 1]] for b in range(d))
        blocks = rows // BLOCK
        edges = [0, *(np.flatnonzero(np.diff(blocks)) + 1).tolist(), rows.size]
        row_starts = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts, out=row_starts[1:])
        tri_starts = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts * (counts + 1) // 2, out=tri_starts[1:])
        return cls(
            rows,
            sub,
            blocks,
            -(-n_rows // BLOCK),
            tuple(itertools.pairwise(edges)),
            tuple(groups),
            cell_rows_all,
            cell_columns_all,
            by_column,
            row_starts,
            np.nonzero(sub)[1].astype(np.int64),
            tri_starts,
        )


class Patterns:
    """The patterns of missing cells in some rows, by their number r of missing cells
    (``tables[r]``: (p, r) columns), each row's pattern (``index``, −1 for a complete row),
    and per E-step model the factors of every pattern (``factors``): computed once per pass
    over these rows, whatever chunk first needs them."""

    def __init__(self, missing: np.ndarray) -> None:
        n, d = missing.shape
        counts = missing.sum(axis=1)
        self.index = np.full(n, -1, dtype=np.int64)
        self.tables: dict[int, np.ndarray] = {}
        for r in np.unique(counts[counts > 0]):
            rows = np.flatnonzero(counts == r)
            columns = np.nonzero(missing[rows])[1].reshape(rows.size, int(r))
            if d <= 62:  # one integer per pattern: the bits of its columns
                keys = (np.int64(1) << columns.astype(np.int64)).sum(axis=1)
                _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
                table = columns[first]
            else:
                table, inverse = np.unique(columns, axis=0, return_inverse=True)
            self.tables[int(r)] = table
            self.index[rows] = inverse.reshape(-1)
        self._forget()

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[np.ndarray, bytes] | None = None
        self._factors: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._table_key: np.ndarray | None = None
        self._table: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def compiled_table(
        self, prec_chol: np.ndarray, kernels: ModuleType, lam: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For ``missing_compiled``: the factor L of Λ_mm and log det Λ_mm of every set of
        at most P ≤ TABLED columns (P the most whose table fits TABLE_BYTES), for every
        component (``lam``, the compiled kernels' precisions), after where each size's
        sets start in it and the binomials that rank them (``missing_compiled.factor_table``):
        computed once per pass, by the first chunk that needs it, for the model whose
        ``prec_chol`` this is."""
        d, width = lam.shape[0], lam.shape[2]
        tabled = 0
        for size in range(1, min(TABLED, d) + 1):
            sets = sum(math.comb(d, s) for s in range(1, size + 1))
            if sets * (size * (size + 1) // 2 + 1) * width * 8 > TABLE_BYTES:
                break
            tabled = size
        with self._lock:
            if self._table_key is not prec_chol:
                self._table = kernels.factor_table(lam, tabled)
                self._table_key = prec_chol
            assert self._table is not None
            return self._table

    def __getstate__(self) -> dict:
        """The patterns without the lock and the factors (a Dask worker may send the rows
        that hold them to another)."""
        return {"index": self.index, "tables": self.tables}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._forget()

    def factors(
        self, prec_chol: np.ndarray, precisions: np.ndarray, components: np.ndarray
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """r → (C = Λ_mm⁻¹ (p, s, r, r), log det Λ_mm (p, s)) for every pattern and the
        components' precisions (s, d, d), of the model whose ``prec_chol`` this is."""
        with self._lock:
            key = self._key
            if key is None or key[0] is not prec_chol or key[1] != components.tobytes():
                self._factors = {r: _inverse(precisions, t) for r, t in self.tables.items()}
                self._key = (prec_chol, components.tobytes())
            return self._factors


class IncompleteRows(Rows):
    """``Rows`` with missing cells (NaN in x): the kernel sees each row filled with the shift
    (z = 0 in a missing cell), and every chunk with a missing cell carries its ``ChunkGaps``."""

    incomplete = True

    def __init__(
        self,
        x: np.ndarray,
        shift: np.ndarray,
        dtype: np.dtype | type = np.float64,
        cache: bool = False,
        weights: np.ndarray | None = None,
    ) -> None:
        self.missing = np.isnan(x)
        super().__init__(np.where(self.missing, shift, x), shift, dtype, cache, weights)
        self.patterns = Patterns(self.missing)
        self._layouts: dict[tuple[int, int], Layout | None] = {}
        self.n_incomplete = int((self.patterns.index >= 0).sum())

    def layout(self, rows: slice) -> Layout | None:
        """The chunk's layout, found once and kept for the later passes."""
        key = (rows.start, rows.stop)
        if key not in self._layouts:
            patterns = self.patterns.index[rows]
            self._layouts[key] = Layout.of(self.missing[rows], patterns)
        return self._layouts[key]

    def chunk(self, rows: slice, n_extra: int) -> Chunk:
        chunk = super().chunk(rows, n_extra)
        layout = self.layout(rows)
        if layout is not None:
            chunk.gaps = ChunkGaps(layout, self.patterns, compiled_kernels(self.n_incomplete))
        return chunk


@dataclass
class ChunkGaps:
    """A chunk's missing cells, and what its E-step found for them (for its M-step): for
    the components ``solved`` (all of them but for a diagonal model), per group of rows
    y = W v (r, n, s), W = L⁻¹ the inverse Cholesky factor of Λ_mm = L Lᵀ, and per
    pattern W itself (``factors``)."""

    layout: Layout
    patterns: Patterns
    kernels: ModuleType | None = None  # ``missing_compiled``, for a large table
    model: Model | None = None  # the E-step's model
    solved: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    y: list[np.ndarray] = field(default_factory=list)
    factors: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    zt: np.ndarray | None = None  # (d, c) the chunk's rows z̄ = x̄ − shift, as the E-step saw them
    # whether the compiled E-step ran, and the precisions it took (``missing_compiled``)
    compiled: bool = False
    lam: np.ndarray | None = None
    lam_means: np.ndarray | None = None

    @functools.cached_property
    def zbar(self) -> np.ndarray:
        """(m, d) the incomplete rows' z̄, in float64."""
        assert self.zt is not None
        return np.ascontiguousarray(self.zt.T[self.layout.rows], dtype=np.float64)

    def rows_args(self) -> tuple[np.ndarray, ...]:
        """The compiled kernels' first arguments: the chunk's rows (``zt``), which of them
        are incomplete, and their missing cells."""
        layout = self.layout
        return (self.zt, layout.rows, layout.row_starts, layout.row_columns)

    def position(self, k: int) -> np.ndarray:
        """(k,) where each component is among ``solved`` (−1 if not)."""
        position = np.full(k, -1, dtype=np.int64)
        position[self.solved] = np.arange(self.solved.size)
        return position

    def conditional(
        self, g: int, rows: np.ndarray, at: np.ndarray, covariance: bool = True
    ) -> tuple[list[np.ndarray], dict[tuple[int, int], np.ndarray]]:
        """For rows (indices into group g) and solved components ``at``, pairwise: the
        shift of the missing cells to their conditional means, e = −Wᵀ y (r arrays), and
        (with ``covariance``) their conditional covariance C = Wᵀ W (entries (a, b),
        a ≤ b)."""
        group = self.layout.groups[g]
        r = group.size
        w = self.factors[r][0][:, group.inverse[rows], at]  # (r(r+1)/2, len)
        y = self.y[g][:, rows, at]
        e = [-sum(w[_slot(i, a)] * y[i] for i in range(a, r)) for a in range(r)]
        if not covariance:
            return e, {}
        cov = {
            (a, b): sum(w[_slot(i, a)] * w[_slot(i, b)] for i in range(b, r))
            for a in range(r)
            for b in range(a, r)
        }
        return e, cov


def _slot(i: int, j: int) -> int:
    """Where entry (i, j), j ≤ i, of a lower-triangular matrix is in its packed rows."""
    return i * (i + 1) // 2 + j


def _fills(model: Model) -> np.ndarray:
    """(k,) bool: the components whose E-step fills a missing cell with the shift (the
    others, far from it, are computed about their own mean: ``stats.Model``)."""
    return np.all(model.origins == model.shift, axis=1)


def _row_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (n, p) @ b (p, q) with each row computed as whatever the other rows: BLAS does so
    (measured; not for the columns of a @ bᵀ, which depend on how many there are) except
    for a single row, which goes another way (gemv) and is given a second, empty row."""
    if a.shape[0] != 1:
        return a @ b
    return (np.concatenate([a, np.zeros_like(a)]) @ b)[:1]


# -- the E-step ------------------------------------------------------------------------------
def marginal_log_joint(model: Model, chunk: Chunk, out: np.ndarray) -> None:
    """Turn ``out`` (k, c), log π_k N(x̄_i | μ_k, Σ_k) of the filled rows, into log π_k plus
    the log marginal density of each row's observed cells, in place; keep what the M-step
    needs in ``chunk.gaps``."""
    gaps = chunk.gaps
    layout = gaps.layout
    strategy = model.strategy
    k, d = model.params.means.shape
    precisions = strategy.precisions(model.prec_chol, k, d)
    near = _fills(model)
    gaps.model = model
    gaps.zt = chunk.zt
    gaps.compiled = gaps.kernels is not None and not strategy.is_diagonal and bool(near.all())
    if gaps.compiled:
        _compiled_marginal(gaps, model, precisions, out)
        return
    correction = np.zeros((layout.rows.size, k))
    if strategy.is_diagonal:  # Λ_mm is diagonal: the missing cells' terms drop out
        correction[:, near] = _diagonal_correction(model, layout, precisions[near], near)
        solve = np.flatnonzero(~near)
    else:
        solve = np.arange(k)
    if solve.size:
        v = _projections(model, chunk, precisions, solve)
        correction[:, solve] = _solve(gaps, precisions[solve], v, solve)
    for c in np.flatnonzero(~near):  # filled with its own mean instead of the shift
        out[c, layout.rows] = _far_log_joint(model, chunk, int(c))
    with np.errstate(invalid="ignore"):
        out[:, layout.rows] += correction.T.astype(out.dtype, copy=False)


def _compiled_marginal(
    gaps: ChunkGaps, model: Model, precisions: np.ndarray, out: np.ndarray
) -> None:
    """``_projections`` and ``_solve`` by the compiled kernel, row by row (every component
    fills its missing cells with the shift), added to ``out`` (k, c) in place; the
    precisions kept in ``gaps`` for the M-step."""
    k, d = precisions.shape[0], precisions.shape[1]
    lanes = gaps.kernels.LANES  # the kernel takes components a multiple of LANES at a time
    width = -(-k // lanes) * lanes
    lam = np.empty((d, d, width))
    lam[:, :, :k] = precisions.transpose(2, 1, 0)
    lam[:, :, k:] = np.eye(d)[:, :, None]  # padding: any positive definite matrix
    lam_means = np.zeros((d, width))
    lam_means[:, :k] = np.einsum("kab,kb->ak", precisions, model.params.means - model.shift)
    gaps.lam, gaps.lam_means = lam, lam_means
    gaps.solved = np.arange(k)
    table = gaps.patterns.compiled_table(model.prec_chol, gaps.kernels, lam)
    gaps.kernels.marginal_terms(*gaps.rows_args(), lam, lam_means, *table, out)


def _diagonal_correction(
    model: Model, layout: Layout, precisions: np.ndarray, components: np.ndarray
) -> np.ndarray:
    """(m, s) for a diagonal model: each missing cell's term of log N(x̄ | μ, Σ) taken out,
    −(½ log λ_a − ½ log 2π − ½ λ_a m_a²) with m = μ − shift (z̄_a = 0 there)."""
    lam = np.diagonal(precisions, axis1=1, axis2=2)
    m = (model.params.means - model.shift)[components]
    with np.errstate(divide="ignore"):
        terms = 0.5 * LOG_2PI - 0.5 * np.log(lam) + 0.5 * lam * m * m
    return _row_product(layout.mask.astype(np.float64), terms.T)


def _projections(
    model: Model, chunk: Chunk, precisions: np.ndarray, components: np.ndarray
) -> np.ndarray:
    """(cells, s) v = (Λ_k u_i)_a for each missing cell (i, a) and component, u = x̄ − μ_k
    with x̄ filled as the E-step fills it for component k: with the shift (one product per
    column, over the rows missing it, for all such components), or with a far component's
    own mean (u = 0 in its missing cells, so nothing cancels)."""
    gaps = chunk.gaps
    layout = gaps.layout
    m, d = layout.mask.shape
    out = np.empty((layout.cell_rows.size, components.size))
    near = _fills(model)[components]
    if near.any():
        shared = components[near]
        zaug = np.empty((m, d + 1))
        zaug[:, :d] = gaps.zbar
        zaug[:, d] = 1.0
        lam = precisions[shared]  # (s, d, d), symmetric
        weights = np.empty((d + 1, d, shared.size))
        weights[:d] = lam.transpose(1, 2, 0)
        weights[d] = -np.einsum("kab,kb->ak", lam, model.params.means[shared] - model.shift)
        values = out if near.all() else np.empty((layout.cell_rows.size, shared.size))
        for b, cells in enumerate(layout.by_column):
            if cells.size:
                values[cells] = _row_product(zaug[layout.cell_rows[cells]], weights[:, b])
        if values is not out:
            out[:, near] = values
    for i in np.flatnonzero(~near):
        c = components[i]
        u = np.where(layout.mask, 0.0, chunk.x[layout.rows] - model.params.means[c])
        y = _row_product(u, precisions[c])
        out[:, i] = y[layout.cell_rows, layout.cell_columns]
    return out


def _far_log_joint(model: Model, chunk: Chunk, c: int) -> np.ndarray:
    """log π_c N(x̄ | μ_c, Σ_c) of the incomplete rows filled with μ_c, about μ_c."""
    layout = chunk.gaps.layout
    u = np.where(layout.mask, 0.0, chunk.x[layout.rows] - model.params.means[c])
    features = _features(model.strategy, u.T)
    model.row_terms(features)  # a feature that depends on the model (tied's quadratic)
    i = int(np.flatnonzero(model.far == c)[0])
    return np.einsum("q,qm->m", model.far_coefficients[i], features) + model.far_constants[i]


def _features(strategy: CovarianceStrategy, z: np.ndarray) -> np.ndarray:
    """The strategy's features (q, n) of rows z (d, n), in float64."""
    d = z.shape[0]
    features = np.empty((d + strategy.n_extra(d), z.shape[1]))
    features[:d] = z
    with np.errstate(over="ignore"):
        strategy.fill_features(Chunk(features, d))
    return features


def _solve(
    gaps: ChunkGaps, precisions: np.ndarray, v: np.ndarray, components: np.ndarray
) -> np.ndarray:
    """(m, s): ½ r log 2π − ½ log det Λ_mm + ½ vᵀ Λ_mm⁻¹ v for each row and component, from
    each missing cell's v (cells, s): with Λ_mm⁻¹ = Wᵀ W, vᵀ Λ_mm⁻¹ v = ‖y‖², y = W v,
    kept in ``gaps`` for the M-step (by slot, so that every operation runs over whole
    arrays of rows and components)."""
    layout = gaps.layout
    s = components.size
    out = np.empty((layout.rows.size, s))
    gaps.solved = components
    gaps.y = []
    gaps.factors = gaps.patterns.factors(gaps.model.prec_chol, precisions, components)
    for group in layout.groups:
        r, n = group.size, group.members.size
        packed, log_det = gaps.factors[r]
        w = packed[:, group.inverse]  # (r(r+1)/2, n, s)
        vg = v[group.cells].reshape(n, r, s).transpose(1, 0, 2).copy()  # (r, n, s)
        y = np.empty((r, n, s))
        quadratic = np.zeros((n, s))
        for i in range(r):
            np.multiply(w[_slot(i, 0)], vg[0], out=y[i])
            for j in range(1, i + 1):
                y[i] += w[_slot(i, j)] * vg[j]
            quadratic += y[i] * y[i]
        with np.errstate(invalid="ignore"):
            out[group.members] = 0.5 * (r * LOG_2PI - log_det[group.inverse] + quadratic)
        gaps.y.append(y)
    return out


def _inverse(precisions: np.ndarray, patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W = L⁻¹ with Λ_mm = L Lᵀ for every pattern (p, r) of missing cells and component,
    packed by rows ((r(r+1)/2, p, s): entry (i, j), j ≤ i, at ``_slot(i, j)``), and
    log det Λ_mm (p, s). By hand (over arrays of patterns and components) for up to
    HAND_FACTORED missing cells, else LAPACK. A Λ_mm that is not positive definite
    (impossible for a positive definite Λ, but for rounding) gives NaN."""
    p, r = patterns.shape
    s = precisions.shape[0]
    packed = np.empty((r * (r + 1) // 2, p, s))
    if r > HAND_FACTORED:  # by r alone, so that the bits never depend on which rows share a pass
        blocks = precisions[:, patterns[:, :, None], patterns[:, None, :]]  # (s, p, r, r)
        with np.errstate(all="ignore"):
            try:
                lower = np.linalg.cholesky(blocks)
                w_full = np.linalg.inv(lower)
            except np.linalg.LinAlgError:
                lower = w_full = np.full_like(blocks, np.nan)
            log_det = 2.0 * np.log(np.diagonal(lower, axis1=2, axis2=3)).sum(axis=2)
        for i in range(r):
            for j in range(i + 1):
                packed[_slot(i, j)] = w_full[:, :, i, j].T
        return packed, log_det.T.copy()
    by_entry = np.ascontiguousarray(precisions.transpose(1, 2, 0))  # (d, d, s)
    log_det = np.empty((p, s))
    for start in range(0, p, FACTOR_BATCH):  # a batch's arrays stay in the caches
        batch = slice(start, min(start + FACTOR_BATCH, p))
        _factor_by_hand(by_entry, patterns[batch], packed[:, batch], log_det[batch])
    return packed, log_det


def _factor_by_hand(
    by_entry: np.ndarray, patterns: np.ndarray, packed: np.ndarray, log_det: np.ndarray
) -> None:
    """``_inverse`` by hand for some patterns (p, r): W into ``packed`` (r(r+1)/2, p, s),
    log det Λ_mm into ``log_det`` (p, s); ``by_entry`` (d, d, s) holds every Λ_k."""
    r = patterns.shape[1]
    lower: dict[tuple[int, int], np.ndarray] = {}
    log_det[:] = 0.0
    with np.errstate(all="ignore"):
        for j in range(r):
            diagonal = by_entry[patterns[:, j], patterns[:, j]]  # (p, s), a copy
            for t in range(j):
                diagonal -= lower[j, t] * lower[j, t]
            lower[j, j] = np.sqrt(diagonal)
            log_det += np.log(diagonal)
            for i in range(j + 1, r):
                acc = by_entry[patterns[:, i], patterns[:, j]]
                for t in range(j):
                    acc -= lower[i, t] * lower[j, t]
                lower[i, j] = acc / lower[j, j]
        for i in range(r):  # W = L⁻¹, lower triangular, row by row
            packed[_slot(i, i)] = 1.0 / lower[i, i]
            for j in range(i - 1, -1, -1):
                acc = lower[i, j] * packed[_slot(j, j)]
                for t in range(j + 1, i):
                    acc += lower[i, t] * packed[_slot(t, j)]
                packed[_slot(i, j)] = -acc * packed[_slot(i, i)]


# -- the M-step ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Extra:
    """What a chunk's incomplete rows add to its per-block statistics."""

    counts: np.ndarray  # (blocks, k)
    moments: np.ndarray  # (blocks, k, q)


def conditional_moments(
    chunk: Chunk, resp: np.ndarray, origins: np.ndarray | None
) -> tuple[np.ndarray, Extra]:
    """The responsibilities for the statistics product, and what to add per block to its
    counts and moments so that the incomplete rows count with their conditional moments.

    ``origins`` (k, d) are where each component's statistics are summed. About the shift,
    the product of the filled rows is corrected; about another point (``stats.recentred``,
    or a far component) the incomplete rows leave the product of that component and are
    summed here in full, from their conditional-mean rows.
    """
    gaps = chunk.gaps
    model = gaps.model
    if model is None:
        raise ValueError("rows with missing cells need an E-step before their statistics")
    layout = gaps.layout
    strategy = model.strategy
    k, d = model.params.means.shape
    if origins is None:
        origins = np.broadcast_to(chunk.shift, (k, d))
    nb = layout.n_blocks
    counts = np.zeros((nb, k))
    moments = np.zeros((nb, k, d + strategy.n_second(d)))  # per component, even if S2 pools
    corrected = np.all(origins == chunk.shift, axis=1) & _fills(model)
    if gaps.compiled:  # the kernel reads the responsibilities where they are
        _compiled_moments(gaps, model, resp, corrected, moments)
    else:
        sub = np.asarray(resp[:, layout.rows], dtype=np.float64).T  # (m, k)
        moments_by = _diagonal_moments if strategy.is_diagonal else _general_moments
        second = moments_by(gaps, model, sub, corrected, moments)
        moments[:, :, d:] += strategy.moments_of(second)
    for c in np.flatnonzero(~corrected):
        column = np.asarray(resp[c, layout.rows], dtype=np.float64)
        counts[:, c] = _per_block_sum(column, layout)
        moments[:, c] = _full_moments(chunk, model, column, int(c), origins[c])
    if not corrected.all():
        resp = resp.copy()
        resp[np.ix_(~corrected, layout.rows)] = 0.0
    return resp, Extra(counts, moments)


def _per_block_sum(values: np.ndarray, layout: Layout) -> np.ndarray:
    """(blocks, ...) sums over the incomplete rows (axis 0 of ``values``) of each block, in
    the order of the rows."""
    out = np.zeros((layout.n_blocks, *values.shape[1:]))
    for start, stop in layout.spans:
        out[layout.blocks[start]] = values[start:stop].sum(axis=0)
    return out


def _diagonal_moments(
    gaps: ChunkGaps, model: Model, sub: np.ndarray, corrected: np.ndarray, moments: np.ndarray
) -> np.ndarray:
    """A diagonal model: a missing cell's conditional mean is μ_a (e = m_a, as z̄_a = 0) and
    its conditional variance σ²_a, so with W = Σ_i r_ik [cell a missing] per block, S1 gets
    W m and the squares W (m² + σ²). Returns the (blocks, k, d, d) second moments added."""
    layout = gaps.layout
    k, d = model.params.means.shape
    mask = layout.mask.astype(np.float64)
    w = np.zeros((layout.n_blocks, k, d))
    weights = np.where(corrected, sub, 0.0)
    for start, stop in layout.spans:
        w[layout.blocks[start]] = weights[start:stop].T @ mask[start:stop]
    m = model.params.means - model.shift
    full = model.strategy.to_full(model.params.covariances, k, d)
    variances = np.diagonal(full, axis1=1, axis2=2)
    moments[:, :, :d] += w * m
    second = np.zeros((layout.n_blocks, k, d, d))
    index = np.arange(d)
    second[:, :, index, index] = w * (m * m + variances)
    return second


def _general_moments(
    gaps: ChunkGaps, model: Model, sub: np.ndarray, corrected: np.ndarray, moments: np.ndarray
) -> np.ndarray:
    """S1 += Σ r e and the second moments += Σ r (z̄ eᵀ + e z̄ᵀ + e eᵀ + C), per block, over
    the row-component pairs of the ``corrected`` components that matter (``NEGLIGIBLE``).
    Returns the (blocks, k, d, d) second moments added."""
    from scipy.sparse import coo_array

    layout = gaps.layout
    nb = layout.n_blocks
    k, d = model.params.means.shape
    m = layout.rows.size
    position = gaps.position(k)
    active = (sub > NEGLIGIBLE * model.params.weights) & corrected
    found = [np.nonzero(active[group.members]) for group in layout.groups]
    sizes = [
        (ia.size * g.size, ia.size * g.size * (g.size + 1) // 2)
        for g, (ia, _) in zip(layout.groups, found, strict=True)
    ]
    cell = np.empty(sum(a for a, _ in sizes), dtype=np.int64)
    source = np.empty(cell.size, dtype=np.int64)
    we = np.empty(cell.size)
    pair = np.empty(sum(b for _, b in sizes), dtype=np.int64)
    square = np.empty(pair.size)
    at_cell = at_pair = 0
    for g, (group, (ia, ka)) in enumerate(zip(layout.groups, found, strict=True)):
        if not ia.size:
            continue
        r, count = group.size, ia.size
        row = group.members[ia]
        w = sub[row, ka]
        e, cov = gaps.conditional(g, ia, position[ka])
        columns = group.columns[ia]
        base = (layout.blocks[row] * k + ka) * d
        # slot by slot: each missing cell's e (S1 and e z̄ᵀ) and each pair a ≤ b (e eᵀ + C)
        for a in range(r):
            span = slice(at_cell + a * count, at_cell + (a + 1) * count)
            cell[span] = base + columns[:, a]
            source[span] = row
            np.multiply(w, e[a], out=we[span])
        at_cell += r * count
        for a in range(r):
            for b in range(a, r):
                span = slice(at_pair, at_pair + count)
                pair[span] = (base + columns[:, a]) * d + columns[:, b]
                square[span] = w * (e[a] * e[b] + cov[a, b])
                at_pair += count
    size = nb * k * d
    first = np.bincount(cell, weights=we, minlength=size)
    squares = np.bincount(pair, weights=square, minlength=size * d).reshape(nb, k, d, d)
    upper_sums = np.triu(squares, 1)  # a < b, as summed: mirror them onto b > a
    squares += np.swapaxes(upper_sums, 2, 3)
    cross = np.zeros((size, d))
    if cell.size:  # Σ r e z̄ᵀ, a row per (block, component, missing cell), in the rows' order
        cross = coo_array((we, (cell, source)), shape=(size, m)) @ gaps.zbar
    moments[:, :, :d] += first.reshape(nb, k, d)
    cross = cross.reshape(nb, k, d, d)
    return cross + np.swapaxes(cross, 2, 3) + squares


def _compiled_moments(
    gaps: ChunkGaps, model: Model, resp: np.ndarray, corrected: np.ndarray, moments: np.ndarray
) -> None:
    """``_general_moments`` by the compiled kernel, row by row, from the chunk's
    responsibilities ``resp`` (k, c), added to ``moments`` (blocks, k, q) in place: the
    models with full precisions, whose statistics are the pairs a ≤ b of each component's
    (``moments_of``: full, tied, the families), which the kernel writes."""
    assert not model.strategy.is_diagonal, "the compiled kernels serve full precisions"
    floors = np.where(corrected, NEGLIGIBLE * model.params.weights, np.inf)
    gaps.kernels.conditional_moments(
        *gaps.rows_args(), gaps.lam, gaps.lam_means, resp, floors, gaps.layout.blocks, moments
    )


def _compiled_conditionals(gaps: ChunkGaps, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Under component c: each missing cell's shift to its conditional mean (cells, row by
    row), and each incomplete row's conditional covariance (m, d, d), zero outside its
    missing cells."""
    layout = gaps.layout
    shifts = np.empty(layout.row_columns.size)
    packed = np.empty(int(layout.tri_starts[-1]))
    gaps.kernels.conditionals(
        *gaps.rows_args(),
        layout.tri_starts,
        gaps.lam,
        gaps.lam_means,
        c,
        shifts,
        packed,
    )
    m, d = layout.mask.shape
    counts = np.diff(layout.row_starts)
    row = np.repeat(np.arange(m), counts * (counts + 1) // 2)
    slot = np.arange(packed.size) - np.repeat(layout.tri_starts[:-1], counts * (counts + 1) // 2)
    p = ((np.sqrt(8 * slot + 1) - 1) // 2).astype(np.int64)  # slot = p(p + 1)/2 + q, q ≤ p
    q = slot - p * (p + 1) // 2
    first_cell = layout.row_starts[row]
    a, b = layout.row_columns[first_cell + p], layout.row_columns[first_cell + q]
    cov = np.zeros((m, d, d))
    cov[row, a, b] = packed
    cov[row, b, a] = packed
    return shifts, cov


def best_filled(chunk: Chunk, resp: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Rows ``keep`` of the chunk, in float64, with each missing cell set to its conditional
    mean under the row's most responsible component (``resp`` (k, c), the E-step's): what
    the worst-explained rows offer as new means when a collapsed component is re-seeded
    (the shift there could lie between clusters). Only for the few rows kept, so it costs
    nothing per iteration."""
    gaps = chunk.gaps
    layout = gaps.layout
    model = gaps.model
    x = np.array(chunk.x[keep], dtype=np.float64)
    if model is None or not keep.size:
        return x
    at = np.minimum(np.searchsorted(layout.rows, keep), layout.rows.size - 1)
    hit = layout.rows[at] == keep
    which, targets = at[hit], np.flatnonzero(hit)  # incomplete rows, and where they go
    best = np.argmax(resp[:, keep[hit]], axis=0)
    if model.strategy.is_diagonal:
        x[targets] = np.where(layout.mask[which], model.params.means[best], x[targets])
    elif gaps.compiled:
        filled = x[targets]
        gaps.kernels.fill_best(
            *gaps.rows_args(),
            gaps.lam,
            gaps.lam_means,
            which,
            best,
            model.origins,
            filled,
        )
        x[targets] = filled
    else:
        position = gaps.position(model.params.means.shape[0])
        slot = np.full(layout.rows.size, -1)
        slot[which] = np.arange(which.size)
        for g, group in enumerate(layout.groups):
            members = np.flatnonzero(slot[group.members] >= 0)  # indices into the group
            if not members.size:
                continue
            j = slot[group.members[members]]
            shifts, _ = gaps.conditional(g, members, position[best[j]], False)
            for a in range(group.size):
                columns = group.columns[members, a]
                x[targets[j], columns] = model.origins[best[j], columns] + shifts[a]
    return x


def _full_moments(
    chunk: Chunk, model: Model, resp: np.ndarray, c: int, origin: np.ndarray
) -> np.ndarray:
    """(blocks, d + n_second) component c's whole statistics from the incomplete rows,
    about ``origin``: the rows filled with their conditional means ẑ, and the strategy's
    form (``moments_of``) of ẑ ẑᵀ plus the conditional covariances (not the chunk's
    features: a tied model's carry no second moments)."""
    gaps = chunk.gaps
    layout = gaps.layout
    strategy = model.strategy
    k, d = model.params.means.shape
    m = layout.rows.size
    x = chunk.x[layout.rows]
    second = np.zeros((m, d, d))
    if strategy.is_diagonal:  # the conditional mean is μ, the conditional variance σ²
        variances = np.diagonal(strategy.to_full(model.params.covariances, k, d)[c])
        filled = np.where(layout.mask, model.params.means[c], x)
        index = np.arange(d)
        second[:, index, index] = layout.mask * variances
    else:
        filled = np.where(layout.mask, model.origins[c], x)  # as its E-step filled them
    if not strategy.is_diagonal and gaps.compiled:
        shifts, second = _compiled_conditionals(gaps, c)
        rows = np.repeat(np.arange(m), np.diff(layout.row_starts))
        filled[rows, layout.row_columns] += shifts
    elif not strategy.is_diagonal:
        at = int(gaps.position(k)[c])
        for g, group in enumerate(layout.groups):
            rows = group.members
            e, cov = gaps.conditional(g, np.arange(rows.size), np.full(rows.size, at))
            for a in range(group.size):
                filled[rows, group.columns[:, a]] += e[a]
                for b in range(a, group.size):
                    second[rows, group.columns[:, a], group.columns[:, b]] = cov[a, b]
                    second[rows, group.columns[:, b], group.columns[:, a]] = cov[a, b]
    z = filled - origin
    with np.errstate(over="ignore", invalid="ignore"):
        second += z[:, :, None] * z[:, None, :]
        terms = np.concatenate([z.T, strategy.moments_of(second).T])  # (q, m): sums in
    return _per_block_sum((terms * resp).T, layout)  # the order the features' took


# -- the data summary ------------------------------------------------------------------------
@dataclass
class PairMoments:
    """Sums over some rows, for each pair of columns (a, b) over the rows in which both are
    observed: counts n_ab, S_ab = Σ (x_a − c_a) and G_ab = Σ (x_a − c_a)(x_b − c_b), about a
    point c; for a diagonal model the pairs (a, a) only, as (d,) arrays. Parts of the data
    add up exactly (``__add__`` moves one part's sums to the other's point), so every engine
    gets the same summary however the rows are split."""

    center: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    products: np.ndarray

    @classmethod
    def of(
        cls,
        x: np.ndarray,
        center: np.ndarray | None = None,
        diagonal: bool = False,
        weights: np.ndarray | None = None,
    ):
        """The sums of the rows of x about ``center`` (default: the mean of each column's
        observed cells, 0 where a column has none); with frequency ``weights`` (n,), each
        row counts w_i times (n_ab = Σ w_i, S_ab = Σ w_i (x_a − c_a), …)."""
        observed = ~np.isnan(x)
        if center is None:
            n, total = _observed_sums(x, observed, weights)
            center = np.where(n > 0, total / np.where(n > 0, n, 1.0), 0.0)
        w = np.where(observed, x - center, 0.0)
        ones = observed.astype(np.float64)
        left_w, left_ones = w, ones
        if weights is not None:
            left_w, left_ones = w * weights[:, None], ones * weights[:, None]
        if diagonal:
            return cls(
                center, left_ones.sum(axis=0), left_w.sum(axis=0), np.einsum("ij,ij->j", left_w, w)
            )
        return cls(center, left_ones.T @ ones, left_w.T @ ones, left_w.T @ w)

    @classmethod
    def complete(cls, n: int, mean: np.ndarray, m2: np.ndarray) -> PairMoments:
        """The sums of n complete rows with this mean and M2 (``sources.PartSummary``)."""
        return cls(mean, np.full(m2.shape, float(n)), np.zeros(m2.shape), m2)

    def moved(self, center: np.ndarray) -> PairMoments:
        """The same sums about another point."""
        delta = center - self.center
        if self.counts.ndim == 1:
            sums = self.sums - self.counts * delta
            products = self.products - 2.0 * delta * self.sums + self.counts * delta * delta
            return PairMoments(center, self.counts, sums, products)
        scaled = self.sums * delta[None, :]  # S_ab Δ_b
        products = self.products - scaled - scaled.T + self.counts * np.outer(delta, delta)
        return PairMoments(center, self.counts, self.sums - self.counts * delta[:, None], products)

    def __add__(self, other: PairMoments) -> PairMoments:
        other = other.moved(self.center)
        return PairMoments(
            self.center,
            self.counts + other.counts,
            self.sums + other.sums,
            self.products + other.products,
        )

    def column_counts(self) -> np.ndarray:
        return self.counts if self.counts.ndim == 1 else np.diagonal(self.counts).copy()

    def summary(
        self, single_valued: np.ndarray, box: tuple[np.ndarray, np.ndarray] | None = None
    ) -> DataSummary:
        """Each column's mean and variance over its observed cells; for a full summary the
        covariance M2_ab / √(n_a n_b), M2 the sums of products about the means over the rows
        where both cells are observed (the covariance of the rows with each missing cell set
        to its column's mean, rescaled so that each column keeps its observed variance:
        positive semi-definite, unlike the pairwise covariances)."""
        n = self.column_counts()
        empty = np.flatnonzero(n == 0)
        if empty.size:
            raise ValueError(f"column {empty[0] + 1} has no value (every cell is missing)")
        diagonal_sums = self.sums if self.sums.ndim == 1 else np.diagonal(self.sums)
        about = self.moved(self.center + diagonal_sums / n)
        if about.products.ndim == 1:
            return DataSummary.from_variances(about.center, about.products / n, single_valued, box)
        variances = np.diagonal(about.products) / n
        scale = np.sqrt(n)
        cov = about.products / np.outer(scale, scale)
        cov = 0.5 * (cov + cov.T)
        cov[np.diag_indices_from(cov)] = variances
        return DataSummary.from_covariance(about.center, cov, single_valued, box)


def summarise(
    x: np.ndarray, diagonal: bool = False, weights: np.ndarray | None = None
) -> DataSummary:
    """``init.summarise`` of rows with missing cells: column means and variances over the
    observed cells, the covariance as ``PairMoments.summary`` (two passes, in steps of
    SUM_ROWS rows). Also the summary of rows with frequency ``weights`` (complete or not):
    weighted sums, Σ w in ``weight_total``, the rows of weight 0 left out."""
    n, d = x.shape
    counts = np.zeros(d)
    total = np.zeros(d)
    for rows in _steps(n):
        w = None if weights is None else weights[rows]
        part_counts, part_total = _observed_sums(x[rows], ~np.isnan(x[rows]), w)
        counts += part_counts
        total += part_total
    center = np.where(counts > 0, total / np.where(counts > 0, counts, 1.0), 0.0)
    moments = None
    for rows in _steps(n):
        w = None if weights is None else weights[rows]
        part = PairMoments.of(x[rows], center, diagonal, w)
        moments = part if moments is None else moments + part
    assert moments is not None
    if weights is None:
        low, high = column_range(x)
        return moments.summary(low == high, (low, high))
    low, high = column_range(x[weights > 0])
    summary = moments.summary(low == high, (low, high))
    return dataclasses.replace(summary, weight_total=float(weights.sum()))


def _observed_sums(
    x: np.ndarray, observed: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(d,) each column's count of observed cells and their sum (both weighted by the rows'
    ``weights``, if any)."""
    values = np.where(observed, x, 0.0)
    if weights is None:
        return observed.sum(axis=0).astype(np.float64), values.sum(axis=0)
    return weights @ observed, weights @ values


def _steps(n: int) -> list[slice]:
    return [slice(a, min(a + SUM_ROWS, n)) for a in range(0, max(n, 1), SUM_ROWS)]
