"""One chunk of rows as the kernel sees it: shifted, transposed, with the features it needs.

A chunk is one (q, c) array of *features*, one column per row: the first d rows are the
shifted data ``z = x − shift`` and the rest are what the covariance type needs (squares,
square norms, or pairwise products). Then the E-step is one product, coefficients (k, q) ×
features, and the M-step is another, responsibilities (k, c) × featuresᵀ, which yields every
component's first and second moments at once. A shared covariance (tied) carries ‖Pᵀz‖²,
which the E-step fills, and ones instead, and its M-step adds one pooled Gram of z (see
``stats``). Rows as columns keep every elementwise pass on long contiguous memory.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .params import NumericalRangeError

MiB = 1024 * 1024
FLOAT32_REACH = 1e18  # |x − shift| beyond this: squares (and their sums) overflow float32
_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A per-thread buffer reused from chunk to chunk (contents undefined).

    Fresh multi-MiB arrays come from mmap and cost page faults on every chunk — measured at a
    quarter of a diag iteration — so each thread keeps its few buffers. A buffer is valid
    until the same thread asks for the same name again.
    """
    buffers = _local.__dict__.setdefault("buffers", {})
    size = math.prod(shape)
    key = (name, np.dtype(dtype))
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = np.empty(size, dtype=dtype)
        buffers[key] = buffer
    return buffer[:size].reshape(shape)


class Chunk:
    """``features[:d, i] = x_i − shift`` for the chunk's rows, derived rows below them."""

    gaps = None  # where rows miss cells (``missing.ChunkGaps``), set by ``IncompleteRows``
    weights: np.ndarray | None = None  # (c,) the rows' frequency weights (None: all 1)
    # [z; 1], no pairs: the full kernel goes component by component (``bycomponent``)
    by_component = False
    # the rows' own Gram per block, Σ w z zᵀ, by (first row, rows), kept for the later passes
    # of the fit by rows held in memory (``stats._pooled_second``); None: not kept
    grams: dict[tuple[int, int], np.ndarray] | None = None

    def __init__(
        self,
        features: np.ndarray,
        n_features: int,
        offset: int = 0,
        x: np.ndarray | None = None,
        shift: np.ndarray | None = None,
    ) -> None:
        self.features = features
        self.zt = features[:n_features]
        self.extra = features[n_features:]
        self.offset = offset
        self.x = x  # the chunk's rows as read (c, d), in float64, unshifted
        self.shift = shift

    @property
    def n_rows(self) -> int:
        return int(self.features.shape[1])


FILL_ROWS = 4096  # rows of ``Rows.cached`` shifted in at a time, as chunks first need them


class Rows:
    """The data a fit visits chunk by chunk, shifted once for the whole fit.

    When it fits the memory budget (``cache``), the shifted, transposed rows are kept for the
    whole fit in the working precision (written as chunks first ask for them), so each chunk
    starts with a contiguous copy instead of a strided transpose; otherwise each chunk is
    shifted and transposed as it comes.
    Shifting happens in float64 before any rounding to float32. ``weights`` (n,): each row's
    frequency weight, handed to its chunk (None: every row counts once, the unweighted path).
    """

    incomplete = False  # rows with missing cells (``missing.IncompleteRows``)

    def __init__(
        self,
        x: np.ndarray,
        shift: np.ndarray,
        dtype: np.dtype | type = np.float64,
        cache: bool = False,
        weights: np.ndarray | None = None,
    ) -> None:
        self.x = x
        self.weights = weights
        self.shift = shift
        self.dtype = np.dtype(dtype)
        self.n_rows, self.n_features = x.shape
        self.cached: np.ndarray | None = None
        # the whole table as one chunk with a model's features, by model (``stats.make_chunk``)
        self.filled: dict[str, Chunk] = {}
        # with the cached copy, the chunks' Grams too (``Chunk.grams``): they depend on the
        # rows and weights alone, and cost a tied model's M-step a third of its products
        self.grams: dict[tuple[int, int], np.ndarray] | None = {} if cache else None
        if self.dtype == np.float32 and self.n_rows:
            # squares and products must stay finite; max |x − shift| from each column's
            # extremes (the same value: rounding a difference is monotone), as x − shift and
            # its abs() were two n × d float64 temporaries, 256 MB for 1M × 16
            far = float(max(np.max(x.max(axis=0) - shift), np.max(shift - x.min(axis=0))))
            if not far < FLOAT32_REACH:
                raise NumericalRangeError(
                    f"a row lies {far:.3g} from the column means: too far for float32 arithmetic"
                )
        if cache:
            # allocated now, filled piece by piece as chunks first ask for their rows: a pass
            # that never asks (the diagonal models' compiled pass reads the table itself,
            # ``diagonal``) never writes, so never commits, its memory
            self.cached = np.empty((self.n_features, self.n_rows), dtype=self.dtype)
            self._unfilled = np.ones(-(-self.n_rows // FILL_ROWS), dtype=bool)

    @staticmethod
    def fits_budget(n: int, d: int, k: int, dtype: np.dtype | type) -> bool:
        """Whether the cached copy (n·d in dtype) stays within n·k·8 bytes + 64 MiB."""
        return n * d * np.dtype(dtype).itemsize <= n * k * 8 + 64 * MiB

    def _shift_into(self, rows: slice, out: np.ndarray) -> None:
        """out (d, c) ← (x[rows] − shift)ᵀ, 256 rows at a time: numpy walks a whole chunk's
        transpose in the rows' order and writes d rows far apart, which cost 9 ms per 8192 ×
        64 chunk (measured; 1.2 ms in pieces that stay in the cache) — half an iteration of
        the full kernel at d = 64, k = 4."""
        x = self.x[rows]
        for start in range(0, x.shape[0], 256):
            np.subtract(
                x[start : start + 256].T,
                self.shift[:, None],
                out=out[:, start : start + 256],
                dtype=np.float64,
                casting="same_kind",
            )

    def _fill(self, rows: slice) -> None:
        """The cached copy's pieces under these rows, shifted in if not yet. A piece is
        marked only once written, so a thread that finds it unmarked writes it too (the same
        values) rather than read it half-written."""
        pieces = np.flatnonzero(
            self._unfilled[rows.start // FILL_ROWS : -(-rows.stop // FILL_ROWS)]
        )
        for piece in pieces + rows.start // FILL_ROWS:
            span = slice(piece * FILL_ROWS, min((piece + 1) * FILL_ROWS, self.n_rows))
            self._shift_into(span, self.cached[:, span])
            self._unfilled[piece] = False

    def chunk(self, rows: slice, n_extra: int) -> Chunk:
        """The chunk of these rows with room for n_extra derived feature rows."""
        d = self.n_features
        features = scratch("features", (d + n_extra, rows.stop - rows.start), self.dtype)
        if self.cached is not None:
            self._fill(rows)
            features[:d] = self.cached[:, rows]
        else:
            self._shift_into(rows, features[:d])
        chunk = Chunk(features, d, rows.start, self.x[rows], self.shift)
        chunk.grams = self.grams
        if self.weights is not None:
            chunk.weights = self.weights[rows]
        return chunk
