"""The per-row work of ``missing`` for models with full precisions, compiled by numba: one
pass over a chunk's incomplete rows for the E-step, one for the M-step, each row and
component done in registers and small buffers (numpy's arrays-of-rows version spends most
of its time on temporaries and gathers). Imported only when a large table has missing
cells.

A chunk's incomplete rows are read where the kernel's product read them (``zt`` (d, c), the
chunk's shifted rows; ``rows``, their positions) and their responsibilities where the
E-step left them ((k, c)). A row's missing cells are listed row by row (``starts``: its
first cell, ``columns``: their columns, ascending). ``lam`` (d, d, K) holds each
component's precision Λ_c, Λ_c[b, a] at [a, b, c], and ``lam_means`` (d, K) Λ_c m_c
(m_c = μ_c − shift): the row of a missing column is contiguous over the components. The
factor of a row's Λ_mm = L Lᵀ is packed by rows, entry (p, q), q ≤ p, at p(p+1)/2 + q,
with 1 / L_pp in the diagonal slots. Both kernels work on eight float64 lanes at a time
(``lanes``: LLVM vector values; numba leaves LLVM's SLP vectoriser off, and turning it on
made the scalar code slower): the E-step a row's components side by side, the M-step the
row-component pairs whose responsibility counts, eight pairs of as many missing cells side
by side, their Λ_mm gathered from ``lam``. The E-step reads the first rows of L (all of
them for a row of at most three missing cells) from a table of every set of at most three
columns (``factor_table``, once per pass). The M-step computes again what it needs of the
E-step (v, L) for those pairs (~1.2 per row): keeping them for every pair would write and
read ~0.5 KB per row, which cost more; so did keeping e and C for the pairs the E-step
could foresee from an estimate of each row's log joint (the selection and the copies cost
what the M-step saved), and so would a table of every pattern's factors, read by its rows
at random; visiting a chunk's rows by runs of one pattern to factor once per run (a chunk
holds ~3 rows per pattern at d = 16, 20 % missing) cost what the factors saved; L D Lᵀ
instead of Cholesky (no square roots) was no faster (all measured). Every sum is taken per
block of rows, in an order that depends on the block's rows alone, so the result does not
depend on how rows are chunked.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from . import lanes

LOG_2PI = math.log(2.0 * math.pi)
SQRT2 = math.sqrt(2.0)
LN2_HIGH = 6.93147180369123816490e-01  # log 2 to 32 bits (e × it is exact for |e| < 2^20)
LN2_LOW = 1.90821492927058770002e-10  # the rest of log 2
LANES = lanes.WIDTH  # components computed side by side by ``marginal_terms``
WINDOW = 512  # row-component pairs whose e and C ``conditional_moments`` computes together
# ``conditional_moments``' buffers for a window of pairs: each pair's incomplete row, component,
# responsibility and z̄; the pairs' order by their numbers of missing cells; LANES pairs' L, W,
# C and v then e, side by side, with where in ``lam`` their cells are; and the precisions by
# rows (k, d, d), each row contiguous.
Window = namedtuple(
    "Window",
    "row component weight z counts order lower w lanes_cov lanes_v lane_pair lane_columns "
    "lane_rows rows_of",
)
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(inline="always", **_JIT)
def _cholesky_lanes(lam, columns, a0, first, r, g, lower, logdet, logs):
    """Rows ``first`` … r − 1 of L with Λ_mm = L Lᵀ (its first rows already in ``lower``)
    for the columns ``columns[a0:a0 + r]``, components g … g + LANES side by side, packed
    by rows into ``lower`` (LANES values per entry, 1 / L_pp in the diagonal slots); returns
    ``logdet`` plus the log of their pivots' product (kept within range, its logarithm
    taken on the lanes). A Λ_mm that is not positive definite (only by rounding) gives
    NaN."""
    d, k = lam.shape[0], lam.shape[2]
    one = lanes.splat(1.0)
    f = one  # the product of the pivots not yet in logdet
    for p in range(first, r):  # L_pq
        cp = columns[a0 + p]
        rp = p * (p + 1) // 2
        for q in range(p + 1):
            rq = q * (q + 1) // 2
            s = lanes.load(lam, (columns[a0 + q] * d + cp) * k + g)
            for t in range(q):
                s = lanes.fnma(
                    lanes.load(lower, (rp + t) * LANES), lanes.load(lower, (rq + t) * LANES), s
                )
            if q == p:
                lanes.store(lower, (rp + p) * LANES, lanes.div(one, lanes.sqrt(s)))
                f = lanes.mul(f, s)
            else:
                diagonal = lanes.load(lower, (rq + q) * LANES)
                lanes.store(lower, (rp + q) * LANES, lanes.mul(s, diagonal))
        if not lanes.within(f, 1e-150, 1e150):  # keep the product within range
            lanes.store(logs, 0, f)
            for j in range(LANES):
                logs[j] = np.log(logs[j])
            logdet = lanes.add(logdet, lanes.load(logs, 0))
            f = one
    return lanes.add(logdet, _log(f))


@njit(**_JIT)
def _binomials(d, tabled):
    """(d + 1, tabled + 1) C(n, j), and where each size's sets start in ``factor_table``'s
    table (tabled + 2,): the sets of size s, ranked by Σ_j C(c_j, j + 1) over their
    columns c_0 < c_1 < …, from bases[s]."""
    binom = np.zeros((d + 1, tabled + 1), dtype=np.int64)
    for n in range(d + 1):
        binom[n, 0] = 1
        for j in range(1, min(n, tabled) + 1):
            binom[n, j] = binom[n - 1, j - 1] + binom[n - 1, j]
    bases = np.zeros(tabled + 2, dtype=np.int64)
    for size in range(1, tabled + 1):
        bases[size + 1] = bases[size] + binom[d, size]
    return binom, bases


@njit(**_JIT)
def factor_table(lam, tabled):
    """For every set of s ≤ ``tabled`` columns and every component: (sets, S, K) with
    S = tabled (tabled + 1) / 2 + 1, the packed L of Λ_mm in its first s (s + 1) / 2 entries
    and log det Λ_mm in the last, each entry over the K components (``_cholesky_lanes``:
    the bits ``marginal_terms`` would compute for a row that misses these cells), the set
    c_0 < c_1 < … of size s at bases[s] + Σ_j C(c_j, j + 1); returned after ``bases``
    (tabled + 2,) and the binomials (d + 1, tabled + 1) (``_binomials``)."""
    d, k = lam.shape[0], lam.shape[2]
    binom, bases = _binomials(d, tabled)
    size = tabled * (tabled + 1) // 2 + 1
    table = np.empty((bases[tabled + 1], size, k))
    flat = table.reshape(table.size)
    lower = np.empty(size * LANES)
    logs = np.empty(LANES)
    columns = np.empty(max(tabled, 1), dtype=np.int64)
    for s in range(1, tabled + 1):
        for j in range(s):  # the first set: 0, 1, …, s − 1
            columns[j] = j
        while True:
            rank = bases[s]
            for j in range(s):
                rank += binom[columns[j], j + 1]
            at = rank * size * k
            for g in range(0, k, LANES):
                logdet = _cholesky_lanes(lam, columns, 0, 0, s, g, lower, lanes.splat(0.0), logs)
                for entry in range(s * (s + 1) // 2):
                    lanes.store(flat, at + entry * k + g, lanes.load(lower, entry * LANES))
                lanes.store(flat, at + (size - 1) * k + g, logdet)
            j = s - 1  # the next set: raise the last column that can be raised
            while j >= 0 and columns[j] == d - s + j:
                j -= 1
            if j < 0:
                break
            columns[j] += 1
            for t in range(j + 1, s):
                columns[t] = columns[t - 1] + 1
    return bases, binom, table


@njit(**_JIT)
def marginal_terms(zt, rows, starts, columns, lam, lam_means, bases, binom, table, out):
    """For each incomplete row i (chunk row ``rows[i]``, z̄ from ``zt`` (d, c), the chunk's
    shifted rows) and component c < k: out[c, rows[i]] += ½ r log 2π + ½ ‖y‖² − ½ log det
    Λ_mm, with y = L⁻¹ v, Λ_mm = L Lᵀ, v = (Λ (z̄ − m))_m (``out`` (k, c), the chunk's log
    densities; each term is rounded to its type before it is added, as numpy's path adds
    it). K (``lam``'s last axis) is a multiple of LANES; ``lam`` and ``lam_means`` are
    C-contiguous. ``bases``, ``binom`` and ``table``: ``factor_table``'s, from which a row
    reads the first P rows of L (all of them if it misses at most P cells) and their log
    det, factoring only the rest here.

    Eight components go side by side as one value of eight lanes (``lanes``: LLVM vector
    instructions, each lane rounded as its own scalar chain would be; 1.8× faster than
    eight chains of scalars written out, which were 2× faster than loops over the
    components). The factor comes first: its chain of square roots and divisions is the
    longest, and the projections, which do not depend on it, fill its gaps (measured
    ~8 % faster than projections first)."""
    d, k = lam.shape[0], lam.shape[2]
    tabled = bases.size - 2  # P
    size = table.shape[1]  # a set's entries in ``table``
    flat_table = table.reshape(table.size)
    lower = np.empty(d * (d + 1) // 2 * LANES)  # L, packed by rows, LANES values per entry
    y = np.empty(d * LANES)
    z = np.empty(d)
    logs = np.empty(LANES)
    term = np.empty(1, dtype=out.dtype)
    zero = lanes.splat(0.0)
    for i in range(rows.shape[0]):
        a0 = starts[i]
        r = starts[i + 1] - a0
        known = min(r, tabled)  # L's rows read from the table
        at = bases[known]
        for j in range(known):
            at += binom[columns[a0 + j], j + 1]
        at *= size * k
        for b in range(d):
            z[b] = zt[b, rows[i]]
        for g in range(0, k, LANES):
            for entry in range(known * (known + 1) // 2):
                lanes.store(lower, entry * LANES, lanes.load(flat_table, at + entry * k + g))
            logdet = zero
            if known:
                logdet = lanes.load(flat_table, at + (size - 1) * k + g)
            if r > known:
                logdet = _cholesky_lanes(lam, columns, a0, known, r, g, lower, logdet, logs)
            for p in range(r):  # v_p, kept in y until y_p replaces it
                col = columns[a0 + p]
                base = col * d * k + g
                s = zero
                for b in range(d):
                    s = lanes.fma(lanes.load(lam, base + b * k), lanes.splat(z[b]), s)
                lanes.store(y, p * LANES, lanes.sub(s, lanes.load(lam_means, col * k + g)))
            norm = zero  # ‖y‖²
            for p in range(r):  # y_p = (v_p − Σ_t<p L_pt y_t) / L_pp
                rp = p * (p + 1) // 2
                s = lanes.load(y, p * LANES)
                for t in range(p):
                    s = lanes.fnma(lanes.load(lower, (rp + t) * LANES), lanes.load(y, t * LANES), s)
                s = lanes.mul(s, lanes.load(lower, (rp + p) * LANES))
                lanes.store(y, p * LANES, s)
                norm = lanes.fma(s, s, norm)
            h = lanes.splat(r * LOG_2PI)
            lanes.store(logs, 0, lanes.mul(lanes.splat(0.5), lanes.add(lanes.sub(h, logdet), norm)))
            row = rows[i]
            for j in range(min(LANES, out.shape[0] - g)):
                term[0] = logs[j]
                out[g + j, row] += term[0]


@njit(**_JIT)
def _log(f):
    """The lanes' natural logarithms, of positive normal numbers: f = 2^e m with m in
    [√½, √2), log f = e log 2 + 2 atanh(t), t = (m − 1) / (m + 1), |t| < 0.172, by the
    series 2t Σ t^2j / (2j + 1) to j = 9 (its remainder below 3e-17 of the sum), log 2 in
    two parts (the first times e exact). Within a few units in the last place of the
    correctly rounded value (numpy's log over an array cost ~2 ms per iteration at d = 16,
    k = 8, 20 % missing, the pass that added its terms ~2 ms more)."""
    one = lanes.splat(1.0)
    m = lanes.significand(f)
    e = lanes.exponent(f)
    e = lanes.where_above(m, SQRT2, lanes.add(e, one), e)
    m = lanes.where_above(m, SQRT2, lanes.mul(m, lanes.splat(0.5)), m)
    t = lanes.div(lanes.sub(m, one), lanes.add(m, one))
    u = lanes.mul(t, t)
    series = lanes.splat(1.0 / 19.0)
    for j in range(8, -1, -1):
        series = lanes.fma(series, u, lanes.splat(1.0 / (2 * j + 1)))
    low = lanes.fma(e, lanes.splat(LN2_LOW), lanes.mul(lanes.add(t, t), series))
    return lanes.fma(e, lanes.splat(LN2_HIGH), low)


@njit(**_JIT)
def _factor(z, columns, a0, r, lam, lam_means, c, lower, y):
    """Row z̄ (d,), component c: L (packed, into ``lower``) and y = L⁻¹ v (into ``y``), by
    the operations of ``marginal_terms``."""
    _project(z, columns, a0, r, lam, lam_means, c, y)
    _cholesky(columns, a0, r, lam, c, lower)
    for p in range(r):
        rp = p * (p + 1) // 2
        s = y[p]
        for t in range(p):
            s -= lower[rp + t] * y[t]
        y[p] = s * lower[rp + p]


@njit(**_JIT)
def _project(z, columns, a0, r, lam, lam_means, c, v):
    """v = (Λ (z̄ − m))_m for row z̄ (d,) and component c, into ``v``."""
    d = z.shape[0]
    for p in range(r):
        col = columns[a0 + p]
        s = 0.0
        for b in range(d):
            s += lam[col, b, c] * z[b]
        v[p] = s - lam_means[col, c]


@njit(**_JIT)
def _cholesky(columns, a0, r, lam, c, lower):
    """L with Λ_mm = L Lᵀ for the columns ``columns[a0:a0 + r]`` and component c, packed by
    rows into ``lower`` with 1 / L_pp in the diagonal slots."""
    for p in range(r):
        cp = columns[a0 + p]
        rp = p * (p + 1) // 2
        for q in range(p + 1):
            rq = q * (q + 1) // 2
            s = lam[columns[a0 + q], cp, c]
            for t in range(q):
                s -= lower[rp + t] * lower[rq + t]
            if q == p:
                lower[rp + p] = 1.0 / np.sqrt(s)
            else:
                lower[rp + q] = s * lower[rq + q]


@njit(**_JIT)
def _shifts(lower, y, r, e):
    """e = −L⁻ᵀ y, the shift of the missing cells to their conditional means (back
    substitution)."""
    for p in range(r - 1, -1, -1):
        s = -y[p]
        for t in range(p + 1, r):
            s -= lower[t * (t + 1) // 2 + p] * e[t]
        e[p] = s * lower[p * (p + 1) // 2 + p]


@njit(**_JIT)
def _covariance(lower, r, w, cov):
    """C = Λ_mm⁻¹ = L⁻ᵀ L⁻¹ (packed, into ``cov``), through W = L⁻¹ (packed, into ``w``)."""
    for p in range(r):
        rp = p * (p + 1) // 2
        diagonal = lower[rp + p]
        w[rp + p] = diagonal
        for q in range(p - 1, -1, -1):
            s = 0.0
            for t in range(q, p):
                s += lower[rp + t] * w[t * (t + 1) // 2 + q]
            w[rp + q] = -s * diagonal
    for p in range(r):
        for q in range(p + 1):
            s = 0.0
            for t in range(p, r):
                s += w[t * (t + 1) // 2 + p] * w[t * (t + 1) // 2 + q]
            cov[p * (p + 1) // 2 + q] = s


@njit(**_JIT)
def conditional_moments(zt, rows, starts, columns, lam, lam_means, resp, floors, blocks,
                        moments):  # fmt: skip
    """Per block (``blocks``: each row's) and component, for the row-component pairs whose
    responsibility (``resp`` (k, c), the chunk's) is above the component's floor, into
    ``moments`` (blocks, k, q), a pairwise model's statistics (S1, then the pairs a ≤ b):
    r e to S1 and r (z̄ eᵀ + e z̄ᵀ + e eᵀ + C) to the pairs. A block's second moments are
    summed as halves S (r e_a z̄ in row a, r (e_a e_b + C_ab) at a < b, half of it at a = b:
    columns ascending; k d² values, in the first-level cache), then S_ab + S_ba added to
    its pairs (numpy's S + Sᵀ and selection of the pairs over the chunk's blocks cost ~4 ms
    per iteration at d = 16, k = 8, 20 % missing; zeroing and folding (blocks, k, d, d)
    here ~2 ms). ``lam`` and ``moments`` are C-contiguous.

    The pairs go by windows of at most WINDOW, in the order of the rows, each within one
    block (a window starts with a block's first pair, or after WINDOW of its pairs), so that
    what a window holds depends on its block alone (``_moments_window``)."""
    d = lam.shape[0]
    k = resp.shape[0]
    packed = d * (d + 1) // 2
    work = Window(
        np.empty(WINDOW, dtype=np.int64),
        np.empty(WINDOW, dtype=np.int64),
        np.empty(WINDOW),
        np.empty(WINDOW * d),
        np.empty(d + 1, dtype=np.int64),
        np.empty(WINDOW, dtype=np.int64),
        np.empty(packed * LANES),
        np.empty(packed * LANES),
        np.empty(packed * LANES),
        np.empty(2 * d * LANES),
        np.empty(LANES, dtype=np.int64),
        np.empty(d * LANES, dtype=np.int64),
        np.empty(d * LANES, dtype=np.int64),
        np.empty(k * d * d),
    )
    for c in range(k):  # Λ_c's rows, each contiguous
        for a in range(d):
            for b in range(d):
                work.rows_of[(c * d + a) * d + b] = lam[a, b, c]
    second = np.zeros(k * d * d)  # the block's halves S, (k, d, d)
    flat = moments.reshape(moments.size)
    current = -1  # the block whose pairs go
    n = 0
    for i in range(rows.shape[0]):
        if blocks[i] != current:  # a new block: a new window, and the last block's pairs
            if n:
                _moments_window(n, work, zt, rows, starts, columns, lam, lam_means, blocks,
                                flat, second)  # fmt: skip
                n = 0
            if current >= 0:
                _add_pairs(second, flat, current, k, d)
            current = blocks[i]
        row = rows[i]
        for c in range(k):
            weight = np.float64(resp[c, row])
            if not weight > floors[c]:
                continue
            work.row[n] = i
            work.component[n] = c
            work.weight[n] = weight
            n += 1
            if n == WINDOW:
                _moments_window(n, work, zt, rows, starts, columns, lam, lam_means, blocks,
                                flat, second)  # fmt: skip
                n = 0
    if n:
        _moments_window(n, work, zt, rows, starts, columns, lam, lam_means, blocks, flat, second)
    if current >= 0:
        _add_pairs(second, flat, current, k, d)


@njit(**_JIT)
def _add_pairs(second, flat, block, k, d):
    """flat's moments[block, c, d + t] += S_ab + S_ba for the t-th pair a ≤ b (row by row:
    a pairwise model's features), S = second's (c, d, d); then S = 0."""
    features = d + d * (d + 1) // 2
    for c in range(k):
        at = (block * k + c) * features + d
        base = c * d * d
        for a in range(d):
            for b in range(a, d):
                flat[at] += second[base + a * d + b] + second[base + b * d + a]
                at += 1
    second[:] = 0.0


@njit(**_JIT)
def _moments_window(n, work, zt, rows, starts, columns, lam, lam_means, blocks, moments,
                    second):  # fmt: skip
    """``conditional_moments`` for the window's n pairs (``work``: each pair's incomplete row,
    component and responsibility, in the order of the rows, all in one block). The pairs are
    ordered by their number r of missing cells (then by row), and taken LANES at a time,
    pairs of as many missing cells side by side: each pair's v = (Λ (z̄ − m))_m (Λ_c's row by
    LANES columns at a time, then a pairwise sum of the lanes), then e = −C v and
    C = Λ_mm⁻¹ = Wᵀ W (W = L⁻¹) for all of them (their Λ_mm gathered from ``lam``; a lane's
    bits do not depend on which pairs share its vector), then their sums, pair by pair. So
    every loop runs as many times for LANES pairs in a row, often for many, and the order
    of the sums depends on the block's pairs alone, not on the chunks."""
    d, width = lam.shape[0], lam.shape[2]
    k = work.rows_of.size // (d * d)
    features = d + d * (d + 1) // 2  # a pairwise model's statistics
    flat_lam = lam.reshape(lam.size)
    zs = work.z
    lower, w, cv, lanes_v = work.lower, work.w, work.lanes_cov, work.lanes_v
    one = lanes.splat(1.0)
    zero = lanes.splat(0.0)
    counts = work.counts
    counts[:] = 0
    rows_of = work.rows_of
    whole = d - d % LANES
    for m in range(n):  # rows, pair by pair
        i = work.row[m]
        counts[starts[i + 1] - starts[i]] += 1
        row = rows[i]
        for b in range(d):
            zs[m * d + b] = zt[b, row]
    at = 0  # the pairs ordered by their number of missing cells
    for r in range(d + 1):
        size = counts[r]
        counts[r] = at
        at += size
    order = work.order
    for m in range(n):
        i = work.row[m]
        r = starts[i + 1] - starts[i]
        order[counts[r]] = m
        counts[r] += 1
    start = 0
    while start < n:
        i = work.row[order[start]]
        r = starts[i + 1] - starts[i]
        stop = start + 1
        while stop < n and stop - start < LANES:
            i = work.row[order[stop]]
            if starts[i + 1] - starts[i] != r:
                break
            stop += 1
        for j in range(LANES):  # lane j: a pair's cells in lam, and its v (spare lanes repeat)
            m = order[min(start + j, stop - 1)]
            work.lane_pair[j] = m
            c = work.component[m]
            a0 = starts[work.row[m]]
            for p in range(r):
                col = columns[a0 + p]
                work.lane_columns[p * LANES + j] = col * d * width + c
                work.lane_rows[p * LANES + j] = col * width
                base = (c * d + col) * d  # Λ_c's row, LANES columns at a time, then the rest
                s = 0.0
                if whole:
                    at = m * d
                    sums = lanes.mul(lanes.load(rows_of, base), lanes.load(zs, at))
                    for b in range(LANES, whole, LANES):
                        sums = lanes.fma(
                            lanes.load(rows_of, base + b), lanes.load(zs, at + b), sums
                        )
                    s = lanes.total(sums)
                for b in range(whole, d):
                    s += rows_of[base + b] * zs[m * d + b]
                lanes_v[p * LANES + j] = s - lam_means[col, c]
        for p in range(r):  # L, Λ_mm = L Lᵀ (1 / L_pp on the diagonal)
            rp = p * (p + 1) // 2
            for q in range(p + 1):
                rq = q * (q + 1) // 2
                s = lanes.gather(flat_lam, work.lane_columns, q * LANES, work.lane_rows, p * LANES)
                for t in range(q):
                    s = lanes.fnma(
                        lanes.load(lower, (rp + t) * LANES), lanes.load(lower, (rq + t) * LANES), s
                    )
                if q == p:
                    lanes.store(lower, (rp + p) * LANES, lanes.div(one, lanes.sqrt(s)))
                else:
                    diagonal = lanes.load(lower, (rq + q) * LANES)
                    lanes.store(lower, (rp + q) * LANES, lanes.mul(s, diagonal))
        for p in range(r):  # W = L⁻¹
            rp = p * (p + 1) // 2
            diagonal = lanes.load(lower, (rp + p) * LANES)
            lanes.store(w, (rp + p) * LANES, diagonal)
            for q in range(p - 1, -1, -1):
                s = zero
                for t in range(q, p):
                    wtq = lanes.load(w, (t * (t + 1) // 2 + q) * LANES)
                    s = lanes.fma(lanes.load(lower, (rp + t) * LANES), wtq, s)
                lanes.store(w, (rp + q) * LANES, lanes.mul(lanes.sub(zero, s), diagonal))
        for p in range(r):  # C = Wᵀ W
            for q in range(p + 1):
                s = zero
                for t in range(p, r):
                    rt = t * (t + 1) // 2
                    wtp = lanes.load(w, (rt + p) * LANES)
                    s = lanes.fma(wtp, lanes.load(w, (rt + q) * LANES), s)
                lanes.store(cv, (p * (p + 1) // 2 + q) * LANES, s)
        for p in range(r):  # e = −C v: shorter chains than two triangular solves
            s = zero
            for q in range(p + 1):
                cpq = lanes.load(cv, (p * (p + 1) // 2 + q) * LANES)
                s = lanes.fnma(cpq, lanes.load(lanes_v, q * LANES), s)
            for q in range(p + 1, r):
                cqp = lanes.load(cv, (q * (q + 1) // 2 + p) * LANES)
                s = lanes.fnma(cqp, lanes.load(lanes_v, q * LANES), s)
            lanes.store(lanes_v, (d + p) * LANES, s)
        for j in range(stop - start):  # the sums, pair by pair
            m = work.lane_pair[j]
            i = work.row[m]
            weight = work.weight[m]
            a0 = starts[i]
            c = work.component[m]
            s1 = (blocks[i] * k + c) * features  # moments[block, c]'s S1
            for p in range(r):
                cp = columns[a0 + p]
                ep = lanes_v[(d + p) * LANES + j]
                we = weight * ep
                moments[s1 + cp] += we
                line = (c * d + cp) * d  # row cp of the block's S_c
                if d % LANES == 0:
                    scale = lanes.splat(we)
                    for b in range(0, d, LANES):
                        product = lanes.mul(scale, lanes.load(zs, m * d + b))
                        total = lanes.add(lanes.load(second, line + b), product)
                        lanes.store(second, line + b, total)
                else:
                    for b in range(d):
                        second[line + b] += we * zs[m * d + b]
                term = weight * (ep * ep + cv[(p * (p + 1) // 2 + p) * LANES + j])
                second[line + cp] += 0.5 * term
                for q in range(p + 1, r):
                    eq = lanes_v[(d + q) * LANES + j]
                    cqp = cv[(q * (q + 1) // 2 + p) * LANES + j]
                    second[line + columns[a0 + q]] += weight * (ep * eq + cqp)
        start = stop


@njit(**_JIT)
def fill_best(zt, rows, starts, columns, lam, lam_means, which, best, origins, x):
    """Incomplete rows ``which`` into x (one row each) with their missing cells set to their
    conditional means under component ``best``: origin_c + e."""
    d = lam.shape[0]
    lower = np.empty(d * (d + 1) // 2)
    y = np.empty(d)
    e = np.empty(d)
    z = np.empty(d)
    for j in range(which.shape[0]):
        i = which[j]
        a0 = starts[i]
        r = starts[i + 1] - a0
        c = best[j]
        for b in range(d):
            z[b] = zt[b, rows[i]]
        _factor(z, columns, a0, r, lam, lam_means, c, lower, y)
        _shifts(lower, y, r, e)
        for p in range(r):
            col = columns[a0 + p]
            x[j, col] = origins[c, col] + e[p]


@njit(**_JIT)
def conditionals(zt, rows, starts, columns, tri_starts, lam, lam_means, c, shifts, covariances):
    """Under component c: each missing cell's shift to its conditional mean (``shifts``,
    cells) and each row's conditional covariance of its missing cells (``covariances``,
    packed, from ``tri_starts``)."""
    d = lam.shape[0]
    lower = np.empty(d * (d + 1) // 2)
    y = np.empty(d)
    e = np.empty(d)
    w = np.empty(d * (d + 1) // 2)
    cov = np.empty(d * (d + 1) // 2)
    z = np.empty(d)
    for i in range(rows.shape[0]):
        a0 = starts[i]
        r = starts[i + 1] - a0
        for b in range(d):
            z[b] = zt[b, rows[i]]
        _factor(z, columns, a0, r, lam, lam_means, c, lower, y)
        _shifts(lower, y, r, e)
        _covariance(lower, r, w, cov)
        for p in range(r):
            shifts[a0 + p] = e[p]
        for slot in range(r * (r + 1) // 2):
            covariances[tri_starts[i] + slot] = cov[slot]
