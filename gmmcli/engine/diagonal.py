"""The E- and M-step of the models with compiled features over a large complete table in
float64, in cache-sized pieces: the same sums as ``stats``' kernel, found another way. First
written for the diagonal models (diag, spherical, and the diagonal families), hence the name;
full and its correlated families take it too wherever their kernel does not go component by
component (``bycomponent.chosen(…, compiled=True)``: below 12 columns, or for more than
min(d/5, 4 + d/8) components; component by component there are no features to keep).

``stats`` lifts a whole chunk into its features (16 MiB, shifted and transposed in a strided
pass over the rows), multiplies them by the coefficients, and reads them again for the M-step
product; at d = 64 the transposition alone cost more than the arithmetic. Here each piece of
whole blocks (``piece_rows``: its features ~512 KiB, in the core's cache) goes through

1. its features [z, z²] (diag), [z, ‖z‖²] (spherical) or [z, z_a z_b] (full), read row by
   row from the table as it is, z = x − shift (compiled: ``diagonal_compiled``);
2. the E-step product features × coefficientsᵀ (BLAS), the log-sum-exp's shift and floor
   (compiled), numpy's exp, and the responsibilities with their sums per block (compiled);
3. the M-step product, responsibilitiesᵀ × features per block (BLAS), the features still in
   the cache.

The features are those of ``stats`` to the bit, the log densities and responsibilities follow
``stats.estep_chunk`` operation for operation but for the order of the product's sums, and
every sum over rows is taken per block in row order and added in the blocks' one tree
(``stats.block_nodes``): the results agree with ``stats``' to rounding (~1e-15) and do not
depend on the chunks or the threads. Frequency weights and the noise component take this path
too; rows with missing cells, float32, and a pass with a far component or statistics summed
about other points than the shift keep ``stats``' (which has the hooks for them).

numba is imported only when a table is large enough (``COMPILED_FROM``); its kernels are
cached on disk after their first compilation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from . import bycomponent
from .chunk import Rows, scratch
from .stats import BLOCK, EXP_FLOOR, BlockSum, Model, block_nodes

# rows × columns × components of a table (or a streamed block, or a Dask partition) from
# which a pass takes this path: below it numpy's kernel is quick enough that importing numba
# and loading its kernels (~0.5 s per process) would not pay for itself
COMPILED_FROM = 1 << 23
PIECE_BYTES = 1 << 19  # a piece's features, to stay in the core's L2 cache with the rest


def piece_rows(n_features: int) -> int:
    """Rows per piece: whole blocks whose features (n_features wide) fill ~PIECE_BYTES."""
    return max(BLOCK, PIECE_BYTES // (8 * n_features) // BLOCK * BLOCK)


def compiled_pass(model: Model, rows: Rows) -> Callable[[slice, int], BlockSum] | None:
    """The statistics of one chunk of ``rows`` (a slice of whole blocks) and its worst rows,
    by this path: or None when the pass is ``stats``' (see the module's note)."""
    strategy = model.strategy
    if strategy.row_features is None or rows.incomplete:
        return None
    if rows.dtype != np.float64 or rows.x.dtype != np.float64:
        return None
    if model.far.size or not (model.moment_origins == model.shift).all():
        return None
    k = model.coefficients.shape[0]
    if rows.n_rows * rows.n_features * k < COMPILED_FROM:
        return None
    if bycomponent.chosen(strategy, rows.n_features, k, compiled=True):
        return None  # no features: the full kernel goes component by component
    kernels = _compiled()
    if kernels is None:
        return None
    plan = _Plan(
        features=getattr(kernels, strategy.row_features),
        coefficients=np.ascontiguousarray(model.coefficients.T),
        constants=np.ascontiguousarray(model.constants, dtype=np.float64),
        noise_term=model.noise_term,
        shift=np.ascontiguousarray(model.shift, dtype=np.float64),
        origins=model.moment_origins,
        piece=piece_rows(model.coefficients.shape[1]),
    )
    return functools.partial(_chunk_pass, kernels, plan, rows)


@functools.cache
def _compiled() -> ModuleType | None:
    try:
        from . import diagonal_compiled
    except ImportError:
        return None
    assert diagonal_compiled.BLOCK == BLOCK, "the compiled kernels' blocks are stats' blocks"
    return diagonal_compiled


@dataclass(frozen=True)
class _Plan:
    """What a pass needs of the model, in the kernels' layouts."""

    features: Callable[..., None]  # diagonal_compiled.squares or .square_norm
    coefficients: np.ndarray  # (q, k), the model's coefficients transposed
    constants: np.ndarray  # (k,)
    noise_term: float | None
    shift: np.ndarray  # (d,)
    origins: np.ndarray  # (k, d), the shift for every component
    piece: int  # rows per piece


_NO_WEIGHTS = np.empty(0)


def _chunk_pass(
    kernels: ModuleType, plan: _Plan, rows: Rows, span: slice, n_worst: int
) -> BlockSum:
    """One chunk's statistics, piece by piece (see the module's note)."""
    if span.start % BLOCK:
        raise ValueError(f"a chunk must start on a block boundary (row {span.start})")
    x = rows.x[span]
    weights = None if rows.weights is None else rows.weights[span]
    c, d = x.shape
    q, k = plan.coefficients.shape
    noisy = plan.noise_term is not None
    m = k + noisy
    n_blocks = -(-c // BLOCK)
    moments = np.empty((n_blocks, k, q))
    counts = np.zeros((n_blocks, m))
    top = np.empty(c)
    norm = np.empty(c)
    nowhere = np.empty(c, dtype=np.bool_)
    size = min(plan.piece, c)
    features = scratch("diagonal_features", (size, q), np.float64)
    products = scratch("diagonal_products", (size, k), np.float64)
    terms = scratch("diagonal_terms", (size, m), np.float64)
    floor = EXP_FLOOR[np.float64]
    noise_term = 0.0 if plan.noise_term is None else plan.noise_term
    # as in stats: a square or a product beyond the range makes that row's density 0 (an
    # inf − inf is a NaN, which the log-sum-exp takes for −∞)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, c, plan.piece):
            stop = min(c, start + plan.piece)
            f, p, t = features[: stop - start], products[: stop - start], terms[: stop - start]
            plan.features(x[start:stop], plan.shift, f)
            np.matmul(f, plan.coefficients, out=p)
            kernels.shifted_log_joint(
                p, plan.constants, noise_term, noisy, floor, t, top[start:stop], nowhere[start:stop]
            )
            np.exp(t, out=t)
            first = start // BLOCK
            w = _NO_WEIGHTS if weights is None else weights[start:stop]
            kernels.normalise(t, w, weights is not None, norm[start:stop], counts[first:])
            full = (stop - start) // BLOCK
            if full:  # Σ_i r_ij f_i per block: (blocks, k, BLOCK) × (blocks, BLOCK, q)
                resp = t[: full * BLOCK].reshape(full, BLOCK, m).transpose(0, 2, 1)[:, :k]
                blocks = f[: full * BLOCK].reshape(full, BLOCK, q)
                np.matmul(resp, blocks, out=moments[first : first + full])
            if stop - start > full * BLOCK:  # the table's last, short block
                np.matmul(t[full * BLOCK :, :k].T, f[full * BLOCK :], out=moments[first + full])
    log_density = np.log(norm)
    log_density += top
    log_density[nowhere] = -np.inf
    return block_nodes(
        x, span.start, weights, counts[:, :k], moments[:, :, :d], moments[:, :, d:],
        log_density, n_worst, plan.origins,
        counts[:, k] if noisy else None,
    )  # fmt: skip
