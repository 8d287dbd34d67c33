"""The full kernel component by component, for many columns: no pairwise features.

The features of the full kernel (``chunk``) carry the d(d + 1)/2 pairs z_a z_b of every row
(2,080 numbers a row at d = 64), written once and read twice a pass: the products with them
wait on memory. Here a chunk holds [z; 1] alone, and per component

    E-step  y = R_k (z − m_k),  log π_k N(x | μ_k, Σ_k) = log_const_k − ½ ‖y‖²
    M-step  the pairs a ≤ b of Σ_i r_ik z_i z_iᵀ, per block of rows

with R_k upper triangular, R_kᵀ R_k = Λ_k (the R of a QR of P_kᵀ, so ‖R_k v‖ = ‖P_kᵀ v‖).
Both are BLAS products over many components at once, on pieces of the chunk that stay in the
caches, and both skip the zeros and repeats: the rows a ∈ [lo, hi) of y need only the columns
a ≥ lo of [z; 1], and the columns b ∈ [lo, hi) of the pairs only the rows a < hi, so cutting
the d columns into ``parts`` does (p + 1)/2p of the full products' work. The statistics are
the same sums, each block's in another order, and the blocks still add up in the fixed tree of
``stats``: no bit depends on threads or chunking. Where most of a block's responsibilities are
negligible (well-separated clusters), each component sums only its rows that count. Far
components and statistics summed about another origin (``stats.Model``) take the rows about
their own point; rows with missing cells, weights and the noise component need nothing here
(their hooks in ``stats`` work on what this returns). ``chosen`` says where this is the
faster way (bench/bench_kernel.py).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .chunk import Chunk, Rows, scratch

if TYPE_CHECKING:
    from .covariance import CovarianceStrategy
    from .stats import Model

BLOCK = 512  # stats.BLOCK: the rows of one block of the sums' tree
STACK_ROWS = 512  # components stacked into one product: at most this many rows (g·d)
PART = 16  # columns per part of the triangular products, at least
PART_ROWS = 128  # and at least this many rows (part columns × components) per product
# Below FINE_FROM columns, finer parts: at least FINE_PART columns and FINE_ROWS rows
FINE_FROM = 48
FINE_PART = 8
FINE_ROWS = 32
FROM_FEATURES = 12  # columns from which this kernel can be the faster (``chosen``)
# float64 responsibilities below this add nothing to the M-step's sums (``_gram_blocks``)
NEGLIGIBLE = 1e-250


def chosen(strategy: CovarianceStrategy, d: int, k: int, compiled: bool = False) -> bool:
    """Whether the chunks of a model with these dimensions go component by component: the
    full kernel's models (``strategy.pairwise``) from ``FROM_FEATURES`` columns and for
    k ≤ 4 + d/8 components. Measured on one thread (bench/bench_kernel.py): the features
    cost ~d²/2 numbers per row to make, write and read, whatever k, and little more per
    component; this kernel costs ~k d² products per row and nothing before. It was the
    faster from d = 12 up to k ≈ 7 at d = 16, 10 at d = 32, 14 at d = 64, 30 at d = 128
    (4× at d = 64, k = 2; 1.4× at k = 8), and the slower below d = 12.

    ``compiled``: the other way is the compiled pass in pieces (``diagonal``, for a large
    complete float64 table), whose features stay in the cache; against it this kernel is
    the faster only for k ≤ d/5 as well (one pass, 200,000 rows, one thread: 1.6× slower at
    d = 12, k = 4, even at d = 20, k = 4, 1.2× faster at d = 24, k = 4 and 2× at d = 32,
    k = 4, 1.3× at d = 64, k = 8; bench/RESULTS.md, "second pass")."""
    if not (strategy.pairwise and d >= FROM_FEATURES and k <= 4 + d / 8):
        return False
    return not compiled or k <= d / 5


@functools.cache
def parts(d: int, g: int) -> tuple[tuple[int, int], ...]:
    """The columns 0 … d − 1 cut into consecutive parts (lo, hi) for products over g
    components: of at least PART columns and PART_ROWS rows (g per column), as BLAS runs
    thinner products slower than the work they save (measured: at d = 64, four parts
    saved 1/3 of the arithmetic and took longer for g = 4, less for g = 8). Below FINE_FROM
    columns the products are small enough that finer parts pay: 7–17 % less time per pass at
    d = 16–40 (bench/RESULTS.md, "Finer parts"), while at d = 48 and 64 they lost up to 4 %."""
    part, rows = (FINE_PART, FINE_ROWS) if d < FINE_FROM else (PART, PART_ROWS)
    bounds = np.linspace(0, d, max(1, min(round(d / part), round(d * g / rows))) + 1)
    bounds = bounds.astype(int)
    return tuple((int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds))


@dataclass(frozen=True)
class Group:
    """Components whose E-step is one product per part: ``members`` (indices), and per part
    (lo, hi) of ``bounds`` the rows a ∈ [lo, hi) of every member's [R_j  −R_j m_j] from
    column lo on, ordered (a, j): (g·(hi − lo), d + 1 − lo)."""

    members: np.ndarray
    bounds: tuple[tuple[int, int], ...]
    factors: tuple[np.ndarray, ...]

    def astype(self, dtype: np.dtype) -> Group:
        cast = tuple(f.astype(dtype, copy=False) for f in self.factors)
        return Group(self.members, self.bounds, cast)


@dataclass(frozen=True)
class Factors:
    """A model's precision factors as the E-step here takes them: the components about the
    shift in ``groups``, each far one (``Model.far``, about its own mean) with its P_jᵀ;
    ``log_const`` (k,) log π_k + log det P_k − ½ d log 2π."""

    groups: tuple[Group, ...]
    log_const: np.ndarray
    far: np.ndarray
    far_transposed: np.ndarray  # (len(far), d, d)

    @classmethod
    def of(cls, model: Model, log_const: np.ndarray) -> Factors:
        k, d = model.params.means.shape
        transposed = np.swapaxes(model.prec_chol, 1, 2)
        triangular = np.linalg.qr(transposed, mode="r")  # Rᵀ R = P Pᵀ
        near = np.setdiff1d(np.arange(k), model.far)
        m = model.params.means[near] - model.shift
        size = max(1, STACK_ROWS // d)
        offsets = np.einsum("kab,kb->ka", triangular[near], m)
        augmented = np.concatenate([triangular[near], -offsets[:, :, None]], axis=2)
        groups = tuple(
            _group(near[first : first + size], augmented[first : first + size], d)
            for first in range(0, near.size, size)
        )
        return cls(groups, log_const, model.far, transposed[model.far])


def _group(members: np.ndarray, augmented: np.ndarray, d: int) -> Group:
    """The group of these components, from their (g, d, d + 1) [R_j  −R_j m_j]."""
    bounds = parts(d, members.size)
    return Group(members, bounds, _pieces(augmented, bounds))


def _pieces(factors: np.ndarray, bounds: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, ...]:
    """Per part (lo, hi): rows [lo, hi) from column lo on of (g, d, d + 1) factors, ordered
    (a, j)."""
    g = factors.shape[0]
    return tuple(
        np.ascontiguousarray(np.swapaxes(factors[:, lo:hi, lo:], 0, 1)).reshape((hi - lo) * g, -1)
        for lo, hi in bounds
    )


def chunk_of(rows: Rows, span: slice) -> Chunk:
    """The chunk of these rows as this kernel takes it: features [z; 1] (d + 1, c)."""
    chunk = rows.chunk(span, 1)
    chunk.extra[0] = 1.0
    chunk.by_component = True
    return chunk


def log_joint(model: Model, chunk: Chunk, out: np.ndarray) -> None:
    """out (k, c) ← log π_k + log N(x_i | μ_k, Σ_k) for the chunk's rows (``Model.log_joint``
    for a chunk of this kernel)."""
    factors: Factors = model.factors
    dtype = chunk.features.dtype
    d, c = chunk.zt.shape
    for group in factors.groups:
        _squared_norms(chunk.features, group.astype(dtype), out)
    for i, j in enumerate(factors.far):  # about its own mean, from the rows as read
        local = _local_rows(chunk, model.origins[j])
        factor = factors.far_transposed[i].astype(dtype, copy=False)
        for start in range(0, c, BLOCK):  # cut at the blocks, as in ``_squared_norms``
            y = scratch("bycomponent_far", (d, min(BLOCK, c - start)), dtype)
            np.matmul(factor, local[:, start : start + BLOCK], out=y)
            np.einsum("ac,ac->c", y, y, out=out[j, start : start + BLOCK])
    out *= dtype.type(-0.5)
    out += factors.log_const.astype(dtype, copy=False)[:, None]


def _squared_norms(features: np.ndarray, group: Group, out: np.ndarray) -> None:
    """out[members] ← ‖R_j (z − m_j)‖² of a chunk's [z; 1] (d + 1, c), block by block of
    its columns: BLAS rounds a column of a product differently near the end of the columns
    than inside them (measured), so every product is cut at the blocks of the sums' tree,
    which are the same rows whatever the chunks — then a row's density keeps its bits."""
    d, c = features.shape[0] - 1, features.shape[1]
    members = group.members
    g = members.size
    dtype = features.dtype
    width = BLOCK
    contiguous = members[-1] - members[0] == g - 1
    for start in range(0, c, width):
        stop = min(start + width, c)
        s = stop - start
        y = scratch("bycomponent_y", (d, g, s), dtype)  # y[a, j] = (R_j (z − m_j))_a
        for (lo, hi), factor in zip(group.bounds, group.factors, strict=True):
            np.matmul(factor, features[lo:, start:stop], out=y[lo:hi].reshape(-1, s))
        if contiguous:
            target = out[members[0] : members[-1] + 1, start:stop]
            np.einsum("ags,ags->gs", y, y, out=target)
        else:
            out[members, start:stop] = np.einsum("ags,ags->gs", y, y)


def block_moments(chunk: Chunk, resp: np.ndarray, origins: np.ndarray | None) -> np.ndarray:
    """(blocks, k, d + d(d + 1)/2) per block of BLOCK rows: Σ_i r_ki (z_i − o_k) and the pairs
    a ≤ b of Σ_i r_ki (z_i − o_k)(z_i − o_k)ᵀ, o_k the shift or ``origins[k]`` (float64)."""
    d, c = chunk.zt.shape
    k = resp.shape[0]
    moments = np.empty((-(-c // BLOCK), k, d + d * (d + 1) // 2))
    if origins is None:
        about_shift = np.arange(k)
    else:
        about_shift = np.flatnonzero((origins == chunk.shift).all(axis=1))
    size = max(1, STACK_ROWS // d)
    for first in range(0, about_shift.size, size):
        _gram_blocks(chunk.zt, resp, about_shift[first : first + size], moments)
    if origins is not None:
        for j in np.setdiff1d(np.arange(k), about_shift):
            with np.errstate(over="ignore", invalid="ignore"):
                _gram_blocks(_local_rows(chunk, origins[j]), resp, np.array([j]), moments)
    return moments


def _gram_blocks(
    zt: np.ndarray, resp: np.ndarray, members: np.ndarray, moments: np.ndarray
) -> None:
    """moments[:, members] ← per block, Σ r z and the pairs of Σ r z zᵀ of the rows zt (d, c).

    Per part (lo, hi) of the columns b, one product gives every member's Σ r z_a z_b for
    a < hi: (r ∘ z)[:hi] (hi·g, s), rows ordered (a, j), times z[lo:hi]ᵀ.

    Where most of a block's responsibilities are negligible (float64, below ``NEGLIGIBLE``:
    well-separated clusters, where a row's responsibility for the other components is
    e^-700 or less), each member sums only its rows that count, so the products shrink
    ~g-fold. What is left out is below 1e-250 n max‖z‖², far below any sum the M-step keeps;
    the choice depends on the block's responsibilities only, so no bit depends on chunking."""
    c = zt.shape[1]
    dtype = zt.dtype
    contiguous = members[-1] - members[0] == members.size - 1
    r = resp[members[0] : members[-1] + 1] if contiguous else resp[members]
    for block, start in enumerate(range(0, c, BLOCK)):
        z = zt[:, start : start + BLOCK]
        rb = r[:, start : start + BLOCK]
        if dtype == np.float64:
            counted = rb > NEGLIGIBLE
            per_member = np.count_nonzero(counted, axis=1)
            if 2 * per_member.sum() <= counted.size:
                moments[block, members[per_member == 0]] = 0.0
                for j in np.flatnonzero(per_member):
                    if per_member[j] == z.shape[1]:  # every row counts: no copy
                        moments[block, members[j]] = _gram(z, rb[j : j + 1])[0]
                    else:
                        rows = np.flatnonzero(counted[j])
                        moments[block, members[j]] = _gram(z[:, rows], rb[j : j + 1, rows])[0]
                continue
        moments[block, members] = _gram(z, rb)


def _gram(z: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(g, q): Σ_i r_ji z_i and the pairs of Σ_i r_ji z_i z_iᵀ, of rows z (d, s) and
    responsibilities r (g, s) (``_gram_blocks``; valid until the thread's next call)."""
    d, s = z.shape
    g = r.shape[0]
    dtype = z.dtype
    where, size = _pair_positions(d, g)
    weighted = scratch("bycomponent_w", (d, g, s), dtype)
    np.multiply(z[:, None, :], r[None, :, :], out=weighted)
    products = scratch("bycomponent_gram", (size,), dtype)
    offset = 0
    for lo, hi in parts(d, g):
        piece = products[offset : offset + hi * g * (hi - lo)].reshape(hi * g, hi - lo)
        np.matmul(weighted[:hi].reshape(hi * g, s), z[lo:hi].T, out=piece)
        offset += piece.size
    out = scratch("bycomponent_moments", (g, d + where.shape[1]), dtype)
    np.matmul(r, z.T, out=out[:, :d])
    out[:, d:] = products[where]
    return out


@functools.cache
def _pair_positions(d: int, g: int) -> tuple[np.ndarray, int]:
    """Where ``_gram_blocks``' products hold member j's Σ r z_a z_b, for the pairs a ≤ b in
    ``np.triu_indices(d)`` order: (g, d(d + 1)/2) positions, and the products' size."""
    a, b = np.triu_indices(d)
    where = np.empty((g, a.size), dtype=np.intp)
    offset = 0
    for lo, hi in parts(d, g):
        inside = (b >= lo) & (b < hi)
        for j in range(g):
            where[j, inside] = offset + (a[inside] * g + j) * (hi - lo) + (b[inside] - lo)
        offset += hi * g * (hi - lo)
    where.flags.writeable = False
    return where, offset


def _local_rows(chunk: Chunk, origin: np.ndarray) -> np.ndarray:
    """(d, c) the chunk's rows less ``origin`` (from the rows as read, in float64, then in
    the working precision), as ``stats.local_features`` takes them."""
    zt = scratch("bycomponent_local", chunk.zt.shape, chunk.zt.dtype)
    np.subtract(chunk.x.T, origin[:, None], out=zt, dtype=np.float64, casting="same_kind")
    return zt
