"""Starting parameters: k-means++ then a few k-means steps, random responsibilities, random
points from the data, or given parameters (a warm start)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chunk import Rows
from .covariance import CovarianceStrategy
from .params import MixtureParams
from .stats import chunks, count_distinct_rows, mstep, stats_from_responsibilities

INIT_METHODS = ("kmeans++", "random", "random-from-data")
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

    @classmethod
    def from_covariance(
        cls, shift: np.ndarray, covariance: np.ndarray, single_valued: np.ndarray
    ) -> DataSummary:
        """The summary of a full model from the column means and the (d, d) covariance."""
        return cls(
            shift,
            np.diag(covariance).copy(),
            covariance,
            float(np.linalg.eigvalsh(covariance)[0]),
            single_valued,
        )

    @classmethod
    def from_variances(
        cls, shift: np.ndarray, variances: np.ndarray, single_valued: np.ndarray
    ) -> DataSummary:
        """The summary of a diagonal model: column means and variances only."""
        return cls(shift, variances, None, float("nan"), single_valued)

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
        return DataSummary.from_variances(shift, squares / n, low == high)
    second = np.zeros((d, d))
    for rows in chunks(n, SUM_ROWS):
        z = x[rows] - shift
        second += z.T @ z
    cov = 0.5 * (second + second.T) / n
    return DataSummary.from_covariance(shift, cov, low == high)


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
    summary, the regularisation, the restart's random generator and the chunk size."""

    k: int
    strategy: CovarianceStrategy
    summary: DataSummary
    reg_covar: float | np.ndarray
    rng: np.random.Generator
    chunk_size: int


def from_kmeans(x: np.ndarray, start: Start) -> MixtureParams:
    """k-means++ seeding, a few k-means steps, then the M-step of the hard assignment."""
    shift = start.summary.shift
    centers = kmeans_plusplus(x, shift, start.k, start.rng, start.chunk_size)
    return from_labels(x, kmeans_labels(x, shift, centers, KMEANS_STEPS, start.chunk_size), start)


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


def from_hierarchical(x: np.ndarray, start: Start) -> MixtureParams:
    """mclust's start: model-based hierarchical agglomeration (the VVV criterion on the
    data's scaled SVD, ``hierarchical.build_tree``) cut into k groups, then the M-step of
    that partition. The tree is built on at most ``HC_ROWS`` rows (drawn with ``rng``);
    the others join the group with the nearest mean."""
    from .hierarchical import build_tree

    seed = int(start.rng.integers(2**31))
    tree = build_tree(x, model="VVV", use="SVD", max_rows=HC_ROWS, seed=seed)
    return from_labels(x, tree.partition(start.k), start)


# Rows the hierarchical tree is built on (its cost grows with their square).
HC_ROWS = 2000

INITIALISERS = {
    "kmeans++": from_kmeans,
    "random": from_random_responsibilities,
    "random-from-data": from_random_rows,
    "hc": from_hierarchical,
}
# After the first restart, these initialisers hand over to another: a tree gives one start.
LATER_RESTARTS = {"hc": "kmeans++"}
