"""The per-row work of ``missing`` for models with full precisions, compiled by numba: one
pass over a chunk's incomplete rows for the E-step, one for the M-step, each row and
component done in registers (numpy's arrays-of-rows version spends most of its time on
temporaries and gathers). Imported only when a large table has missing cells.

A row's missing cells are listed row by row (``starts``: its first cell, ``columns``: their
columns, ascending); its r missing cells own r(r+1)/2 slots of the packed factors
(``tri_starts``), entry (p, q), q ≤ p, at p(p+1)/2 + q. Every sum is taken per block of rows
in the order of the rows, so the result does not depend on how rows are chunked.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LOG_2PI = math.log(2.0 * math.pi)
LANES = 4  # components computed side by side by ``marginal_terms``
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def marginal_terms(zbar, starts, columns, tri_starts, lam, lam_means, out, pivots, lower, y):  # noqa: PLR0913
    """For each incomplete row i and component c: out[i, c] = ½ r log 2π + ½ ‖y‖² − ½ log of
    what ``pivots`` does not hold of det Λ_mm, pivots[i, c] the rest (the caller takes its
    log over all rows at once); y = L⁻¹ v, Λ_mm = L Lᵀ, v = (Λ (z̄ − m))_m; L (packed,
    ``lower``, 1 / L_pp in the diagonal slots) and y kept for the M-step. ``lam`` (d, d, K)
    holds Λ_c[b, a] at [a, b, c], ``lam_means`` (d, K) Λ_c m_c, K a multiple of LANES.

    Four components go side by side, each in its own scalars (s0 … s3): written out so,
    the compiler keeps them in registers and the four chains overlap (measured 2× faster
    than loops over the components). A Λ_mm that is not positive definite (only by
    rounding) gives NaN."""
    m, d = zbar.shape
    k = lam.shape[2]
    for i in range(m):
        a0 = starts[i]
        r = starts[i + 1] - a0
        t0 = tri_starts[i]
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
                y[a0 + p, g] = s0 - lam_means[col, g]
                y[a0 + p, g + 1] = s1 - lam_means[col, g + 1]
                y[a0 + p, g + 2] = s2 - lam_means[col, g + 2]
                y[a0 + p, g + 3] = s3 - lam_means[col, g + 3]
            q0 = q1 = q2 = q3 = 0.0  # ‖y‖²
            l0 = l1 = l2 = l3 = 0.0  # log det Λ_mm, but for
            f0 = f1 = f2 = f3 = 1.0  # the product of the pivots not yet in it
            for p in range(r):
                cp = columns[a0 + p]
                rp = t0 + p * (p + 1) // 2
                for q in range(p + 1):  # L_pq
                    rq = t0 + q * (q + 1) // 2
                    cq = columns[a0 + q]
                    s0 = lam[cq, cp, g]
                    s1 = lam[cq, cp, g + 1]
                    s2 = lam[cq, cp, g + 2]
                    s3 = lam[cq, cp, g + 3]
                    for t in range(q):
                        s0 -= lower[rp + t, g] * lower[rq + t, g]
                        s1 -= lower[rp + t, g + 1] * lower[rq + t, g + 1]
                        s2 -= lower[rp + t, g + 2] * lower[rq + t, g + 2]
                        s3 -= lower[rp + t, g + 3] * lower[rq + t, g + 3]
                    if q == p:
                        lower[rp + p, g] = 1.0 / np.sqrt(s0)
                        lower[rp + p, g + 1] = 1.0 / np.sqrt(s1)
                        lower[rp + p, g + 2] = 1.0 / np.sqrt(s2)
                        lower[rp + p, g + 3] = 1.0 / np.sqrt(s3)
                        f0 *= s0
                        f1 *= s1
                        f2 *= s2
                        f3 *= s3
                    else:
                        lower[rp + q, g] = s0 * lower[rq + q, g]
                        lower[rp + q, g + 1] = s1 * lower[rq + q, g + 1]
                        lower[rp + q, g + 2] = s2 * lower[rq + q, g + 2]
                        lower[rp + q, g + 3] = s3 * lower[rq + q, g + 3]
                s0 = y[a0 + p, g]  # y_p = (v_p − Σ_t<p L_pt y_t) / L_pp
                s1 = y[a0 + p, g + 1]
                s2 = y[a0 + p, g + 2]
                s3 = y[a0 + p, g + 3]
                for t in range(p):
                    s0 -= lower[rp + t, g] * y[a0 + t, g]
                    s1 -= lower[rp + t, g + 1] * y[a0 + t, g + 1]
                    s2 -= lower[rp + t, g + 2] * y[a0 + t, g + 2]
                    s3 -= lower[rp + t, g + 3] * y[a0 + t, g + 3]
                s0 *= lower[rp + p, g]
                s1 *= lower[rp + p, g + 1]
                s2 *= lower[rp + p, g + 2]
                s3 *= lower[rp + p, g + 3]
                y[a0 + p, g] = s0
                y[a0 + p, g + 1] = s1
                y[a0 + p, g + 2] = s2
                y[a0 + p, g + 3] = s3
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
def _conditional(lower, y, a0, t0, r, c, e, w, cov):
    """Row-component (a0, t0, r; c): e = −L⁻ᵀ y (the shift of the missing cells to their
    conditional means) and cov = Λ_mm⁻¹ = L⁻ᵀ L⁻¹ (packed), through W = L⁻¹ (packed)."""
    for p in range(r):
        row_p = t0 + p * (p + 1) // 2
        diagonal = lower[row_p + p, c]
        w[p * (p + 1) // 2 + p] = diagonal
        for q in range(p - 1, -1, -1):
            s = 0.0
            for t in range(q, p):
                s += lower[row_p + t, c] * w[t * (t + 1) // 2 + q]
            w[p * (p + 1) // 2 + q] = -s * diagonal
    for p in range(r):
        s = 0.0
        for t in range(p, r):
            s += w[t * (t + 1) // 2 + p] * y[a0 + t, c]
        e[p] = -s
        for q in range(p + 1):
            s = 0.0
            for t in range(p, r):
                s += w[t * (t + 1) // 2 + p] * w[t * (t + 1) // 2 + q]
            cov[p * (p + 1) // 2 + q] = s


@njit(**_JIT)
def conditional_moments(  # noqa: PLR0913
    zbar, starts, columns, tri_starts, lower, y, resp, floors, blocks, first, cross, squares
):
    """Per block (``blocks``: each row's) and component, for the row-component pairs whose
    responsibility is above the component's floor: first += r e, cross[a, :] += r e_a z̄
    and squares[a, b] += r (e_a e_b + C_ab) for a ≤ b (columns ascending: the upper
    triangle; the caller mirrors both)."""
    m, d = zbar.shape
    k = resp.shape[1]
    e = np.empty(d)
    w = np.empty(d * (d + 1) // 2)
    cov = np.empty(d * (d + 1) // 2)
    for i in range(m):
        a0 = starts[i]
        r = starts[i + 1] - a0
        t0 = tri_starts[i]
        block = blocks[i]
        for c in range(k):
            weight = resp[i, c]
            if not weight > floors[c]:
                continue
            _conditional(lower, y, a0, t0, r, c, e, w, cov)
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
def fill_best(starts, columns, tri_starts, lower, y, best, rows, origins, x):  # noqa: PLR0913
    """Each incomplete row of x (at ``rows``) with its missing cells set to their
    conditional means under the row's ``best`` component c: origin_c + e, e = −L⁻ᵀ y
    (back substitution)."""
    m = starts.shape[0] - 1
    e = np.empty(x.shape[1])
    for i in range(m):
        a0 = starts[i]
        r = starts[i + 1] - a0
        t0 = tri_starts[i]
        c = best[i]
        for p in range(r - 1, -1, -1):
            s = -y[a0 + p, c]
            for t in range(p + 1, r):
                s -= lower[t0 + t * (t + 1) // 2 + p, c] * e[t]
            e[p] = s * lower[t0 + p * (p + 1) // 2 + p, c]
        for p in range(r):
            col = columns[a0 + p]
            x[rows[i], col] = origins[c, col] + e[p]


@njit(**_JIT)
def conditionals(starts, tri_starts, lower, y, components, shifts, covariances):
    """Under one component per row (``components``): each missing cell's shift to its
    conditional mean (``shifts``, cells), and the conditional covariance of the row's
    missing cells (``covariances``, packed by rows)."""
    m = starts.shape[0] - 1
    d = 1
    for i in range(m):
        d = max(d, starts[i + 1] - starts[i])
    e = np.empty(d)
    w = np.empty(d * (d + 1) // 2)
    cov = np.empty(d * (d + 1) // 2)
    for i in range(m):
        a0 = starts[i]
        r = starts[i + 1] - a0
        t0 = tri_starts[i]
        _conditional(lower, y, a0, t0, r, components[i], e, w, cov)
        for p in range(r):
            shifts[a0 + p] = e[p]
        for slot in range(r * (r + 1) // 2):
            covariances[t0 + slot] = cov[slot]
