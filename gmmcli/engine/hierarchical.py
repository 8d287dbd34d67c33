"""Model-based agglomerative hierarchical clustering (mclust's ``hc``): one tree of merges
whose cuts give a starting partition for every number of components and every model.

The tree starts from every row in its own cluster and at each step merges the two clusters
whose union lowers the classification likelihood the least (Banfield & Raftery 1993; Fraley
1998, "Algorithms for model-based Gaussian hierarchical clustering"). Two criteria:

``"EII"`` (equal spherical covariances)
    Ward's sum of squares: merging clusters a and b costs
    Δ = n_a n_b / (n_a + n_b) · ‖x̄_a − x̄_b‖², the growth of the total within-cluster sum of
    squares. After a merge the costs to every other cluster c follow from the old ones by the
    Lance–Williams recurrence
    Δ(c, a∪b) = [(n_c + n_a) Δ(c, a) + (n_c + n_b) Δ(c, b) − n_c Δ(a, b)] / (n_c + n_a + n_b).

``"VVV"`` (unconstrained covariances)
    A cluster with n_k rows and scatter matrix W_k = Σ (x − x̄_k)(x − x̄_k)ᵀ contributes
    T_k = n_k log(|W_k / n_k| + β (tr W_k + α) / n_k), where the determinant counts as 0 when
    n_k ≤ d (W_k is then singular). Without the trace term this is Banfield & Raftery's
    Σ n_k log|W_k / n_k|, which is −∞ for every cluster too small for a full covariance; the
    term β (tr W_k + α) / n_k, with α = tr(W) / (n d) for the whole data set (its mean
    variance per column) and β = 1, keeps singletons (T = log αβ) and small clusters finite
    and lets the determinant take over as clusters grow, as mclust's ``hcVVV`` does with its
    default ``alpha = beta = 1``. Merging a and b costs Δ = T_{a∪b} − T_a − T_b, with
    W_{a∪b} = W_a + W_b + n_a n_b / (n_a + n_b) (x̄_a − x̄_b)(x̄_a − x̄_b)ᵀ.

Before the tree is built the data may be transformed (mclust's ``hcUse``). ``"SVD"`` (the
default of ``Mclust``, ``mclust.options("hcUse")``; ``hc`` itself defaults to "VARS")
centres and scales each column to unit standard deviation (divisor n − 1), takes the singular
value decomposition X_s = U S Vᵀ and uses Z = X_s V S^(−1/2); ``"VARS"`` uses the variables as
they are. "SVD" drops constant columns (their scaled values are undefined) and directions
with a zero singular value.

Matching mclust (6.0). Ties go as in mclust: clusters occupy slots 0..g−1, the union takes
the lower slot of the pair, the last slot moves into the freed one, and among equal costs the
pair latest in packed lower-triangle order (slot j, then slot i < j) wins; traces and terms
are computed in mclust's order of operations, with libm's log. mclust also keeps, for each
cluster made by a merge, a triangular factor whose kept rows are all copies of its first row,
and takes the determinants of the cluster's later unions from it (except those computed right
after the merge that made it). ``match_mclust=True`` (the default) does the same and gives
mclust's trees merge for merge; ``match_mclust=False`` uses the true scatter matrices, as
the criterion above is written. The two differ only for "VVV", and only once clusters hold
more than d rows.

Cost: the pair costs live in an m × m matrix (m rows in the tree); each merge recomputes the
union's row (O(m d²), plus a d × d determinant per pair with more than d rows; "EII" O(m))
and keeps the minimum of every row up to date, so a tree takes O(m² d³) time at worst and
O(m²) memory.

Above ``max_rows`` rows the tree is built on a subsample of ``max_rows`` rows drawn without
replacement by ``numpy.random.default_rng(seed)``; a partition of all rows then gives every
row outside the subsample the label of the cluster whose mean (in the transformed space the
tree was built in) is nearest. Those rows are not part of the tree, so for them a partition
at k need not refine the one at k − 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

HC_MODELS = ("VVV", "EII")
HC_USES = ("SVD", "VARS")
MAX_ROWS = 2000

HcModel = Literal["VVV", "EII"]
HcUse = Literal["SVD", "VARS"]


def transform(x: np.ndarray, use: HcUse = "SVD") -> np.ndarray:
    """The data the tree is built on: ``x`` itself ("VARS"), or its scaled SVD ("SVD").

    "SVD": Z = X_s V S^(−1/2), where X_s is ``x`` with each column centred and divided by its
    standard deviation (divisor n − 1; constant columns dropped) and X_s = U S Vᵀ. Directions
    whose singular value is zero (to rounding) are dropped.
    """
    x = np.asarray(x, dtype=np.float64)
    if use == "VARS":
        return x
    if use != "SVD":
        raise ValueError(f"use must be one of {HC_USES}, not {use!r}")
    n = x.shape[0]
    centred = x - x.mean(axis=0)
    sd = np.sqrt(np.einsum("ij,ij->j", centred, centred) / max(n - 1, 1))
    keep = sd > 0
    scaled = centred[:, keep] / sd[keep]
    _, singular, vt = np.linalg.svd(scaled, full_matrices=False)
    tol = singular[0] * max(scaled.shape) * np.finfo(np.float64).eps if singular.size else 0.0
    rank = int(np.count_nonzero(singular > tol))
    return scaled @ vt[:rank].T / np.sqrt(singular[:rank])


class _PairCosts:
    """Pair costs of the clusters in slots 0..g−1, with each row's minimum kept up to date.

    ``cost[j, i]`` is the cost of merging the clusters in slots i and j (symmetric, +inf on
    the diagonal). ``row_min[j]``/``row_arg[j]`` hold the minimum over i < j and the largest i
    attaining it, so the pair to merge is found in O(g).
    """

    def __init__(self, cost: np.ndarray) -> None:
        self.cost = cost
        self.g = cost.shape[0]
        np.fill_diagonal(self.cost, np.inf)
        self.row_min = np.full(self.g, np.inf)
        self.row_arg = np.full(self.g, -1, dtype=np.intp)
        for j in range(1, self.g):
            self._refresh_row(j)

    def _refresh_row(self, j: int) -> None:
        if j == 0:
            self.row_min[0], self.row_arg[0] = np.inf, -1
            return
        reversed_row = self.cost[j, j - 1 :: -1]
        pos = int(np.argmin(reversed_row))
        self.row_arg[j] = j - 1 - pos
        self.row_min[j] = reversed_row[pos]

    def best(self) -> tuple[int, int]:
        """Slots (i, j), i < j, of the cheapest pair: the latest in packed order on ties."""
        mins = self.row_min[: self.g]
        pos = int(np.argmin(mins[::-1]))
        j = self.g - 1 - pos
        return int(self.row_arg[j]), j

    def merge(self, a: int, b: int, new_costs: np.ndarray) -> None:
        """Slot a now holds the union of a and b, whose costs to every slot are ``new_costs``
        (length g, in the slot numbering before the merge); the last slot moves into b."""
        last = self.g - 1
        cost = self.cost
        if b != last:
            cost[b, :] = cost[last, :]
            cost[:, b] = cost[:, last]
            cost[b, b] = np.inf
            new_costs = new_costs.copy()
            new_costs[b] = new_costs[last]
        cost[last, :] = np.inf
        cost[:, last] = np.inf
        self.g = g = last
        row = new_costs[:g].copy()
        row[a] = np.inf
        cost[a, :g] = row
        cost[:g, a] = row

        # Rows whose minimum sat in column a or b lost it; rows a and b are new.
        stale = (self.row_arg[:g] == a) | (self.row_arg[:g] == b)
        stale[a] = True
        if b < g:
            stale[b] = True
        self.row_min[g:] = np.inf
        # Other rows below a gain a new entry in column a, those below b one in column b
        # (the cluster moved there); it wins if smaller, or equal and further right (later
        # in packed order), column a first so that b wins a tie between the two.
        for col in (a, b) if b < g else (a,):
            rows = np.arange(col + 1, g)
            rows = rows[~stale[col + 1 : g]]
            values = cost[rows, col]
            current = self.row_min[rows]
            wins = (values < current) | ((values == current) & (col > self.row_arg[rows]))
            self.row_min[rows[wins]] = values[wins]
            self.row_arg[rows[wins]] = col
        for j in np.flatnonzero(stale):
            self._refresh_row(int(j))


def _log(values: np.ndarray) -> np.ndarray:
    """Natural logarithm through the C library, element by element.

    numpy's vectorised log can differ from libm's in the last bit; mclust's Fortran uses
    libm's, and which pair is merged can hang on an exact tie, so the costs use libm's too.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    out = np.fromiter(map(math.log, flat.tolist()), dtype=np.float64, count=flat.size)
    return out.reshape(np.shape(values))


def _sum_squares(v: np.ndarray) -> np.ndarray:
    """Σ_k v[..., k]², added one column at a time from the first (as a sequential dot)."""
    total = v[..., 0] * v[..., 0]
    for k in range(1, v.shape[-1]):
        total = total + v[..., k] * v[..., k]
    return total


def _pairwise_sum_squares(z: np.ndarray, scale: float, scale_first: bool) -> np.ndarray:
    """(m, m) Σ_k v_k² for every pair of rows i, j: v = s·z_i − s·z_j (``scale_first``) or
    v = (z_i − z_j)·s, rounded alike whichever way round the pair is taken."""
    m, d = z.shape
    total = np.zeros((m, m))
    for k in range(d):
        column = z[:, k]
        if scale_first:
            scaled = scale * column
            v = scaled[:, None] - scaled[None, :]
        else:
            v = (column[:, None] - column[None, :]) * scale
        total += v * v
    return total


def _total_sum_squares(z: np.ndarray) -> float:
    """tr W of all rows, Σ_j Σ_i (z_ij − z̄_j)², with mclust's order of operations (column
    means as sums of z/√m, then each column's squares added row by row)."""
    factor = 1.0 / math.sqrt(z.shape[0])
    mean = np.cumsum(factor * z, axis=0)[-1]
    centred = z + (-factor * mean)
    total = 0.0
    for column in centred.T:
        total = total + float(np.cumsum(column * column)[-1])
    return total


_RT_HALF = math.sqrt(0.5)


def _first_row_gram(scatter: np.ndarray, size: int) -> np.ndarray:
    """FᵀF for the min(size − 1, d) × d matrix F whose row k is (0, …, 0, r_k, …, r_d), r the
    first row of the Cholesky factor of ``scatter``: what mclust 6.0 keeps of the triangular
    factor of a cluster made by a merge (every kept row is a copy of the first).

    (FᵀF)_ij = r_i r_j · min(min(i, j) + 1, size − 1). When the cluster's first column is
    constant (W_11 = 0) mclust's first row depends on the order its rows were added; this
    keeps 0 then, so such clusters may part from mclust.
    """
    d = scatter.shape[0]
    head = scatter[0, 0]
    if head <= 0.0:
        return np.zeros_like(scatter)
    index = np.arange(d)
    count = np.minimum(np.minimum.outer(index, index) + 1, size - 1)
    return np.outer(scatter[0], scatter[0]) / head * count


class _WardCriterion:
    """Sum-of-squares ("EII") merge costs, updated by the Lance–Williams recurrence."""

    def __init__(self, z: np.ndarray) -> None:
        self.sizes = np.ones(z.shape[0])
        # n_a n_b / (n_a + n_b) ‖x_a − x_b‖² for single rows: ‖x_a/√2 − x_b/√2‖².
        self.initial = _pairwise_sum_squares(z, _RT_HALF, scale_first=True)

    def merge(self, a: int, b: int, costs: _PairCosts) -> np.ndarray:
        """Costs (length g) of the union of slots a and b with every slot; a takes the
        union, the last slot moves into b."""
        g = costs.g
        n = self.sizes[:g]
        na, nb = n[a], n[b]
        new = (
            (n + na) * costs.cost[a, :g] + (n + nb) * costs.cost[b, :g] - n * costs.cost[a, b]
        ) / (n + na + nb)
        self.sizes[a] = na + nb
        self.sizes[b] = self.sizes[g - 1]
        return new


class _VVVCriterion:
    """Unconstrained-covariance ("VVV") merge costs, regularised as in mclust.

    Each cluster keeps its size n, s = √n · mean, tr W, its term T and its scatter W. For
    clusters a and b with n = n_a + n_b, v = √(n_a/n)·s_b − √(n_b/n)·s_a = √(n_a n_b/n)(x̄_b − x̄_a),
    so tr W_{a∪b} = tr W_a + tr W_b + ‖v‖², W_{a∪b} = W_a + W_b + v vᵀ and
    s_{a∪b} = √(n_a/n)·s_a + √(n_b/n)·s_b. The traces and terms follow mclust's order of
    operations, so that costs equal in mclust are equal here too.

    ``match_mclust``: mclust 6.0's ``hcVVV`` keeps, for a cluster made by a merge, a
    triangular factor whose rows are all copies of the first row of the true one (see
    ``_first_row_gram``); the determinants of the cluster's later unions come from that
    factor, except those computed right after the merge that made it. With ``True`` the same
    is done here (``kept`` holds that Gram matrix), which reproduces mclust's trees; with
    ``False`` every determinant uses the true scatter matrices.
    """

    def __init__(
        self, z: np.ndarray, match_mclust: bool, alpha: float = 1.0, beta: float = 1.0
    ) -> None:
        m, d = z.shape
        self.match_mclust = match_mclust
        self.d = d
        self.alpha = max(alpha * _total_sum_squares(z / math.sqrt(m * d)), 2.220446049250313e-16)
        self.beta = beta
        self.sizes = np.ones(m)
        self.sums = z.copy()
        self.scatter = np.zeros((m, d, d))  # W as computed when the cluster was made
        self.kept = np.zeros((m, d, d))  # what the later unions' determinants start from
        self.traces = np.zeros(m)
        self.log_ab = math.log(beta * self.alpha)
        self.terms = np.full(m, self.log_ab)
        # Two single rows: T = 2 log(β (tr W + α) / 2), whatever d (mclust takes no
        # determinant for a pair of single rows, even when d = 1).
        pair_traces = _pairwise_sum_squares(z, _RT_HALF, scale_first=False)
        upper = np.triu_indices(m, 1)
        merged = np.zeros((m, m))
        merged[upper] = 2.0 * _log(beta * (pair_traces[upper] + self.alpha) / 2.0)
        merged += merged.T
        self.initial = merged - (self.log_ab + self.log_ab)
        # The terms of the unions of the cluster made by the last merge with every slot.
        self.union_terms = merged
        self.last_made = -1

    def _term(
        self, size: np.ndarray, trace: np.ndarray, scatter: np.ndarray, full: np.ndarray
    ) -> np.ndarray:
        """T = n log(|W/n| + β (tr W + α) / n), the determinant taken as 0 when n ≤ d.

        ``scatter`` holds W of the clusters where ``full`` (n > d) only. With L = log|W/n|,
        T/n = log(e^L + β (tr W + α)/n) for L ≤ 0 and L + log(1 + e^(−L) β (tr W + α)/n)
        above (as mclust), so that no exponential overflows; a singular W counts as 0.
        """
        spread = self.beta * (trace + self.alpha) / size
        use = full & (trace != 0.0)
        if not use.any():
            return size * _log(spread)
        inner = spread.copy()
        shift = np.zeros(size.shape)
        sign, logdet = np.linalg.slogdet(scatter[use[full]])
        logdet = logdet - self.d * np.log(size[use])
        spread_use = spread[use]
        small = np.exp(-np.abs(logdet))  # e^L below 0, e^(−L) above
        high = logdet > 0.0
        inside = np.where(high, 1.0 + small * spread_use, small + spread_use)
        singular = sign <= 0.0
        inner[use] = np.where(singular, spread_use, inside)
        shift[use] = np.where(high & ~singular, logdet, 0.0)
        return size * (_log(inner) + shift)

    def _union_terms(self, a: int, g: int) -> np.ndarray:
        """T of the union of cluster a with the cluster in each slot 0..g−1."""
        na = self.sizes[a]
        nc = self.sizes[:g]
        union = na + nc
        q = 1.0 / union
        own_a = np.sqrt(na * q)
        own_c = np.sqrt(nc * q)
        v = own_a[:, None] * self.sums[:g] - own_c[:, None] * self.sums[a]
        traces = (self.traces[a] + self.traces[:g]) + _sum_squares(v)
        full = union > self.d
        scatter = self.scatter[a] + self.kept[:g][full]
        scatter += v[full, :, None] * v[full, None, :]
        return self._term(union, traces, scatter, full)

    def merge(self, a: int, b: int, costs: _PairCosts) -> np.ndarray:
        """Costs (length g) of the union of slots a and b with every slot; a takes the
        union, the last slot moves into b."""
        g = costs.g
        na, nb = self.sizes[a], self.sizes[b]
        if na == 1.0 and nb == 1.0:
            own_a = own_b = _RT_HALF
            v = (self.sums[a] - self.sums[b]) * _RT_HALF
        else:
            q = 1.0 / (na + nb)
            own_a, own_b = math.sqrt(na * q), math.sqrt(nb * q)
            v = own_a * self.sums[b] - own_b * self.sums[a]
        trace = (self.traces[a] + self.traces[b]) + float(_sum_squares(v[None, :])[0])
        # The union's term and scatter as mclust has them: computed with the pair's cost
        # when one of the two was made by the previous merge (or at the first merge), else
        # the term from the cost and the scatter from the kept matrices.
        if self.last_made == -1:
            term = float(self.union_terms[a, b])
            scatter = np.outer(v, v)
        elif self.last_made in (a, b):
            other = b if self.last_made == a else a
            term = float(self.union_terms[other])
            scatter = self.scatter[self.last_made] + self.kept[other] + np.outer(v, v)
        else:
            term = costs.cost[a, b] + (self.terms[a] + self.terms[b])
            scatter = self.kept[a] + self.kept[b] + np.outer(v, v)
        self.sums[a] = own_a * self.sums[a] + own_b * self.sums[b]
        self.scatter[a] = scatter
        self.kept[a] = _first_row_gram(scatter, int(na + nb)) if self.match_mclust else scatter
        self.traces[a] = trace
        self.terms[a] = term
        self.sizes[a] = na + nb

        last = g - 1
        for values in (self.sizes, self.sums, self.scatter, self.kept, self.traces, self.terms):
            values[b] = values[last]
        self.union_terms = self._union_terms(a, last)
        self.last_made = a
        new = self.union_terms - (self.terms[a] + self.terms[:last])
        # In the numbering before the last slot moved into b.
        out = np.full(g, np.inf)
        out[:last] = new
        if b < last:
            out[last] = new[b]
        return out


@dataclass(frozen=True)
class HierarchicalTree:
    """The merge sequence of a model-based hierarchical clustering.

    Attributes
    ----------
    model, use : str
        The criterion ("VVV" or "EII") and the transformation ("SVD" or "VARS").
    rows : ndarray of int, shape (m,)
        The rows the tree was built on (all n rows unless there were more than max_rows).
    merges : ndarray of int, shape (m − 1, 2)
        Step t merged the clusters named ``merges[t, 0] < merges[t, 1]``, a cluster being named
        by its smallest position in ``rows`` (0-based; mclust's ``hc`` pairs are these + 1).
    costs : ndarray of float, shape (m − 1,)
        The criterion increase Δ of each merge.
    """

    model: str
    use: str
    rows: np.ndarray
    merges: np.ndarray
    costs: np.ndarray
    n_rows: int
    _z: np.ndarray = field(repr=False)

    def partition(self, k: int) -> np.ndarray:
        """Labels (n,) with k clusters numbered 0..k−1 in order of first appearance: the tree
        cut after m − k merges (mclust's ``hclass``), other rows to the nearest cluster mean.
        """
        m = self.rows.shape[0]
        if not 1 <= k <= m:
            raise ValueError(f"k must be between 1 and {m}, not {k}")
        parent = np.arange(m)
        steps = self.merges[: m - k]
        parent[steps[:, 1]] = steps[:, 0]
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        _, first, inverse = np.unique(parent, return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))
        sample_labels = order[inverse.ravel()]
        if m == self.n_rows:
            return sample_labels
        labels = np.empty(self.n_rows, dtype=np.intp)
        labels[self.rows] = sample_labels
        rest = np.setdiff1d(np.arange(self.n_rows), self.rows)
        z_sample = self._z[self.rows]
        counts = np.bincount(sample_labels, minlength=k)
        means = np.zeros((k, z_sample.shape[1]))
        np.add.at(means, sample_labels, z_sample)
        means /= counts[:, None]
        z_rest = self._z[rest]
        d2 = (
            np.einsum("ij,ij->i", z_rest, z_rest)[:, None]
            - 2.0 * z_rest @ means.T
            + np.einsum("ij,ij->i", means, means)[None, :]
        )
        labels[rest] = np.argmin(d2, axis=1)
        # Renumber by first appearance over all rows.
        _, first_all = np.unique(labels, return_index=True)
        rank = np.empty(k, dtype=np.intp)
        rank[np.argsort(first_all)] = np.arange(k)
        return rank[labels]


def build_tree(
    x: np.ndarray,
    model: HcModel = "VVV",
    use: HcUse = "SVD",
    max_rows: int = MAX_ROWS,
    seed: int = 0,
    match_mclust: bool = True,
) -> HierarchicalTree:
    """Model-based agglomerative hierarchical clustering of the rows of ``x``.

    Parameters
    ----------
    x : array-like, shape (n, d)
        The data, finite values only.
    model : {"VVV", "EII"}
        The merge criterion: unconstrained covariances, or Ward's sum of squares.
    use : {"SVD", "VARS"}
        Transform the data by a scaled SVD first (mclust's default), or use it as it is.
    max_rows : int
        Above this many rows the tree is built on a subsample of this many rows.
    seed : int
        Seed of the subsample (unused when n ≤ max_rows).
    match_mclust : bool
        "VVV" only: reproduce mclust 6.0's determinants of unions with clusters made by
        earlier merges (see the module notes); ``False`` uses the true scatter matrices.

    Returns
    -------
    HierarchicalTree
        Its ``partition(k)`` gives labels (n,) for every k from 1 to the number of rows in
        the tree.
    """
    if model not in HC_MODELS:
        raise ValueError(f"model must be one of {HC_MODELS}, not {model!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError("x must be a non-empty (n, d) array")
    if not np.isfinite(x).all():
        raise ValueError("x must hold finite values only")
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    n = x.shape[0]
    z = transform(x, use)
    if z.shape[1] == 0:  # no column varies: every row is the same point, any tree will do,
        z, model = np.zeros((n, 1)), "EII"  # and Ward's costs on one zero column are all 0
    if n > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
    else:
        rows = np.arange(n)
    zs = np.ascontiguousarray(z[rows])
    m = zs.shape[0]
    criterion: _VVVCriterion | _WardCriterion = (
        _VVVCriterion(zs, match_mclust) if model == "VVV" else _WardCriterion(zs)
    )
    merges = np.empty((max(m - 1, 0), 2), dtype=np.intp)
    merge_costs = np.empty(max(m - 1, 0))
    if m > 1:
        costs = _PairCosts(criterion.initial)
        criterion.initial = None
        names = np.arange(m)  # each slot's cluster, named by its smallest row position
        for step in range(m - 1):
            a, b = costs.best()
            merge_costs[step] = costs.cost[b, a]
            na, nb = names[a], names[b]
            merges[step] = (min(na, nb), max(na, nb))
            new = criterion.merge(a, b, costs)
            names[a] = min(na, nb)
            names[b] = names[costs.g - 1]
            costs.merge(a, b, new)
    return HierarchicalTree(model, use, rows, merges, merge_costs, n, z)


def responsibilities(labels: np.ndarray, k: int) -> np.ndarray:
    """The (n, k) 0/1 matrix with a 1 in column ``labels[i]`` of row i (mclust's ``unmap``)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError("labels must be one-dimensional")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}")
    out = np.zeros((labels.shape[0], k))
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out
