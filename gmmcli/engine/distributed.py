"""Fits and scores on a Dask cluster: the rows stay on the workers, the loop on the client.

Each partition of the data is a task result held in a worker's memory for the whole fit (a
``Part``, with the shifted transposed copy the kernel reads). An EM iteration sends the
current ``Model`` (a few kB) with one task per partition, which runs the in-memory kernel
(``stats.em_pass``) over its rows; the partitions' ``SuffStats`` are summed on the workers
in a tree (``FAN_IN`` at a time, always in partition order, so the result does not depend on
which worker finished first), and only the sum comes back for the M-step on the client.

Lost workers: every partition is a task with lineage (read, convert, shift), so Dask
recomputes what a dead worker held; a pass that Dask gives up on raises its error, and a
cluster left with no workers raises ``ClusterError`` after ``NO_WORKERS_TIMEOUT`` seconds
instead of waiting for ever.

This is the only engine module that imports dask (``distributed``), and only when used.
"""

from __future__ import annotations

import functools
import operator
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .init import DataSummary
from .missing import Rows, rows_of
from .sources import SAMPLE_SIZE, PartSummary, SampledInit, sample_key, summarise_part
from .stats import (
    Model,
    SuffStats,
    em_pass,
    single_threaded_blas,
)

FAN_IN = 8  # statistics summed per reduction task
NO_WORKERS_TIMEOUT = 60.0  # seconds without a worker before a pass gives up
POLL = 2.0


class ClusterError(RuntimeError):
    """The cluster cannot finish the work (no workers left, or Dask gave up on a task)."""


class Part:
    """One partition on a worker: its rows (float64, as read), shifted for one fit."""

    def __init__(self, block: Any, shift: np.ndarray, dtype: str, n_components: int) -> None:
        x, weights = _values(block), _weights(block)
        n, d = x.shape
        cache = Rows.fits_budget(n, d, n_components, dtype)
        self.x = x
        self.rows = rows_of(x, shift, dtype, cache=cache, weights=weights)
        exact = self.rows.dtype == np.float64
        self.exact = self.rows if exact else rows_of(x, shift, weights=weights)


def _values(block: Any) -> np.ndarray:
    """A partition's rows: an (n, d) array, or an object holding it as ``.x``."""
    return getattr(block, "x", block)


def _weights(block: Any) -> np.ndarray | None:
    """A partition's frequency weights (n,), held as ``.weights``; None without."""
    return getattr(block, "weights", None)


def _n_rows(block: Any) -> int:
    return int(_values(block).shape[0])


def _summarise(
    block: Any, offset: int, key: np.uint64, sample_size: int, chunk_size: int, diagonal: bool
) -> PartSummary:
    with single_threaded_blas():
        x, weights = _values(block), _weights(block)
        return summarise_part(x, offset, key, sample_size, chunk_size, diagonal, weights)


def _pass(part: Part, model: Model, chunk_size: int, n_worst: int, exact: bool) -> SuffStats:
    rows = part.exact if exact else part.rows
    with single_threaded_blas():
        return em_pass(model, rows, chunk_size, n_worst=n_worst, threads=1)


def _sum(*parts: Any) -> Any:
    return functools.reduce(operator.add, parts)


class DaskSource(SampledInit):
    """The rows of a fit as partitions on a Dask cluster (``parts``: futures of (n_i, d)
    float64 arrays, or of objects holding one as ``.x`` and the rows' frequency weights as
    ``.weights`` (None: unweighted), in the order of the data)."""

    def __init__(
        self,
        client: Any,
        parts: Sequence[Any],
        n_features: int,
        seed: int = 0,
        sample_size: int = SAMPLE_SIZE,
    ) -> None:
        self.client = client
        self.parts = list(parts)
        self.n_features = n_features
        self.seed = seed
        self.sample_size = sample_size
        self.bound: list[Any] = []
        self.chunk_size = 0

    def _submit(self, func: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(func, *args, pure=False)

    def _tree_sum(self, futures: list[Any]) -> Any:
        """The sum of the futures' values, computed on the workers in a tree, in order."""
        while len(futures) > 1:
            futures = [
                self._submit(_sum, *futures[i : i + FAN_IN]) for i in range(0, len(futures), FAN_IN)
            ]
        return wait_result(self.client, futures[0])

    def summarise(self, chunk_size: int, diagonal: bool = False) -> tuple[int, DataSummary]:
        sizes = [wait_result(self.client, self._submit(_n_rows, p)) for p in self.parts]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        key = sample_key(self.seed)
        futures = [
            self._submit(_summarise, p, int(offset), key, self.sample_size, chunk_size, diagonal)
            for p, offset in zip(self.parts, offsets, strict=True)
        ]
        merged: PartSummary = self._tree_sum(futures)
        if merged.n_rows == 0:
            raise ValueError("no rows")
        self.sample = merged.sample()
        return merged.n_rows, merged.summary()

    def bind(self, shift: np.ndarray, dtype: str, n_components: int, chunk_size: int) -> None:
        """Shift each partition on its worker and keep it there for the fit's passes."""
        self.release()
        self.shift, self.n_components = shift, n_components
        self.bound = [self._submit(Part, p, shift, dtype, n_components) for p in self.parts]
        for future in self.bound:
            wait_result(self.client, future, fetch=False)
        self.chunk_size = chunk_size

    def em_pass(self, model: Model, n_worst: int, exact: bool = False) -> SuffStats:
        futures = [
            self._submit(_pass, part, model, self.chunk_size, n_worst, exact) for part in self.bound
        ]
        return self._tree_sum(futures)

    def release(self) -> None:
        """Let the workers drop the shifted partitions of the last fit."""
        for future in self.bound:
            future.release()
        self.bound = []


def wait_result(client: Any, future: Any, fetch: bool = True) -> Any:
    """The future's value (or None when not ``fetch``), waiting as long as the cluster has
    workers: ``ClusterError`` after NO_WORKERS_TIMEOUT s without any, and Dask's own errors
    (a task failed, or was lost with too many workers) as they come."""
    from distributed import wait

    without = None
    while True:
        try:
            wait([future], timeout=POLL)
        except TimeoutError:
            pass
        else:
            return future.result() if fetch else None
        if _n_workers(client) > 0:
            without = None
        elif without is None:
            without = time.monotonic()
        elif time.monotonic() - without > NO_WORKERS_TIMEOUT:
            raise ClusterError(
                f"the Dask cluster has had no workers for {NO_WORKERS_TIMEOUT:.0f} s"
            )


def _n_workers(client: Any) -> int:
    try:
        return len(client.scheduler_info(n_workers=-1).get("workers", {}))
    except TypeError:  # older distributed: no n_workers argument
        return len(client.scheduler_info().get("workers", {}))
    except Exception:
        return 0
