"""The per-row work of ``missing`` for models with full precisions, compiled by numba: one
pass over a chunk's incomplete rows for the E-step, one for the M-step, each row and
component done in registers and small buffers (numpy's arrays-of-rows version spends most
of its time on temporaries and gathers). Imported only when a large table has missing
cells.

A row's missing cells are listed row by row (``starts``: its first cell, ``columns``: their
columns, ascending). ``lam`` (d, d, K) holds each component's precision Λ_c, Λ_c[b, a] at
[a, b, c], and ``lam_means`` (d, K) Λ_c m_c (m_c = μ_c − shift): the row of a missing
column is contiguous over the components. The factor of a row's Λ_mm = L Lᵀ is packed by
rows, entry (p, q), q ≤ p, at p(p+1)/2 + q, with 1 / L_pp in the diagonal slots. The M-step
computes again what it needs of the E-step (v, L, y) for the few row-component pairs whose
responsibility counts, from the same operations in the same order (so with the same bits):
keeping them for every pair would write and read ~0.5 KB per row, which cost more. Every
sum is taken per block of rows in the order of the rows, so the result does not depend on
how rows are chunked.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LOG_2PI = math.log(2.0 * math.pi)
LANES = 4  # components computed side by side by ``marginal_terms``
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def marginal_terms(zbar, starts, columns, lam, lam_means, out, pivots):
    """For each incomplete row i and component c: out[i, c] = ½ r log 2π + ½ ‖y‖² − ½ log of
    what ``pivots`` does not hold of det Λ_mm, pivots[i, c] the rest (the caller takes its
    log over all rows at once); y = L⁻¹ v, Λ_mm = L Lᵀ, v = (Λ (z̄ − m))_m. K (``lam``'s
    last axis) is a multiple of LANES.

    Four components go side by side, each in its own scalars (s0 … s3): written out so, the
    compiler keeps them in registers and the four chains overlap (measured 2× faster than
    loops over the components). A Λ_mm that is not positive definite (only by rounding)
    gives NaN."""
    m, d = zbar.shape
    k = lam.shape[2]
    lower = np.empty((d * (d + 1) // 2, LANES))
    y = np.empty((d, LANES))
    for i in range(m):
        a0 = starts[i]
        r = starts[i + 1] - a0
        for g in range(0, k, LANES):
            for p in range(r):  # v_p, kept in y until y_p replaces it
                col = columns[a0 + p]
                s0 = s1 = s2 = s3 = 0.0
                for b in range(d):
                    zb = zbar[i, b]
                    s0 += lam[col, b, g] * zb
                    s1 += lam[col, b, g + 1] * zb
                    s2 += lam[col, b, g + 2] * zb
                    s3 += lam[col, b, g + 3] * zb
                y[p, 0] = s0 - lam_means[col, g]
                y[p, 1] = s1 - lam_means[col, g + 1]
                y[p, 2] = s2 - lam_means[col, g + 2]
                y[p, 3] = s3 - lam_means[col, g + 3]
            q0 = q1 = q2 = q3 = 0.0  # ‖y‖²
            l0 = l1 = l2 = l3 = 0.0  # log det Λ_mm, but for
            f0 = f1 = f2 = f3 = 1.0  # the product of the pivots not yet in it
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
                    for t in range(q):
                        s0 -= lower[rp + t, 0] * lower[rq + t, 0]
                        s1 -= lower[rp + t, 1] * lower[rq + t, 1]
                        s2 -= lower[rp + t, 2] * lower[rq + t, 2]
                        s3 -= lower[rp + t, 3] * lower[rq + t, 3]
                    if q == p:
                        lower[rp + p, 0] = 1.0 / np.sqrt(s0)
                        lower[rp + p, 1] = 1.0 / np.sqrt(s1)
                        lower[rp + p, 2] = 1.0 / np.sqrt(s2)
                        lower[rp + p, 3] = 1.0 / np.sqrt(s3)
                        f0 *= s0
                        f1 *= s1
                        f2 *= s2
                        f3 *= s3
                    else:
                        lower[rp + q, 0] = s0 * lower[rq + q, 0]
                        lower[rp + q, 1] = s1 * lower[rq + q, 1]
                        lower[rp + q, 2] = s2 * lower[rq + q, 2]
                        lower[rp + q, 3] = s3 * lower[rq + q, 3]
                s0 = y[p, 0]  # y_p = (v_p − Σ_t<p L_pt y_t) / L_pp
                s1 = y[p, 1]
                s2 = y[p, 2]
                s3 = y[p, 3]
                for t in range(p):
                    s0 -= lower[rp + t, 0] * y[t, 0]
                    s1 -= lower[rp + t, 1] * y[t, 1]
                    s2 -= lower[rp + t, 2] * y[t, 2]
                    s3 -= lower[rp + t, 3] * y[t, 3]
                s0 *= lower[rp + p, 0]
                s1 *= lower[rp + p, 1]
                s2 *= lower[rp + p, 2]
                s3 *= lower[rp + p, 3]
                y[p, 0] = s0
                y[p, 1] = s1
                y[p, 2] = s2
                y[p, 3] = s3
                q0 += s0 * s0
                q1 += s1 * s1
                q2 += s2 * s2
                q3 += s3 * s3
                if not (  # keep the products of the pivots within range
                    1e-150 < f0 < 1e150
                    and 1e-150 < f1 < 1e150
                    and 1e-150 < f2 < 1e150
                    and 1e-150 < f3 < 1e150
                ):
                    l0 += np.log(f0)
                    l1 += np.log(f1)
                    l2 += np.log(f2)
                    l3 += np.log(f3)
                    f0 = f1 = f2 = f3 = 1.0
            h = r * LOG_2PI
            out[i, g] = 0.5 * (h - l0 + q0)
            out[i, g + 1] = 0.5 * (h - l1 + q1)
            out[i, g + 2] = 0.5 * (h - l2 + q2)
            out[i, g + 3] = 0.5 * (h - l3 + q3)
            pivots[i, g] = f0
            pivots[i, g + 1] = f1
            pivots[i, g + 2] = f2
            pivots[i, g + 3] = f3


@njit(**_JIT)
def _factor(zbar, i, columns, a0, r, lam, lam_means, c, lower, y):
    """Row i, component c: L (packed, into ``lower``) and y = L⁻¹ v (into ``y``), by the
    operations of ``marginal_terms`` in its order (so with its bits)."""
    d = zbar.shape[1]
    for p in range(r):
        col = columns[a0 + p]
        s = 0.0
        for b in range(d):
            s += lam[col, b, c] * zbar[i, b]
        y[p] = s - lam_means[col, c]
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
        s = y[p]
        for t in range(p):
            s -= lower[rp + t] * y[t]
        y[p] = s * lower[rp + p]


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
def conditional_moments(
    zbar, starts, columns, lam, lam_means, resp, floors, blocks, first, cross, squares
):
    """Per block (``blocks``: each row's) and component, for the row-component pairs whose
    responsibility is above the component's floor: first += r e, cross[a, :] += r e_a z̄
    and squares[a, b] += r (e_a e_b + C_ab) for a ≤ b (columns ascending: the upper
    triangle; the caller mirrors both)."""
    m, d = zbar.shape
    k = resp.shape[1]
    lower = np.empty(d * (d + 1) // 2)
    y = np.empty(d)
    e = np.empty(d)
    w = np.empty(d * (d + 1) // 2)
    cov = np.empty(d * (d + 1) // 2)
    for i in range(m):
        a0 = starts[i]
        r = starts[i + 1] - a0
        block = blocks[i]
        for c in range(k):
            weight = resp[i, c]
            if not weight > floors[c]:
                continue
            _factor(zbar, i, columns, a0, r, lam, lam_means, c, lower, y)
            _shifts(lower, y, r, e)
            _covariance(lower, r, w, cov)
            for p in range(r):
                cp = columns[a0 + p]
                we = weight * e[p]
                first[block, c, cp] += we
                for b in range(d):
                    cross[block, c, cp, b] += we * zbar[i, b]
                for q in range(p, r):
                    slot = q * (q + 1) // 2 + p
                    squares[block, c, cp, columns[a0 + q]] += weight * (e[p] * e[q] + cov[slot])


@njit(**_JIT)
def fill_best(zbar, starts, columns, lam, lam_means, which, best, origins, x):
    """Rows ``which`` (incomplete rows) into x (one row each) with their missing cells set
    to their conditional means under component ``best``: origin_c + e."""
    d = zbar.shape[1]
    lower = np.empty(d * (d + 1) // 2)
    y = np.empty(d)
    e = np.empty(d)
    for j in range(which.shape[0]):
        i = which[j]
        a0 = starts[i]
        r = starts[i + 1] - a0
        c = best[j]
        _factor(zbar, i, columns, a0, r, lam, lam_means, c, lower, y)
        _shifts(lower, y, r, e)
        for p in range(r):
            col = columns[a0 + p]
            x[j, col] = origins[c, col] + e[p]


@njit(**_JIT)
def conditionals(zbar, starts, columns, tri_starts, lam, lam_means, c, shifts, covariances):
    """Under component c: each missing cell's shift to its conditional mean (``shifts``,
    cells) and each row's conditional covariance of its missing cells (``covariances``,
    packed, from ``tri_starts``)."""
    m, d = zbar.shape
    lower = np.empty(d * (d + 1) // 2)
    y = np.empty(d)
    e = np.empty(d)
    w = np.empty(d * (d + 1) // 2)
    cov = np.empty(d * (d + 1) // 2)
    for i in range(m):
        a0 = starts[i]
        r = starts[i + 1] - a0
        _factor(zbar, i, columns, a0, r, lam, lam_means, c, lower, y)
        _shifts(lower, y, r, e)
        _covariance(lower, r, w, cov)
        for p in range(r):
            shifts[a0 + p] = e[p]
        for slot in range(r * (r + 1) // 2):
            covariances[tri_starts[i] + slot] = cov[slot]
