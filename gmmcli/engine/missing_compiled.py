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
with 1 / L_pp in the diagonal slots. The M-step computes again what it needs of the E-step
(v, L) for the few row-component pairs whose responsibility counts: keeping them for
every pair would write and read ~0.5 KB per row, which cost more; so would a table of each
pattern's factors, read by its rows at random, and so did visiting a chunk's rows by runs
of one pattern to factor once per run (a chunk holds ~3 rows per pattern at d = 16, 20 %
missing, and the permuted reads and writes cost what the factors saved); L D Lᵀ instead of
Cholesky (no square roots), numba's SLP vectoriser, and the M-step's pairs eight at a
time were no faster either (all measured). Every sum is taken per block of rows in the
order of the rows, so the result does not depend on how rows are chunked.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LOG_2PI = math.log(2.0 * math.pi)
LANES = 8  # components computed side by side by ``marginal_terms``
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT, fastmath={"contract"})
def marginal_terms(zt, rows, starts, columns, lam, lam_means, out, pivots):
    """For each incomplete row i (chunk row ``rows[i]``, z̄ from ``zt`` (d, c), the chunk's
    shifted rows) and component c: out[i, c] = ½ r log 2π + ½ ‖y‖² − ½ log of
    what ``pivots`` does not hold of det Λ_mm, pivots[i, c] the rest (the caller takes its
    log over all rows at once); y = L⁻¹ v, Λ_mm = L Lᵀ, v = (Λ (z̄ − m))_m. K (``lam``'s
    last axis) is a multiple of LANES.

    Eight components go side by side, each in its own scalars (s0 … s7): written out so, the
    compiler keeps them in registers and the eight chains overlap (measured 2× faster than
    loops over the components with four, and 1.25× faster again with eight and fused
    multiply-adds). A Λ_mm that is not positive definite (only by rounding)
    gives NaN."""
    d, k = lam.shape[0], lam.shape[2]
    lower = np.empty((d * (d + 1) // 2, LANES))
    y = np.empty((d, LANES))
    z = np.empty(d)
    for i in range(rows.shape[0]):
        a0 = starts[i]
        r = starts[i + 1] - a0
        for b in range(d):
            z[b] = zt[b, rows[i]]
        for g in range(0, k, LANES):
            for p in range(r):  # v_p, kept in y until y_p replaces it
                col = columns[a0 + p]
                s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
                for b in range(d):
                    zb = z[b]
                    s0 += lam[col, b, g] * zb
                    s1 += lam[col, b, g + 1] * zb
                    s2 += lam[col, b, g + 2] * zb
                    s3 += lam[col, b, g + 3] * zb
                    s4 += lam[col, b, g + 4] * zb
                    s5 += lam[col, b, g + 5] * zb
                    s6 += lam[col, b, g + 6] * zb
                    s7 += lam[col, b, g + 7] * zb
                y[p, 0] = s0 - lam_means[col, g]
                y[p, 1] = s1 - lam_means[col, g + 1]
                y[p, 2] = s2 - lam_means[col, g + 2]
                y[p, 3] = s3 - lam_means[col, g + 3]
                y[p, 4] = s4 - lam_means[col, g + 4]
                y[p, 5] = s5 - lam_means[col, g + 5]
                y[p, 6] = s6 - lam_means[col, g + 6]
                y[p, 7] = s7 - lam_means[col, g + 7]
            q0 = q1 = q2 = q3 = q4 = q5 = q6 = q7 = 0.0  # ‖y‖²
            l0 = l1 = l2 = l3 = l4 = l5 = l6 = l7 = 0.0  # log det Λ_mm, but for
            f0 = f1 = f2 = f3 = f4 = f5 = f6 = f7 = 1.0  # the product of the pivots not yet in it
            for p in range(r):
                cp = columns[a0 + p]
                rp = p * (p + 1) // 2
                for q in range(p + 1):  # L_pq
                    rq = q * (q + 1) // 2
                    cq = columns[a0 + q]
                    s0 = lam[cq, cp, g]
                    s1 = lam[cq, cp, g + 1]
                    s2 = lam[cq, cp, g + 2]
                    s3 = lam[cq, cp, g + 3]
                    s4 = lam[cq, cp, g + 4]
                    s5 = lam[cq, cp, g + 5]
                    s6 = lam[cq, cp, g + 6]
                    s7 = lam[cq, cp, g + 7]
                    for t in range(q):
                        s0 -= lower[rp + t, 0] * lower[rq + t, 0]
                        s1 -= lower[rp + t, 1] * lower[rq + t, 1]
                        s2 -= lower[rp + t, 2] * lower[rq + t, 2]
                        s3 -= lower[rp + t, 3] * lower[rq + t, 3]
                        s4 -= lower[rp + t, 4] * lower[rq + t, 4]
                        s5 -= lower[rp + t, 5] * lower[rq + t, 5]
                        s6 -= lower[rp + t, 6] * lower[rq + t, 6]
                        s7 -= lower[rp + t, 7] * lower[rq + t, 7]
                    if q == p:
                        lower[rp + p, 0] = 1.0 / np.sqrt(s0)
                        lower[rp + p, 1] = 1.0 / np.sqrt(s1)
                        lower[rp + p, 2] = 1.0 / np.sqrt(s2)
                        lower[rp + p, 3] = 1.0 / np.sqrt(s3)
                        lower[rp + p, 4] = 1.0 / np.sqrt(s4)
                        lower[rp + p, 5] = 1.0 / np.sqrt(s5)
                        lower[rp + p, 6] = 1.0 / np.sqrt(s6)
                        lower[rp + p, 7] = 1.0 / np.sqrt(s7)
                        f0 *= s0
                        f1 *= s1
                        f2 *= s2
                        f3 *= s3
                        f4 *= s4
                        f5 *= s5
                        f6 *= s6
                        f7 *= s7
                    else:
                        lower[rp + q, 0] = s0 * lower[rq + q, 0]
                        lower[rp + q, 1] = s1 * lower[rq + q, 1]
                        lower[rp + q, 2] = s2 * lower[rq + q, 2]
                        lower[rp + q, 3] = s3 * lower[rq + q, 3]
                        lower[rp + q, 4] = s4 * lower[rq + q, 4]
                        lower[rp + q, 5] = s5 * lower[rq + q, 5]
                        lower[rp + q, 6] = s6 * lower[rq + q, 6]
                        lower[rp + q, 7] = s7 * lower[rq + q, 7]
                s0 = y[p, 0]  # y_p = (v_p − Σ_t<p L_pt y_t) / L_pp
                s1 = y[p, 1]
                s2 = y[p, 2]
                s3 = y[p, 3]
                s4 = y[p, 4]
                s5 = y[p, 5]
                s6 = y[p, 6]
                s7 = y[p, 7]
                for t in range(p):
                    s0 -= lower[rp + t, 0] * y[t, 0]
                    s1 -= lower[rp + t, 1] * y[t, 1]
                    s2 -= lower[rp + t, 2] * y[t, 2]
                    s3 -= lower[rp + t, 3] * y[t, 3]
                    s4 -= lower[rp + t, 4] * y[t, 4]
                    s5 -= lower[rp + t, 5] * y[t, 5]
                    s6 -= lower[rp + t, 6] * y[t, 6]
                    s7 -= lower[rp + t, 7] * y[t, 7]
                s0 *= lower[rp + p, 0]
                s1 *= lower[rp + p, 1]
                s2 *= lower[rp + p, 2]
                s3 *= lower[rp + p, 3]
                s4 *= lower[rp + p, 4]
                s5 *= lower[rp + p, 5]
                s6 *= lower[rp + p, 6]
                s7 *= lower[rp + p, 7]
                y[p, 0] = s0
                y[p, 1] = s1
                y[p, 2] = s2
                y[p, 3] = s3
                y[p, 4] = s4
                y[p, 5] = s5
                y[p, 6] = s6
                y[p, 7] = s7
                q0 += s0 * s0
                q1 += s1 * s1
                q2 += s2 * s2
                q3 += s3 * s3
                q4 += s4 * s4
                q5 += s5 * s5
                q6 += s6 * s6
                q7 += s7 * s7
                if not (  # keep the products of the pivots within range
                    1e-150 < f0 < 1e150
                    and 1e-150 < f1 < 1e150
                    and 1e-150 < f2 < 1e150
                    and 1e-150 < f3 < 1e150
                    and 1e-150 < f4 < 1e150
                    and 1e-150 < f5 < 1e150
                    and 1e-150 < f6 < 1e150
                    and 1e-150 < f7 < 1e150
                ):
                    l0 += np.log(f0)
                    l1 += np.log(f1)
                    l2 += np.log(f2)
                    l3 += np.log(f3)
                    l4 += np.log(f4)
                    l5 += np.log(f5)
                    l6 += np.log(f6)
                    l7 += np.log(f7)
                    f0 = f1 = f2 = f3 = f4 = f5 = f6 = f7 = 1.0
            h = r * LOG_2PI
            out[i, g] = 0.5 * (h - l0 + q0)
            out[i, g + 1] = 0.5 * (h - l1 + q1)
            out[i, g + 2] = 0.5 * (h - l2 + q2)
            out[i, g + 3] = 0.5 * (h - l3 + q3)
            out[i, g + 4] = 0.5 * (h - l4 + q4)
            out[i, g + 5] = 0.5 * (h - l5 + q5)
            out[i, g + 6] = 0.5 * (h - l6 + q6)
            out[i, g + 7] = 0.5 * (h - l7 + q7)
            pivots[i, g] = f0
            pivots[i, g + 1] = f1
            pivots[i, g + 2] = f2
            pivots[i, g + 3] = f3
            pivots[i, g + 4] = f4
            pivots[i, g + 5] = f5
            pivots[i, g + 6] = f6
            pivots[i, g + 7] = f7


@njit(**_JIT)
def add_terms(rows, terms, log_pivots, out):
    """out[c, rows[i]] += terms[i, c] − ½ log_pivots[i, c] for c < k (``out`` (k, c)):
    ``marginal_terms``' result, into the chunk's log densities in the order of the rows (a
    transposed scatter by numpy cost ~0.5 ms per chunk: measured). Each term is rounded to
    ``out``'s type before it is added, as numpy's path adds it."""
    k = out.shape[0]
    term = np.empty(1, dtype=out.dtype)
    for i in range(rows.shape[0]):
        row = rows[i]
        for c in range(k):
            term[0] = terms[i, c] - 0.5 * log_pivots[i, c]
            out[c, row] += term[0]


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
def conditional_moments(zt, rows, starts, columns, lam, lam_means, resp, floors, blocks, first,
                        second):  # fmt: skip
    """Per block (``blocks``: each row's) and component, for the row-component pairs whose
    responsibility (``resp`` (k, c), the chunk's) is above the component's floor:
    first[., c, a] += r e_a and, in ``second`` (blocks, k, d, d), r e_a z̄ (row a) plus
    r (e_a e_b + C_ab) at a < b (columns ascending) and half of it at a = b: the caller adds
    ``second``'s transpose to it, which gives r (z̄ eᵀ + e z̄ᵀ + e eᵀ + C). C = Λ_mm⁻¹ is
    needed anyway, so e = −C v (one product rather than two triangular solves, whose
    dependent chains cost more)."""
    d = lam.shape[0]
    k = resp.shape[0]
    lower = np.empty(d * (d + 1) // 2)
    v = np.empty(d)
    e = np.empty(d)
    w = np.empty(d * (d + 1) // 2)
    cov = np.empty(d * (d + 1) // 2)
    z = np.empty(d)
    for i in range(rows.shape[0]):
        row = rows[i]
        a0 = starts[i]
        r = starts[i + 1] - a0
        block = blocks[i]
        loaded = False
        for c in range(k):
            weight = np.float64(resp[c, row])
            if not weight > floors[c]:
                continue
            if not loaded:
                for b in range(d):
                    z[b] = zt[b, row]
                loaded = True
            _cholesky(columns, a0, r, lam, c, lower)
            _covariance(lower, r, w, cov)
            _project(z, columns, a0, r, lam, lam_means, c, v)
            for p in range(r):  # e = −C v: shorter chains than two triangular solves
                s = 0.0
                for q in range(p + 1):
                    s -= cov[p * (p + 1) // 2 + q] * v[q]
                for q in range(p + 1, r):
                    s -= cov[q * (q + 1) // 2 + p] * v[q]
                e[p] = s
            for p in range(r):
                cp = columns[a0 + p]
                we = weight * e[p]
                first[block, c, cp] += we
                for b in range(d):
                    second[block, c, cp, b] += we * z[b]
                term = weight * (e[p] * e[p] + cov[p * (p + 1) // 2 + p])
                second[block, c, cp, cp] += 0.5 * term
                for q in range(p + 1, r):
                    slot = q * (q + 1) // 2 + p
                    second[block, c, cp, columns[a0 + q]] += weight * (e[p] * e[q] + cov[slot])


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
