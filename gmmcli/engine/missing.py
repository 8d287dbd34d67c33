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

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .chunk import Chunk, Rows
from .covariance import LOG_2PI, CovarianceStrategy
from .init import SUM_ROWS, DataSummary, column_range

if TYPE_CHECKING:
    from .stats import Model

BLOCK = 512  # stats.BLOCK (not imported: stats imports this module where it needs it)
NEGLIGIBLE = 2.0**-80  # ≈ 8e-25: responsibilities below this × π_k skip the M-step correction
HAND_FACTORED = 4  # patterns of at most this many missing cells are factored by hand


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
    x: np.ndarray, shift: np.ndarray, dtype: np.dtype | type = np.float64, cache: bool = False
) -> Rows:
    """The kernel's ``Rows`` of x: ``IncompleteRows`` when x has a missing cell."""
    if has_missing(x):
        return IncompleteRows(x, shift, dtype, cache)
    return Rows(x, shift, dtype, cache)


@dataclass(frozen=True)
class Group:
    """The incomplete rows of a chunk that miss r cells: where they are and which cells."""

    members: np.ndarray  # (n,) indices into Layout.rows, ascending
    columns: np.ndarray  # (n, r) each row's missing columns, ascending
    patterns: np.ndarray  # (p, r) the distinct rows of ``columns``
    inverse: np.ndarray  # (n,) each row's pattern
    flat: np.ndarray  # (n, r) columns·m + members: each missing cell in a (d, m) array

    @property
    def size(self) -> int:
        return int(self.columns.shape[1])


@dataclass(frozen=True)
class Layout:
    """Where a chunk's rows miss cells (data only: computed once per chunk of data)."""

    rows: np.ndarray  # (m,) positions in the chunk of the rows with a missing cell
    mask: np.ndarray  # (m, d) bool: the missing cells of those rows
    blocks: np.ndarray  # (m,) the block (of BLOCK rows) of the chunk each row is in
    n_blocks: int
    groups: tuple[Group, ...]
    spans: tuple[tuple[int, int], ...]  # the runs of ``rows`` in one block each

    @classmethod
    def of(cls, mask: np.ndarray, n_rows: int) -> Layout | None:
        """The layout of a chunk of ``n_rows`` rows whose missing cells are ``mask`` (c, d);
        None if no row misses a cell."""
        incomplete = mask.any(axis=1)
        rows = np.flatnonzero(incomplete)
        if not rows.size:
            return None
        sub = mask[rows]
        m, d = sub.shape
        counts = sub.sum(axis=1)
        groups = []
        for r in np.unique(counts):
            members = np.flatnonzero(counts == r)
            columns = np.nonzero(sub[members])[1].reshape(members.size, int(r))
            patterns, inverse = _patterns(columns, d)
            flat = columns * m + members[:, None]
            groups.append(Group(members, columns, patterns, inverse, flat))
        blocks = rows // BLOCK
        bounds = np.flatnonzero(np.diff(blocks)) + 1
        edges = [0, *bounds.tolist(), rows.size]
        spans = tuple(itertools.pairwise(edges))
        return cls(rows, sub, blocks, -(-n_rows // BLOCK), tuple(groups), spans)


def _patterns(columns: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``columns`` (n, r) and each row's index among them."""
    if d <= 62:  # one integer per pattern: the bits of its columns
        keys = (np.int64(1) << columns.astype(np.int64)).sum(axis=1)
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        return columns[first], inverse.reshape(-1)
    patterns, inverse = np.unique(columns, axis=0, return_inverse=True)
    return patterns, inverse.reshape(-1)


class IncompleteRows(Rows):
    """``Rows`` with missing cells (NaN in x): the kernel sees each row filled with the shift
    (z = 0 in a missing cell), and every chunk carries its ``ChunkGaps``."""

    def __init__(
        self,
        x: np.ndarray,
        shift: np.ndarray,
        dtype: np.dtype | type = np.float64,
        cache: bool = False,
    ) -> None:
        self.missing = np.isnan(x)
        super().__init__(np.where(self.missing, shift, x), shift, dtype, cache)
        self._layouts: dict[tuple[int, int], Layout | None] = {}

    def layout(self, rows: slice) -> Layout | None:
        """The chunk's layout, found once and kept for the later passes."""
        key = (rows.start, rows.stop)
        if key not in self._layouts:
            self._layouts[key] = Layout.of(self.missing[rows], rows.stop - rows.start)
        return self._layouts[key]

    def chunk(self, rows: slice, n_extra: int) -> Chunk:
        chunk = super().chunk(rows, n_extra)
        layout = self.layout(rows)
        if layout is not None:
            chunk.gaps = ChunkGaps(layout)
        return chunk


@dataclass
class Solved:
    """One group's E-step for the components solved: each row's v = (Λu)_m, and per pattern
    C = Λ_mm⁻¹ (C[a][b], (s, p) arrays; C[b][a] is the same array)."""

    group: Group
    v: list[np.ndarray]  # r arrays (s, n)
    inverse: list[list[np.ndarray]]


@dataclass
class ChunkGaps:
    """A chunk's missing cells, and what its E-step found for them (for its M-step)."""

    layout: Layout
    model: Model | None = None  # the E-step's model
    components: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    solved: list[Solved] = field(default_factory=list)


def _fills(model: Model) -> np.ndarray:
    """(k,) bool: the components whose E-step fills a missing cell with the shift (the
    others, far from it, are computed about their own mean: ``stats.Model``)."""
    return np.all(model.origins == model.shift, axis=1)


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
    correction = np.zeros((k, layout.rows.size))
    if strategy.is_diagonal:  # Λ_mm is diagonal: the missing cells' terms drop out
        correction[near] = _diagonal_correction(model, layout, precisions[near], near)
        solve = np.flatnonzero(~near)
    else:
        solve = np.arange(k)
    if solve.size:
        y = _whitened(model, chunk, precisions, solve)
        correction[solve] = _solve(gaps, precisions[solve], y, solve)
    for c in np.flatnonzero(~near):  # filled with its own mean instead of the shift
        out[c, layout.rows] = _far_log_joint(model, chunk, int(c))
    with np.errstate(invalid="ignore"):
        out[:, layout.rows] += correction.astype(out.dtype, copy=False)


def _diagonal_correction(
    model: Model, layout: Layout, precisions: np.ndarray, components: np.ndarray
) -> np.ndarray:
    """(s, m) for a diagonal model: each missing cell's term of log N(x̄ | μ, Σ) taken out,
    −(½ log λ_a − ½ log 2π − ½ λ_a m_a²) with m = μ − shift (z̄_a = 0 there)."""
    lam = np.diagonal(precisions, axis1=1, axis2=2)
    m = (model.params.means - model.shift)[components]
    with np.errstate(divide="ignore"):
        terms = 0.5 * LOG_2PI - 0.5 * np.log(lam) + 0.5 * lam * m * m
    return _blockwise(terms, layout.mask.T.astype(np.float64), layout)


def _whitened(
    model: Model, chunk: Chunk, precisions: np.ndarray, components: np.ndarray
) -> np.ndarray:
    """(s, d, m) Λ_k u_i for the incomplete rows, u = x̄ − μ_k with x̄ filled as the E-step
    fills it for component k: with the shift (one product for all such components), or with
    a far component's own mean (u = 0 in its missing cells, so nothing cancels)."""
    layout = chunk.gaps.layout
    rows = layout.rows
    d = layout.mask.shape[1]
    out = np.empty((components.size, d, rows.size))
    near = _fills(model)[components]
    if near.any():
        shared = components[near]
        zbar = np.asarray(chunk.zt[:, rows], dtype=np.float64)
        lam = precisions[shared]
        centre = np.einsum("kab,kb->ka", lam, model.params.means[shared] - model.shift)
        y = _blockwise(lam.reshape(-1, d), zbar, layout).reshape(shared.size, d, rows.size)
        out[near] = y - centre[:, :, None]
    for i in np.flatnonzero(~near):
        c = components[i]
        u = np.where(layout.mask, 0.0, chunk.x[rows] - model.params.means[c])
        out[i] = _blockwise(precisions[c], u.T, layout)
    return out


def _far_log_joint(model: Model, chunk: Chunk, c: int) -> np.ndarray:
    """log π_c N(x̄ | μ_c, Σ_c) of the incomplete rows filled with μ_c, about μ_c."""
    layout = chunk.gaps.layout
    u = np.where(layout.mask, 0.0, chunk.x[layout.rows] - model.params.means[c])
    features = _features(model.strategy, u.T)
    i = int(np.flatnonzero(model.far == c)[0])
    coefficients = model.far_coefficients[i][None]
    return _blockwise(coefficients, features, layout)[0] + model.far_constants[i]


def _blockwise(a: np.ndarray, b: np.ndarray, layout: Layout) -> np.ndarray:
    """a @ b for b's columns, the incomplete rows, one block of rows at a time: BLAS gives a
    column bits that depend on how many columns it is given (measured), and a block's rows
    are the same however the rows are chunked."""
    out = np.empty((a.shape[0], b.shape[1]))
    for start, stop in layout.spans:
        out[:, start:stop] = a @ b[:, start:stop]
    return out


def _features(strategy: CovarianceStrategy, z: np.ndarray) -> np.ndarray:
    """The strategy's features (q, n) of rows z (d, n), in float64."""
    d = z.shape[0]
    features = np.empty((d + strategy.n_extra(d), z.shape[1]))
    features[:d] = z
    with np.errstate(over="ignore"):
        strategy.fill_features(Chunk(features, d))
    return features


def _solve(
    gaps: ChunkGaps, precisions: np.ndarray, y: np.ndarray, components: np.ndarray
) -> np.ndarray:
    """(s, m): ½ r log 2π − ½ log det Λ_mm + ½ vᵀ Λ_mm⁻¹ v for each row and component, v
    taken from ``y`` (s, d, m); v and C = Λ_mm⁻¹ are kept in ``gaps`` for the M-step."""
    layout = gaps.layout
    s, d, m = y.shape
    flat_y = y.reshape(s, d * m)
    out = np.empty((s, m))
    gaps.components = components
    gaps.solved = []
    for group in layout.groups:
        r = group.size
        inverse, log_det = _inverse(precisions, group.patterns)
        v = [flat_y[:, group.flat[:, a]] for a in range(r)]
        quadratic = np.zeros((s, group.members.size))
        for a in range(r):
            for b in range(a, r):
                term = inverse[a][b][:, group.inverse] * v[a] * v[b]
                quadratic += term if a == b else 2.0 * term
        with np.errstate(invalid="ignore"):
            out[:, group.members] = 0.5 * (r * LOG_2PI - log_det[:, group.inverse] + quadratic)
        gaps.solved.append(Solved(group, v, inverse))
    return out


def _inverse(
    precisions: np.ndarray, patterns: np.ndarray
) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """C = Λ_mm⁻¹ for every pattern (p, r) of missing cells and component, as C[a][b] (s, p)
    arrays (C[b][a] the same array), and log det Λ_mm (s, p). A Λ_mm that is not positive
    definite (impossible for a positive definite Λ, but for rounding) gives NaN."""
    p, r = patterns.shape
    s = precisions.shape[0]
    blocks = precisions[:, patterns[:, :, None], patterns[:, None, :]]  # (s, p, r, r)
    if r > HAND_FACTORED:
        with np.errstate(all="ignore"):
            sign, log_det = np.linalg.slogdet(blocks)
            try:
                full = np.linalg.inv(blocks)
            except np.linalg.LinAlgError:
                full = np.full_like(blocks, np.nan)
        log_det = np.where(sign > 0, log_det, np.nan)
        inverse = [[full[:, :, a, b] for b in range(r)] for a in range(r)]
        for a in range(r):
            for b in range(a + 1, r):
                inverse[b][a] = inverse[a][b]
        return inverse, log_det
    # Cholesky Λ_mm = L Lᵀ by hand, each entry an (s, p) array; then W = L⁻¹ and C = Wᵀ W
    lower: list[list[np.ndarray]] = [[None] * r for _ in range(r)]  # type: ignore[list-item]
    log_det = np.zeros((s, p))
    with np.errstate(all="ignore"):
        for j in range(r):
            diagonal = blocks[:, :, j, j].copy()
            for t in range(j):
                diagonal -= lower[j][t] * lower[j][t]
            lower[j][j] = np.sqrt(diagonal)
            log_det += np.log(diagonal)
            for i in range(j + 1, r):
                acc = blocks[:, :, i, j].copy()
                for t in range(j):
                    acc -= lower[i][t] * lower[j][t]
                lower[i][j] = acc / lower[j][j]
        w: list[list[np.ndarray]] = [[None] * r for _ in range(r)]  # type: ignore[list-item]
        for i in range(r):
            w[i][i] = 1.0 / lower[i][i]
            for j in range(i - 1, -1, -1):
                acc = lower[i][j] * w[j][j]
                for t in range(j + 1, i):
                    acc += lower[i][t] * w[t][j]
                w[i][j] = -acc * w[i][i]
        inverse: list[list[np.ndarray]] = [[None] * r for _ in range(r)]  # type: ignore[list-item]
        for a in range(r):
            for b in range(a, r):
                acc = w[b][a] * w[b][b]
                for t in range(b + 1, r):
                    acc += w[t][a] * w[t][b]
                inverse[a][b] = inverse[b][a] = acc
    return inverse, log_det


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
    moments = np.zeros((nb, k, d + strategy.n_extra(d)))
    corrected = np.all(origins == chunk.shift, axis=1) & _fills(model)
    sub = np.asarray(resp[:, layout.rows], dtype=np.float64)
    if not corrected.all():
        resp = resp.copy()
        resp[np.ix_(~corrected, layout.rows)] = 0.0
    stay = np.flatnonzero(corrected)
    if strategy.is_diagonal:
        second = _diagonal_moments(model, layout, sub, stay, moments)
    else:
        second = _general_moments(chunk, model, sub, stay, moments)
    moments[:, :, d:] += strategy.moments_of(second)
    for c in np.flatnonzero(~corrected):
        counts[:, c] = np.bincount(layout.blocks, weights=sub[c], minlength=nb)
        moments[:, c] = _full_moments(chunk, model, sub[c], int(c), origins[c])
    chunk.x = _best_filled(chunk, model, sub)
    return resp, Extra(counts, moments)


def _best_filled(chunk: Chunk, model: Model, sub: np.ndarray) -> np.ndarray:
    """The chunk's rows with each missing cell set to its conditional mean under the row's
    most responsible component: what the worst-explained rows offer as new means when a
    collapsed component is re-seeded (the shift there could lie between clusters)."""
    gaps = chunk.gaps
    layout = gaps.layout
    best = np.argmax(sub, axis=0)
    x = np.array(chunk.x, dtype=np.float64)
    filled = x[layout.rows]
    means = model.params.means
    if model.strategy.is_diagonal:
        filled = np.where(layout.mask, means[best], filled)
    else:
        position = np.full(means.shape[0], -1, dtype=np.int64)
        position[gaps.components] = np.arange(gaps.components.size)
        fills = model.origins
        for solved in gaps.solved:
            group = solved.group
            r = group.size
            at = position[best[group.members]]
            n = np.arange(group.members.size)
            pattern = group.inverse
            for a in range(r):
                e = sum(-solved.inverse[a][b][at, pattern] * solved.v[b][at, n] for b in range(r))
                column = group.columns[:, a]
                filled[group.members, column] = fills[best[group.members], column] + e
    x[layout.rows] = filled
    return x


def _per_block_sum(values: np.ndarray, layout: Layout) -> np.ndarray:
    """(blocks, ...) sums over the incomplete rows (axis 0 of ``values``) of each block, in
    the order of the rows."""
    out = np.zeros((layout.n_blocks, *values.shape[1:]))
    bounds = np.searchsorted(layout.blocks, np.arange(layout.n_blocks + 1))
    for b in range(layout.n_blocks):
        if bounds[b] < bounds[b + 1]:
            out[b] = values[bounds[b] : bounds[b + 1]].sum(axis=0)
    return out


def _diagonal_moments(
    model: Model, layout: Layout, sub: np.ndarray, stay: np.ndarray, moments: np.ndarray
) -> np.ndarray:
    """A diagonal model: a missing cell's conditional mean is μ_a (e = m_a, as z̄_a = 0) and
    its conditional variance σ²_a, so with W = Σ_i r_ik [cell a missing] per block, S1 gets
    W m and the squares W (m² + σ²). Returns the (blocks, k, d, d) second moments added."""
    k, d = model.params.means.shape
    mask = layout.mask.astype(np.float64)
    w = np.zeros((layout.n_blocks, k, d))
    bounds = np.searchsorted(layout.blocks, np.arange(layout.n_blocks + 1))
    for b in range(layout.n_blocks):
        inside = slice(bounds[b], bounds[b + 1])
        if inside.start < inside.stop:
            w[b][stay] = sub[stay, inside] @ mask[inside]
    m = model.params.means - model.shift
    full = model.strategy.to_full(model.params.covariances, k, d)
    variances = np.diagonal(full, axis1=1, axis2=2)
    moments[:, :, :d] += w * m
    second = np.zeros((layout.n_blocks, k, d, d))
    index = np.arange(d)
    second[:, :, index, index] = w * (m * m + variances)
    return second


def _general_moments(
    chunk: Chunk, model: Model, sub: np.ndarray, stay: np.ndarray, moments: np.ndarray
) -> np.ndarray:
    """S1 += Σ r e and the second moments += Σ r (z̄ eᵀ + e z̄ᵀ + e eᵀ + C), per block, over
    the row-component pairs of the ``stay`` components that matter (``NEGLIGIBLE``).
    Returns the (blocks, k, d, d) second moments added."""
    gaps = chunk.gaps
    layout = gaps.layout
    nb = layout.n_blocks
    k, d = model.params.means.shape
    zbar = np.asarray(chunk.zt[:, layout.rows], dtype=np.float64)  # (d, m)
    position = np.full(k, -1, dtype=np.int64)
    position[gaps.components] = np.arange(gaps.components.size)
    threshold = NEGLIGIBLE * model.params.weights
    first = np.zeros(nb * k * d)
    cross = np.zeros((nb * k * d, d))  # Σ r e z̄ᵀ, a row per (block, component, missing cell)
    square = np.zeros(nb * k * d * d)
    for solved in gaps.solved:
        group = solved.group
        r = group.size
        resp = sub[np.ix_(stay, group.members)]
        ka, ia = np.nonzero(resp > threshold[stay][:, None])
        if not ka.size:
            continue
        w = resp[ka, ia]
        comp = stay[ka]
        solved_at = position[comp]
        row = group.members[ia]
        pattern = group.inverse[ia]
        v = [solved.v[a][solved_at, ia] for a in range(r)]
        c = [[None] * r for _ in range(r)]
        for a in range(r):
            for b in range(a, r):
                c[a][b] = c[b][a] = solved.inverse[a][b][solved_at, pattern]
        e = []
        for a in range(r):
            acc = c[a][0] * v[0]
            for b in range(1, r):
                acc += c[a][b] * v[b]
            e.append(-acc)
        base = (layout.blocks[row] * k + comp) * d
        cells = [base + group.columns[ia, a] for a in range(r)]
        target = np.concatenate(cells)
        we = np.concatenate([w * e[a] for a in range(r)])
        first += np.bincount(target, weights=we, minlength=first.size)
        rows = np.tile(row, r)
        for a in range(d):
            cross[:, a] += np.bincount(target, weights=we * zbar[a, rows], minlength=nb * k * d)
        slots = [(a, b) for a in range(r) for b in range(r)]
        pairs = np.concatenate([cells[a] * d + group.columns[ia, b] for a, b in slots])
        values = np.concatenate([w * (e[a] * e[b] + c[a][b]) for a, b in slots])
        square += np.bincount(pairs, weights=values, minlength=square.size)
    moments[:, :, :d] += first.reshape(nb, k, d)
    cross = cross.reshape(nb, k, d, d)
    return cross + np.swapaxes(cross, 2, 3) + square.reshape(nb, k, d, d)


def _full_moments(
    chunk: Chunk, model: Model, resp: np.ndarray, c: int, origin: np.ndarray
) -> np.ndarray:
    """(blocks, q) component c's whole statistics from the incomplete rows, about
    ``origin``: the features of the rows filled with their conditional means, plus the
    conditional covariances."""
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
        i = int(np.flatnonzero(gaps.components == c)[0])
        for solved in gaps.solved:
            group = solved.group
            r = group.size
            members = group.members
            cov = [[solved.inverse[a][b][i][group.inverse] for b in range(r)] for a in range(r)]
            for a in range(r):
                shift = sum(cov[a][b] * solved.v[b][i] for b in range(r))
                filled[members, group.columns[:, a]] -= shift
                for b in range(r):
                    second[members, group.columns[:, a], group.columns[:, b]] = cov[a][b]
    features = _features(strategy, (filled - origin).T)
    features[d:] += strategy.moments_of(second).T
    weighted = features * resp
    return _per_block_sum(weighted.T, layout)


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
    def of(cls, x: np.ndarray, center: np.ndarray | None = None, diagonal: bool = False):
        """The sums of the rows of x about ``center`` (default: the mean of each column's
        observed cells, 0 where a column has none)."""
        observed = ~np.isnan(x)
        if center is None:
            n = observed.sum(axis=0)
            total = np.where(observed, x, 0.0).sum(axis=0)
            center = np.where(n > 0, total / np.maximum(n, 1), 0.0)
        w = np.where(observed, x - center, 0.0)
        ones = observed.astype(np.float64)
        if diagonal:
            return cls(center, ones.sum(axis=0), w.sum(axis=0), np.einsum("ij,ij->j", w, w))
        return cls(center, ones.T @ ones, w.T @ ones, w.T @ w)

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

    def summary(self, single_valued: np.ndarray) -> DataSummary:
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
            return DataSummary.from_variances(about.center, about.products / n, single_valued)
        variances = np.diagonal(about.products) / n
        scale = np.sqrt(n)
        cov = about.products / np.outer(scale, scale)
        cov = 0.5 * (cov + cov.T)
        cov[np.diag_indices_from(cov)] = variances
        return DataSummary.from_covariance(about.center, cov, single_valued)


def summarise(x: np.ndarray, diagonal: bool = False) -> DataSummary:
    """``init.summarise`` of rows with missing cells: column means and variances over the
    observed cells, the covariance as ``PairMoments.summary`` (two passes, in steps of
    SUM_ROWS rows)."""
    n, d = x.shape
    counts = np.zeros(d)
    total = np.zeros(d)
    for rows in _steps(n):
        observed = ~np.isnan(x[rows])
        counts += observed.sum(axis=0)
        total += np.where(observed, x[rows], 0.0).sum(axis=0)
    center = np.where(counts > 0, total / np.maximum(counts, 1), 0.0)
    moments = None
    for rows in _steps(n):
        part = PairMoments.of(x[rows], center, diagonal)
        moments = part if moments is None else moments + part
    assert moments is not None
    low, high = column_range(x)
    return moments.summary(low == high)


def _steps(n: int) -> list[slice]:
    return [slice(a, min(a + SUM_ROWS, n)) for a in range(0, max(n, 1), SUM_ROWS)]
