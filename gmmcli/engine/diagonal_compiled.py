"""The per-row work of ``diagonal`` (the pass of the models with compiled features), compiled by
numba: the features of a sub-chunk of rows read straight from the table, and the log-sum-exp
on either side of numpy's exp. The two products between them stay BLAS's (through numpy) and
the exp stays numpy's (SIMD; a scalar exp per pair cost more than both products). Imported
only when a large table takes that pass.

Every loop runs over whole rows in row order, and each sum over rows is taken per block of
``BLOCK`` rows in row order, so no result depends on how the rows are cut into chunks or
shared among threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
BLOCK = 512  # stats.BLOCK, a constant here for the compiler (``diagonal`` checks they agree)


@njit(**_JIT)
def _shift_row(row, shift, z, squares):
    """z = row − shift and, into ``squares``, z² (one row; vectorised by the compiler)."""
    for a in range(row.shape[0]):
        value = row[a] - shift[a]
        z[a] = value
        squares[a] = value * value


@njit(**_JIT)
def _shift_row_norm(row, shift, z):
    """z = row − shift, and ‖z‖² (summed over the columns in order)."""
    total = 0.0
    for a in range(row.shape[0]):
        value = row[a] - shift[a]
        z[a] = value
        total += value * value
    return total


@njit(**_JIT)
def squares(x, shift, features):
    """features (c, 2d) = [z, z²] of the rows x (c, d), z = x − shift: the diag model's."""
    d = x.shape[1]
    for i in range(x.shape[0]):
        _shift_row(x[i], shift, features[i, :d], features[i, d:])


@njit(**_JIT)
def square_norm(x, shift, features):
    """features (c, d + 1) = [z, ‖z‖²] of the rows x (c, d): the spherical model's."""
    d = x.shape[1]
    for i in range(x.shape[0]):
        features[i, d] = _shift_row_norm(x[i], shift, features[i, :d])


@njit(**_JIT)
def pairs(x, shift, features):
    """features (c, d + d(d + 1)/2) = [z, z_a z_b for a ≤ b in ``np.triu_indices(d)``
    order] of the rows x (c, d): the full kernel's features (``covariance._pairs``), for the
    models with correlations at few columns."""
    d = x.shape[1]
    for i in range(x.shape[0]):
        z = features[i, :d]
        row = x[i]
        for a in range(d):
            z[a] = row[a] - shift[a]
        position = d
        for a in range(d):
            za = z[a]
            for b in range(a, d):
                features[i, position] = za * z[b]
                position += 1


@njit(**_JIT)
def _fmax(a, b):
    """np.fmax: the larger, a NaN losing to any number."""
    if a != a:
        return b
    if b != b:
        return a
    return a if a >= b else b


@njit(**_JIT)
def shifted_log_joint(products, constants, noise_term, noisy, floor, out, top, nowhere):
    """From the products (c, k) of the features and the coefficients: each row's log π_j N_j
    (product + constant; with ``noisy``, a last column ``noise_term``), less the row's
    largest term, raised to ``floor`` — into out (c, k + noisy), exp's argument — with the
    row's largest term in ``top`` and whether it is −∞ in ``nowhere``. ``stats.estep_chunk``
    in the same operations: a NaN term (an overflowing expansion) counts as −∞ in the
    largest (fmax) and as ``floor`` after it; a largest term that is not finite becomes 0."""
    c, k = products.shape
    for i in range(c):
        best = products[i, 0] + constants[0]
        out[i, 0] = best
        for j in range(1, k):
            value = products[i, j] + constants[j]
            out[i, j] = value
            best = _fmax(best, value)
        if noisy:
            out[i, k] = noise_term
            best = _fmax(best, noise_term)
        nowhere[i] = best == -np.inf
        if not (best > -np.inf and best < np.inf):
            best = 0.0
        top[i] = best
        for j in range(k + noisy):
            value = out[i, j] - best
            out[i, j] = value if value >= floor else floor  # fmax(value, floor)


@njit(**_JIT)
def normalise(terms, weights, weighted, norm, counts):
    """Responsibilities in place: terms (c, m) = e^(log π_j N_j − top) become r_ij = terms_ij
    / norm_i (× w_i when ``weighted``), norm_i = Σ_j terms_ij; counts (blocks, m) += the sum of
    r_ij over each block of BLOCK rows, in row order (block 0 starts at row 0)."""
    c, m = terms.shape
    for i in range(c):
        total = 0.0
        for j in range(m):
            total += terms[i, j]
        norm[i] = total
        block = i // BLOCK
        w = weights[i] if weighted else 1.0
        for j in range(m):
            r = terms[i, j] / total
            if weighted:
                r *= w
            terms[i, j] = r
            counts[block, j] += r
