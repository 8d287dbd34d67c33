"""Starting parameters: k-means++ then a few k-means steps, mclust's hierarchical tree,
random responsibilities, random points from the data, or given parameters (a warm start).

The two starts from a partition of the rows (k-means++, the tree) depend on the rows, k and
the restart's seed only, not on the covariance model: a ``StartCache`` keeps them for every
fit of the same rows (the cells of a model selection grid), and a restart whose partition
equals an earlier one's (numbering aside) would run the same EM, so the loop runs it once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .chunk import Rows
from .covariance import CovarianceStrategy
from .params import MixtureParams
from .stats import chunks, count_distinct_rows, mstep, stats_from_responsibilities

if TYPE_CHECKING:
    from .hierarchical import HierarchicalTree

KMEANS_STEPS = 10


@dataclass(frozen=True)
class DataSummary:
    """What the engine needs to know about the whole data set, computed once per fit.

    A diagonal covariance model needs only the columns' variances: its summary holds no
    covariance matrix (``covariance`` None, ``min_eigenvalue`` NaN), so the work and memory
    are O(d), not O(d²) and O(d³) (see ``summarise``).
    """

    shift: np.ndarray  # column means
    variances: np.ndarray  # (d,) column variances (divided by n)
    covariance: np.ndarray | None  # (d, d) sample covariance (divided by n); None if diagonal
    min_eigenvalue: float  # of that covariance (NaN without it)
    single_valued: np.ndarray  # (d,) bool: every row holds the same value in the column
    # (d,) each column's smallest and largest value (the box of a noise component)
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    # Σ w_i of rows with frequency weights (then means and covariances are weighted, and the
    # rows of weight 0 left out); None: unweighted rows, each counting once
    weight_total: float | None = None

    @classmethod
    def from_covariance(
        cls,
        shift: np.ndarray,
        covariance: np.ndarray,
        single_valued: np.ndarray,
        box: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> DataSummary:
        """The summary of a full model from the column means and the (d, d) covariance;
        ``box``: the columns' (low, high)."""
        return cls(
            shift,
            np.diag(covariance).copy(),
            covariance,
            float(np.linalg.eigvalsh(covariance)[0]),
            single_valued,
            *(box or (None, None)),
        )

    @classmethod
    def from_variances(
        cls,
        shift: np.ndarray,
        variances: np.ndarray,
        single_valued: np.ndarray,
        box: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> DataSummary:
        """The summary of a diagonal model: column means and variances only."""
        return cls(shift, variances, None, float("nan"), single_valued, *(box or (None, None)))

    def data_covariance(self, reg_covar: float | np.ndarray) -> np.ndarray:
        """The data's covariance plus reg_covar on its diagonal, as far as the summary holds
        it: (d, d), or the (d,) variances of a diagonal model (what
        ``CovarianceStrategy.from_data_covariance`` takes)."""
        if self.covariance is None:
            return self.variances + reg_covar
        return self.covariance + reg_covar * np.eye(self.covariance.shape[0])


# Sums over rows here go in steps of this many rows, whatever the chunk size, so that the
# chunk size changes no bit of the result (see stats.BlockSum for the iterations' sums).
SUM_ROWS = 65536


def summarise(x: np.ndarray, chunk_size: int, diagonal: bool = False) -> DataSummary:
    """Column means, then the covariance about them (two passes, in steps of SUM_ROWS rows;
    ``chunk_size`` does not change the result). ``diagonal`` (``strategy.is_diagonal``):
    the variances alone, Σ_i (x_ij − mean_j)² / n, in O(n d)."""
    n, d = x.shape
    total = np.zeros(d)
    for rows in chunks(n, SUM_ROWS):
        total += x[rows].sum(axis=0)
    shift = total / n
    low, high = column_range(x)
    if diagonal:
        squares = np.zeros(d)
        for rows in chunks(n, SUM_ROWS):
            z = x[rows] - shift
            squares += np.einsum("ij,ij->j", z, z)
        return DataSummary.from_variances(shift, squares / n, low == high, (low, high))
    second = np.zeros((d, d))
    for rows in chunks(n, SUM_ROWS):
        z = x[rows] - shift
        second += z.T @ z
    cov = 0.5 * (second + second.T) / n
    return DataSummary.from_covariance(shift, cov, low == high, (low, high))


def column_range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d,) smallest and (d,) largest value of each column (+inf and −inf with no rows);
    missing cells (NaN) are left out."""
    d = x.shape[1]
    low, high = np.full(d, np.inf), np.full(d, -np.inf)
    for rows in chunks(x.shape[0], SUM_ROWS):
        np.fmin(low, np.fmin.reduce(x[rows], axis=0, initial=np.inf), out=low)
        np.fmax(high, np.fmax.reduce(x[rows], axis=0, initial=-np.inf), out=high)
    return low, high


def _sq_distances(z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(chunk, c) squared Euclidean distances, clipped at 0."""
    d2 = np.einsum("ij,ij->i", z, z)[:, None] - 2.0 * z @ centers.T
    d2 += np.einsum("ij,ij->i", centers, centers)[None, :]
    return np.maximum(d2, 0.0)


def kmeans_plusplus(
    x: np.ndarray, shift: np.ndarray, k: int, rng: np.random.Generator, chunk_size: int
) -> np.ndarray:
    """k-means++ seeding (D² sampling) with a few greedy trials per centre; shifted centres."""
    n = x.shape[0]
    n_trials = 2 + int(np.log(k))
    first = int(rng.integers(n))
    centers = [x[first] - shift]
    closest = _min_sq_distance(x, shift, np.array(centers), chunk_size)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0.0:  # every row coincides with a centre: pick any row
            candidates = rng.integers(n, size=n_trials)
        else:
            cumulative = np.cumsum(closest)
            draws = rng.random(n_trials) * cumulative[-1]
            candidates = np.minimum(np.searchsorted(cumulative, draws), n - 1)
        best, best_closest, best_cost = -1, closest, np.inf
        for cand in candidates:
            d2 = _min_sq_distance(x, shift, (x[cand] - shift)[None, :], chunk_size)
            trial = np.minimum(closest, d2)
            cost = trial.sum()
            if cost < best_cost:
                best, best_closest, best_cost = int(cand), trial, cost
        centers.append(x[best] - shift)
        closest = best_closest
    return np.array(centers)


def _min_sq_distance(
    x: np.ndarray, shift: np.ndarray, centers: np.ndarray, chunk_size: int
) -> np.ndarray:
    """(n,) each row's squared distance to its closest centre. The expanded form
    ‖z‖² − 2 z·c + ‖c‖² leaves rounding noise of ~eps (‖z‖² + ‖c‖²): where a distance is
    within that noise it is computed as Σ (z − c)², exactly 0 for a row equal to a centre, so
    that D² sampling never draws a point already chosen while the data has others, however
    close to it they lie."""
    out = np.empty(x.shape[0])
    eps = np.finfo(float).eps
    cc = np.einsum("ij,ij->i", centers, centers)
    for rows in chunks(x.shape[0], chunk_size):
        z = x[rows] - shift
        d2 = _sq_distances(z, centers)
        noise = 64 * eps * (np.einsum("ij,ij->i", z, z)[:, None] + cc[None, :])
        i, j = np.nonzero(d2 <= noise)  # within rounding noise: computed directly instead
        d2[i, j] = ((z[i] - centers[j]) ** 2).sum(axis=1)
        out[rows] = d2.min(axis=1)
    return out


def kmeans_labels(
    x: np.ndarray, shift: np.ndarray, centers: np.ndarray, steps: int, chunk_size: int
) -> np.ndarray:
    """A few Lloyd steps from the given shifted centres; the final hard labels.

    A centre left with no rows moves to the row farthest from its own centre.
    """
    n, k = x.shape[0], centers.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(steps):
        new_labels = np.empty(n, dtype=np.int64)
        far_dist = np.empty(n)
        sums = np.zeros_like(centers)
        counts = np.zeros(k)
        for rows in chunks(n, SUM_ROWS):  # not chunk_size: the sums must not depend on it
            z = x[rows] - shift
            d2 = _sq_distances(z, centers)
            lab = d2.argmin(axis=1)
            new_labels[rows] = lab
            far_dist[rows] = d2[np.arange(len(lab)), lab]
            for j in range(z.shape[1]):
                sums[:, j] += np.bincount(lab, weights=z[:, j], minlength=k)
            counts += np.bincount(lab, minlength=k)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        empty = np.flatnonzero(counts == 0)
        centers = sums / np.maximum(counts, 1.0)[:, None]
        for c, row in zip(empty, np.argsort(-far_dist, kind="stable"), strict=False):
            centers[c] = x[row] - shift
            far_dist[row] = 0.0
    return labels


@dataclass(frozen=True)
class Start:
    """What every initialiser is given besides the rows: k, the covariance model, the data
    summary, the regularisation, the restart's seed and its random generator, and the chunk
    size."""

    k: int
    strategy: CovarianceStrategy
    summary: DataSummary
    reg_covar: float | np.ndarray
    rng: np.random.Generator
    chunk_size: int
    seed: np.random.SeedSequence | None = None  # rng's seed: names the start in a cache


def kmeans_partition(x: np.ndarray, start: Start) -> np.ndarray:
    """k-means++ seeding and a few k-means steps: the labels (n,) of the hard assignment.
    Distances go in steps of SUM_ROWS rows whatever the model's chunk size, so the partition
    depends on the rows, k and the seed alone (every covariance model shares it)."""
    shift = start.summary.shift
    centers = kmeans_plusplus(x, shift, start.k, start.rng, SUM_ROWS)
    return kmeans_labels(x, shift, centers, KMEANS_STEPS, SUM_ROWS)


def from_kmeans(x: np.ndarray, start: Start) -> MixtureParams:
    """k-means++ seeding, a few k-means steps, then the M-step of the hard assignment."""
    return from_labels(x, kmeans_partition(x, start), start)


def from_labels(x: np.ndarray, labels: np.ndarray, start: Start) -> MixtureParams:
    """The M-step of a hard partition of the rows (labels 0..k−1)."""

    def one_hot(span: slice) -> np.ndarray:
        resp = np.zeros((start.k, span.stop - span.start))
        resp[labels[span], np.arange(span.stop - span.start)] = 1.0
        return resp

    rows = Rows(x, start.summary.shift)
    stats = stats_from_responsibilities(rows, one_hot, start.strategy, start.chunk_size)
    return mstep(stats, start.strategy, start.reg_covar).params


def from_random_responsibilities(x: np.ndarray, start: Start) -> MixtureParams:
    """Uniform random responsibilities, normalised per row, then the M-step.

    They are drawn once (n × k), so that a second pass over them (``recentred``) sees the
    same values.
    """
    drawn = start.rng.random((x.shape[0], start.k))
    drawn /= drawn.sum(axis=1, keepdims=True)

    def uniform(span: slice) -> np.ndarray:
        return drawn[span].T

    rows = Rows(x, start.summary.shift)
    stats = stats_from_responsibilities(rows, uniform, start.strategy, start.chunk_size)
    return mstep(stats, start.strategy, start.reg_covar).params


def from_random_rows(x: np.ndarray, start: Start) -> MixtureParams:
    """k distinct random rows as means, the data's covariance for all, equal weights.

    Rows of equal values would make identical components that EM never separates: a row
    whose values were already drawn is replaced by further random rows of other values, as
    long as the data has any.
    """
    k, strategy, summary = start.k, start.strategy, start.summary
    rows = np.sort(start.rng.choice(x.shape[0], size=k, replace=False))
    if count_distinct_rows(x[rows]) < k:
        rows = np.sort(_distinct_values(x, rows, k, start.rng))
    data_cov = summary.variances if summary.covariance is None else summary.covariance
    cov = strategy.regularise(strategy.from_data_covariance(data_cov, k), start.reg_covar)
    return MixtureParams(strategy.name, np.full(k, 1.0 / k), x[rows].copy(), cov)


def _distinct_values(
    x: np.ndarray, rows: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """k row numbers with distinct values: the first distinct ones among ``rows`` and then
    a random order of all rows; repeats from ``rows`` only when the data has fewer than k
    distinct rows."""
    candidates = np.concatenate([rows, rng.permutation(x.shape[0])])
    _, first = np.unique(x[candidates], axis=0, return_index=True)
    chosen = [int(r) for r in candidates[np.sort(first)[:k]]]
    taken = set(chosen)
    chosen += [int(r) for r in rows if int(r) not in taken][: k - len(chosen)]
    return np.array(chosen, dtype=np.int64)


def hierarchical_tree(
    x: np.ndarray, rng: np.random.Generator, model: str = "VVV"
) -> HierarchicalTree:
    """mclust's tree: model-based hierarchical agglomeration on the data's scaled SVD
    (``hierarchical.build_tree``) by ``model``'s criterion ("VVV", mclust's default, or
    "EII", Ward's sum of squares), on at most ``HC_ROWS`` rows (drawn with ``rng``); one
    tree cuts into a partition for every k."""
    from .hierarchical import build_tree

    seed = int(rng.integers(2**31))
    return build_tree(x, model=model, use="SVD", max_rows=HC_ROWS, seed=seed)


def from_hierarchical(x: np.ndarray, start: Start, model: str = "VVV") -> MixtureParams:
    """mclust's start: the tree (``hierarchical_tree``, by ``model``'s criterion) cut into k
    groups, then the M-step of that partition; rows outside the tree join the group with the
    nearest mean."""
    return from_labels(x, hierarchical_tree(x, start.rng, model).partition(start.k), start)


# Rows the hierarchical tree is built on (its cost grows with their square).
HC_ROWS = 2000

INITIALISERS = {
    "kmeans++": from_kmeans,
    "random": from_random_responsibilities,
    "random-from-data": from_random_rows,
    "hc": from_hierarchical,
    "hc-ward": lambda x, start: from_hierarchical(x, start, "EII"),  # Ward's tree
}
# After the first restart, these initialisers hand over to others, in turn, the last for
# every restart left: a tree gives one start. "hc"'s second restart is Ward's tree: on the
# public sets of bench/MCLUST.md it finds optima the VVV tree and k-means++ miss (wdbc, full
# with 5 components: BIC 29 lower than from the VVV tree, 135 lower than 100 k-means++ runs).
LATER_RESTARTS = {"hc": ("hc-ward", "kmeans++"), "hc-ward": ("kmeans++",)}
# Starts drawn once per fit rather than once per restart (the trees' subsample): their seed
# is their own, so the restarts after them draw the seeds they would draw without them; the
# two trees share it, and so their subsample.
_OWN_SEED = {"hc": 0x6863, "hc-ward": 0x6863}


def restart_plan(init: str, n_init: int, seed: int) -> list[tuple[str, np.random.SeedSequence]]:
    """The start method and seed of each restart: ``init`` first, then ``LATER_RESTARTS``.
    The i-th restart that draws per-restart seeds gets child i of ``SeedSequence(seed)``, so
    ``hc`` then Ward's tree then k-means++ × (n − 2) starts from the trees and exactly the
    k-means++ starts of ``--n-init n − 2``."""
    children = iter(np.random.SeedSequence(seed).spawn(n_init))
    later = LATER_RESTARTS.get(init, (init,))
    plan = []
    for restart in range(n_init):
        method = init if restart == 0 else later[min(restart, len(later)) - 1]
        own = _OWN_SEED.get(method)
        plan.append(
            (method, next(children) if own is None else np.random.SeedSequence([seed, own]))
        )
    return plan


@dataclass(frozen=True)
class StartingPoint:
    """A restart's starting parameters and, for a start from a partition of the rows, that
    partition numbered by first appearance: two restarts from equal partitions run the same
    EM (up to the components' order)."""

    params: MixtureParams
    partition: bytes | None = None


@dataclass
class StartCache:
    """Start partitions kept across the fits of one set of rows: k-means++ labels by (k,
    seed), hierarchical trees by criterion and seed. The cells of a model selection grid
    share one, so each partition is computed once for all fourteen covariance models, and
    one tree starts every k. Bound to the rows (and data mean) of its first use; other rows
    get fresh partitions."""

    rows: np.ndarray | None = None
    shift: np.ndarray | None = None
    labels: dict[tuple, np.ndarray] = field(default_factory=dict)
    trees: dict[tuple, HierarchicalTree] = field(default_factory=dict)

    def holds(self, x: np.ndarray, shift: np.ndarray) -> bool:
        """Whether these rows are the cache's (binding it to them on first use)."""
        if self.rows is None:
            self.rows, self.shift = x, shift
            return True
        same = self.rows is x or np.array_equal(self.rows, x)
        return same and np.array_equal(self.shift, shift)

    def partition(self, method: str, x: np.ndarray, start: Start) -> np.ndarray:
        """The labels (n,) of ``method`` ("kmeans++", "hc" or "hc-ward") for k = ``start.k``."""
        cached = start.seed is not None and self.holds(x, start.summary.shift)
        if not cached:
            return _PARTITIONS[method](x, start, {})
        key = (method, start.k, *_named(start.seed))
        if key not in self.labels:
            self.labels[key] = _PARTITIONS[method](x, start, self.trees)
        return self.labels[key]


def _hierarchical_partition(
    x: np.ndarray, start: Start, trees: dict, model: str = "VVV"
) -> np.ndarray:
    key = None if start.seed is None else (model, *_named(start.seed))
    tree = trees.get(key) if key is not None else None
    if tree is None:
        tree = hierarchical_tree(x, start.rng, model)
        if key is not None:
            trees[key] = tree
    return tree.partition(start.k)


def _named(seed: np.random.SeedSequence) -> tuple:
    """A seed as a dictionary key: its entropy (a number or a list) and spawn key."""
    entropy = seed.entropy
    return (tuple(entropy) if isinstance(entropy, list) else entropy, seed.spawn_key)


_PARTITIONS = {
    "kmeans++": lambda x, start, trees: kmeans_partition(x, start),
    "hc": _hierarchical_partition,
    "hc-ward": lambda x, start, trees: _hierarchical_partition(x, start, trees, "EII"),
}


def starting_point(method: str, x: np.ndarray, start: Start, cache: StartCache) -> StartingPoint:
    """The starting parameters of one restart by ``method`` (``INITIALISERS``), its
    partition from ``cache`` where the method starts from one."""
    if method not in _PARTITIONS:
        return StartingPoint(INITIALISERS[method](x, start))
    labels = cache.partition(method, x, start)
    return StartingPoint(from_labels(x, labels, start), _numbered(labels).tobytes())


def _numbered(labels: np.ndarray) -> np.ndarray:
    """The same partition with groups numbered 0, 1, … by first appearance."""
    values, first = np.unique(labels, return_index=True)
    rank = np.empty(int(values.max()) + 1 if values.size else 0, dtype=np.int64)
    rank[values[np.argsort(first)]] = np.arange(values.size)
    return rank[labels]
