"""Where the rows of a fit live: in memory, in a file read block by block, or on Dask workers.

The EM loop (``em``) sees data only through a ``Source``: one summary (shift, covariance or,
for a diagonal model, only the variances),
the starting parameters, and one E-step pass per iteration reduced to ``SuffStats``. So every
engine runs the same loop, collapse checks and re-seeding (which needs only
``SuffStats.worst_points``, never the data).

Sources other than memory start from a *sample*: the rows with the smallest pseudo-random
keys, a key being a hash of (seed, row number). The sample is the same however the rows are
split into blocks or partitions, and holds every row, in order, when the data has no more
rows than the sample size — then every initialiser gives what it gives in memory.

Rows may carry frequency weights (``weights``; a block source's blocks hold each row's weight
as their last column). A weighted source's summary is weighted (``missing.summarise``, with
Σ w as ``DataSummary.weight_total``), its rows hand their weights to the kernel (``Rows``),
and its initialisers see the rows of positive weight, each once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import missing
from .init import DataSummary, column_range, summarise
from .stats import Model, SuffStats, em_pass, total

# Rows the initialisers see when the data is not in memory (k-means++ on a sample).
SAMPLE_SIZE = 100_000


class Source(Protocol):
    """The data of one fit as the EM loop visits it."""

    n_features: int

    def summarise(self, chunk_size: int, diagonal: bool = False) -> tuple[int, DataSummary]:
        """The number of rows and the data summary (column means, covariance); ``diagonal``
        (the model's ``is_diagonal``): the variances without the covariance matrix."""
        ...

    def bind(self, shift: np.ndarray, dtype: str, n_components: int, chunk_size: int) -> None:
        """Make the rows ready for the iterations of one fit (shifted by ``shift``)."""
        ...

    def em_pass(self, model: Model, n_worst: int, exact: bool = False) -> SuffStats:
        """One E-step over every row, reduced to statistics; ``exact``: in float64 whatever
        the working precision (for the log-likelihood reported)."""
        ...

    def init_rows(self) -> np.ndarray:
        """The rows the initialisers (``init.INITIALISERS``) see: all of them in memory, a
        sample otherwise; complete (``missing.starting_rows``)."""
        ...


class ArraySource:
    """Rows held in memory as one (n, d) array: the original engine, call for call;
    ``weights`` (n,): the rows' frequency weights (None: each row counts once)."""

    def __init__(self, x: np.ndarray, threads: int, weights: np.ndarray | None = None) -> None:
        self.x = x
        self.weights = weights
        self.n_features = x.shape[1]
        self.threads = threads
        self.rows: missing.Rows | None = None
        self.exact: missing.Rows | None = None
        self.shift: np.ndarray | None = None
        self.n_components = 1
        self.chunk_size = 0

    def summarise(self, chunk_size: int, diagonal: bool = False) -> tuple[int, DataSummary]:
        if missing.has_missing(self.x) or self.weights is not None:
            return self.x.shape[0], missing.summarise(self.x, diagonal, self.weights)
        return self.x.shape[0], summarise(self.x, chunk_size, diagonal)

    def bind(self, shift: np.ndarray, dtype: str, n_components: int, chunk_size: int) -> None:
        """The shifted transposed copy is kept for the whole fit when it fits the budget."""
        n, d = self.x.shape
        cache = missing.Rows.fits_budget(n, d, n_components, dtype)
        self.rows = missing.rows_of(self.x, shift, dtype, cache=cache, weights=self.weights)
        exact = self.rows.dtype == np.float64
        self.exact = self.rows if exact else missing.rows_of(self.x, shift, weights=self.weights)
        self.shift = shift
        self.n_components = n_components
        self.chunk_size = chunk_size

    def em_pass(self, model: Model, n_worst: int, exact: bool = False) -> SuffStats:
        rows = self.exact if exact else self.rows
        assert rows is not None, "bind() first"
        return em_pass(model, rows, self.chunk_size, n_worst=n_worst, threads=self.threads)

    def init_rows(self) -> np.ndarray:
        assert self.shift is not None, "bind() first"
        return missing.starting_rows(counted(self.x, self.weights), self.shift, self.n_components)


def counted(x: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """The rows the initialisers see: those of positive weight (all without weights)."""
    if weights is None or weights.all():
        return x
    return np.ascontiguousarray(x[weights > 0])


def split_weights(block: np.ndarray, weighted: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A block's rows and, when ``weighted``, the weights held in its last column."""
    if not weighted:
        return block, None
    return block[:, :-1], np.ascontiguousarray(block[:, -1])


# -- summaries and samples of data seen in parts ---------------------------------------------
@dataclass
class PartSummary:
    """Count, mean and centred second moments M2 = Σ (x − mean)(x − mean)ᵀ of some rows (or
    only its diagonal, (d,), for a diagonal model), each column's smallest and largest value,
    and the sample candidates among them (global row numbers, keys, values)."""

    n_rows: int
    mean: np.ndarray
    m2: np.ndarray
    low: np.ndarray
    high: np.ndarray
    sample_rows: np.ndarray
    sample_keys: np.ndarray
    sample_values: np.ndarray
    sample_size: int
    # rows with missing cells: the sums over the observed cells (then mean and m2 are unused)
    pairs: missing.PairMoments | None = None
    weight: float | None = None  # Σ w of weighted rows (their sums are always ``pairs``)

    def __add__(self, other: PartSummary) -> PartSummary:
        """Chan et al.'s pairwise update: M2 = M2_a + M2_b + δδᵀ·n_a·n_b/n, δ = mean_b − mean_a
        (stable: no sums of raw squares); the sample keeps the smallest keys of both. Parts
        with missing cells add their ``pairs`` instead."""
        if other.n_rows == 0:
            return self
        if self.n_rows == 0:
            return other
        n = self.n_rows + other.n_rows
        size = max(self.sample_size, other.sample_size)
        rows = np.concatenate([self.sample_rows, other.sample_rows])
        keys = np.concatenate([self.sample_keys, other.sample_keys])
        values = np.concatenate([self.sample_values, other.sample_values])
        keep = _smallest(keys, size)
        low, high = np.minimum(self.low, other.low), np.maximum(self.high, other.high)
        sample = (rows[keep], keys[keep], values[keep], size)
        if self.pairs is not None or other.pairs is not None:
            pairs = self._as_pairs() + other._as_pairs()
            weight = None
            if self.weight is not None or other.weight is not None:
                weight = (self.weight or 0.0) + (other.weight or 0.0)
            return PartSummary(n, self.mean, self.m2, low, high, *sample, pairs, weight)
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n_rows / n)
        cross = delta * delta if self.m2.ndim == 1 else np.outer(delta, delta)
        m2 = self.m2 + other.m2 + cross * (self.n_rows * other.n_rows / n)
        return PartSummary(n, mean, m2, low, high, *sample)

    def _as_pairs(self) -> missing.PairMoments:
        if self.pairs is not None:
            return self.pairs
        return missing.PairMoments.complete(self.n_rows, self.mean, self.m2)

    def summary(self) -> DataSummary:
        single_valued = self.low == self.high
        if self.pairs is not None:
            summary = self.pairs.summary(single_valued)
            if self.weight is None:
                return summary
            return dataclasses.replace(summary, weight_total=self.weight)
        if self.m2.ndim == 1:
            return DataSummary.from_variances(self.mean, self.m2 / self.n_rows, single_valued)
        cov = 0.5 * (self.m2 + self.m2.T) / self.n_rows
        return DataSummary.from_covariance(self.mean, cov, single_valued)

    def sample(self) -> np.ndarray:
        """The sampled rows in the order of the data."""
        return np.ascontiguousarray(self.sample_values[np.argsort(self.sample_rows)])


def sample_key(seed: int) -> np.uint64:
    """The 64-bit key that, with a row's number, decides whether the row is sampled."""
    state = np.random.SeedSequence([seed, 0x67_6D_6D]).generate_state(1, np.uint64)
    return np.uint64(state[0])


def row_keys(key: np.uint64, start: int, stop: int) -> np.ndarray:
    """splitmix64(key + row) for rows start..stop−1: well-mixed pseudo-random 64-bit keys
    that depend only on the row's number, not on how the rows are split."""
    with np.errstate(over="ignore"):
        z = np.arange(start, stop, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _smallest(keys: np.ndarray, m: int) -> np.ndarray:
    if m >= len(keys):
        return np.arange(len(keys))
    return np.argpartition(keys, m - 1)[:m]


def summarise_part(
    x: np.ndarray,
    offset: int,
    key: np.uint64,
    sample_size: int,
    chunk_size: int,
    diagonal: bool = False,
    weights: np.ndarray | None = None,
) -> PartSummary:
    """The summary of rows offset..offset+n−1 of the data (two chunked passes, as in memory)
    with their sample candidates; ``diagonal``: M2's diagonal only; ``weights``: the rows'
    frequency weights (weighted sums; rows of weight 0 are neither sampled nor in the
    columns' ranges)."""
    n, d = x.shape
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return PartSummary(
            0,
            np.zeros(d),
            np.zeros(d) if diagonal else np.zeros((d, d)),
            *column_range(x),
            empty,
            empty.astype(np.uint64),
            np.empty((0, d)),
            sample_size,
        )
    keys = row_keys(key, offset, offset + n)
    if weights is None:
        keep = np.sort(_smallest(keys, sample_size))
    else:
        counted_rows = np.flatnonzero(weights > 0)
        keep = np.sort(counted_rows[_smallest(keys[counted_rows], sample_size)])
    sample = (keep.astype(np.int64) + offset, keys[keep], x[keep].astype(np.float64, copy=True))
    if weights is not None:
        pairs = missing.PairMoments.of(x, diagonal=diagonal, weights=weights)
        low, high = column_range(x[weights > 0])
        weight = float(weights.sum())
        return PartSummary(
            n, pairs.center, pairs.products, low, high, *sample, sample_size, pairs, weight
        )
    if missing.has_missing(x):
        pairs = missing.PairMoments.of(x, diagonal=diagonal)
        low, high = column_range(x)
        return PartSummary(n, pairs.center, pairs.products, low, high, *sample, sample_size, pairs)
    local = summarise(x, chunk_size, diagonal)
    m2 = (local.variances if local.covariance is None else local.covariance) * n
    return PartSummary(n, local.shift, m2, *column_range(x), *sample, sample_size)


class SampledInit:
    """Initialisation for sources not held in memory: the in-memory initialisers run on the
    sample, with the summary of all the data (see the module's docstring)."""

    sample: np.ndarray
    shift: np.ndarray | None = None  # the fit's shift and k, set by ``bind``
    n_components: int = 1

    def init_rows(self) -> np.ndarray:
        assert self.shift is not None, "bind() first"
        return missing.starting_rows(self.sample, self.shift, self.n_components)


class BlockSource(SampledInit):
    """Rows read block by block, one pass per iteration, in bounded memory: ``blocks()``
    yields consecutive (b, d) float64 arrays each time it is called (e.g. a CSV file read
    in blocks); nothing is kept between passes but the sample. ``weighted``: the blocks are
    (b, d + 1), each row's frequency weight in the last column."""

    def __init__(
        self,
        blocks: Callable[[], Iterable[np.ndarray]],
        n_features: int,
        threads: int,
        seed: int = 0,
        sample_size: int = SAMPLE_SIZE,
        weighted: bool = False,
    ) -> None:
        self.blocks = blocks
        self.weighted = weighted
        self.n_features = n_features
        self.threads = threads
        self.seed = seed
        self.sample_size = sample_size
        self.shift: np.ndarray | None = None
        self.dtype = "float64"
        self.chunk_size = 0
        # told the rows done so far after each block of a pass (set by the EM loop)
        self.on_rows: Callable[[int], None] | None = None

    def summarise(self, chunk_size: int, diagonal: bool = False) -> tuple[int, DataSummary]:
        key = sample_key(self.seed)
        parts: list[PartSummary] = []
        offset = 0
        for block in self.blocks():
            x, w = split_weights(block, self.weighted)
            size = self.sample_size
            parts.append(summarise_part(x, offset, key, size, chunk_size, diagonal, w))
            offset += x.shape[0]
            if len(parts) > 1:  # merge as we go: memory stays one sample
                parts = [parts[0] + parts[1]]
        if not parts or parts[0].n_rows == 0:
            raise ValueError("no rows")
        self.sample = parts[0].sample()
        return parts[0].n_rows, parts[0].summary()

    def bind(self, shift: np.ndarray, dtype: str, n_components: int, chunk_size: int) -> None:
        self.shift, self.dtype, self.chunk_size = shift, dtype, chunk_size
        self.n_components = n_components

    def em_pass(self, model: Model, n_worst: int, exact: bool = False) -> SuffStats:
        assert self.shift is not None, "bind() first"
        dtype = "float64" if exact else self.dtype

        def parts() -> Iterator[SuffStats]:
            done = 0
            for block in self.blocks():
                x, w = split_weights(block, self.weighted)
                rows = missing.rows_of(x, self.shift, dtype, weights=w)
                yield em_pass(model, rows, self.chunk_size, n_worst=n_worst, threads=self.threads)
                done += x.shape[0]
                if self.on_rows is not None:
                    self.on_rows(done)

        return total(parts())
