"""The fourteen Celeux–Govaert covariance models (mclust's names) as pure M-step maths.

Every model writes Σ_k = λ_k D_k A_k D_kᵀ: λ_k = |Σ_k|^{1/d} the volume, A_k diagonal with
|A_k| = 1 the shape, D_k orthogonal the orientation; each letter of a name says whether volume,
shape and orientation are Equal across components, Variable, or the Identity (I). Given the
weighted scatter matrices W_k = Σ_i r_ik (x_i − μ_k)(x_i − μ_k)ᵀ and N_k = Σ_i r_ik, the M-step
minimises

    F(Σ) = Σ_k [ N_k log|Σ_k| + tr(W_k Σ_k⁻¹) ]      (−2 × the expected complete-data
                                                        log-likelihood, up to a constant)

over the covariances the model allows. Nine models have a closed form (Celeux & Govaert 1995);
VEI, VEE and VEV are solved by block-coordinate descent, each block in closed form. EVE's and
VVE's common orientation D turns by sweeps of plane rotations (as in Flury & Gautschi's
algorithm for common principal components) and, near the minimum, by Newton steps on F with
the volumes and shapes at their best for D. Started from the previous M-step's covariances,
no step raises F (a Newton step is only taken when it lowers F), so EM stays monotone.
Below, n = Σ_k N_k, W = Σ_k W_k, gm(v) is the geometric mean of a positive vector
(gm(diag B) = |B|^{1/d} for diagonal B) and ω_k are the eigenvalues of W_k, largest first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

MODELS: tuple[str, ...] = (
    "EII",
    "VII",
    "EEI",
    "VEI",
    "EVI",
    "VVI",
    "EEE",
    "VEE",
    "EVE",
    "VVE",
    "EEV",
    "VEV",
    "EVV",
    "VVV",
)
"""The fourteen models, in mclust's order (``mclust.options("emModelNames")``)."""

ITERATIVE_MODELS: frozenset[str] = frozenset({"VEI", "VEE", "EVE", "VVE", "VEV"})
"""Models whose M-step has no closed form and is iterated (and so uses ``previous``)."""

DEFAULT_MAX_ITER = 10_000

# Inside EM (``covariance.Family``) an iterated M-step starts from the current covariances
# and takes at most IN_EM_MAX_ITER sweeps (EVE, VVE: sweeps or Newton steps), stopping when no
# entry moves by more than IN_EM_TOL of the largest (EVE, VVE: no plane turns by more): every
# step lowers F, so this
# is still an EM that never lowers the likelihood (a generalised EM), the next iteration
# carries on from where it stopped, and its fixed points are those of the full M-step.
# Iterating each M-step to 1e-10 cost 7× more on an iris grid (one EVE M-step near a
# collapse took 10,000 sweeps). Over the EVE and VVE cells of iris, thyroid, faithful and
# diabetes (hc + 5 k-means++ starts), 1e-4 took 20 % less time than 1e-6 and left the same
# three cells worse than full M-steps (path noise: another local optimum); 1e-3 left eight.
IN_EM_TOL = 1e-4
IN_EM_MAX_ITER = 10


def resolve(model: str) -> str:
    """``model`` if it is one of the fourteen mclust names; else ValueError listing them. (The
    project's other names for four of them, e.g. full for VVV, live in the strategies'
    aliases: ``engine.covariance``.)"""
    if model not in MODELS:
        raise ValueError(f"unknown covariance model {model!r} (known: {', '.join(MODELS)})")
    return model


def n_covariance_parameters(model: str, k: int, d: int) -> int:
    """Free parameters in the k covariances of ``model`` in d dimensions.

    Volume costs 1 (E) or k (V); shape d − 1 (E) or k(d − 1) (V); orientation d(d − 1)/2 (E)
    or k d(d − 1)/2 (V); I costs nothing. EEE, EVV and VVV count whole matrices instead, which
    is the same sum. Equals mclust's ``nMclustParams(model, d, G)`` less the (G − 1) weights
    and G d means.
    """
    name = resolve(model)
    counts = {"E": 1, "V": k, "I": 0}
    volume = counts[name[0]]
    shape = (d - 1) * counts[name[1]]
    orientation = d * (d - 1) // 2 * counts[name[2]]
    return volume + shape + orientation


def m_step(
    model: str,
    scatter: FloatArray,
    n_k: FloatArray,
    previous: FloatArray | None = None,
    tol: float = 1e-10,
    max_iter: int = DEFAULT_MAX_ITER,
    compiled: bool = False,
) -> FloatArray:
    """The covariances that minimise F(Σ) within ``model``, from the weighted statistics.

    Parameters
    ----------
    model : str
        An mclust name (``MODELS``).
    scatter : ndarray, shape (k, d, d)
        Weighted scatter matrices W_k about each component's mean.
    n_k : ndarray, shape (k,)
        Effective numbers of rows N_k, all positive.
    previous : ndarray, shape (k, d, d), optional
        Covariances of the last M-step, which should satisfy the model. The iterative models
        start from them, and F then never rises above its value there. The closed forms
        ignore them. Without them the iterations start from the volumes gm(diag W_k) / N_k
        (VEI, VEE, VEV) or the eigenvectors of W (EVE, VVE).
    tol : float
        The iterative models stop when no entry of any Σ_k moves by more than ``tol`` times
        the largest entry in one sweep (EVE and VVE: when no plane of D turns by more than
        ``tol``, as |sin θ| or a Newton step's angle, which moves the entries by about as
        much).
    max_iter : int
        At most this many sweeps of the iterative models (EVE, VVE: sweeps or Newton steps;
        at least 1).
    compiled : bool
        EVE's and VVE's sweeps by the compiled kernel (``families_compiled``, where numba
        imports; the same sweeps to rounding, ~15× quicker). EM asks for it on tables that
        load numba anyway (``compiled_sweeps``), so small fits never pay for the import.

    Returns
    -------
    ndarray, shape (k, d, d)
        The covariances Σ_k: symmetric, and positive definite when every W_k is.
    """
    name = resolve(model)
    scatter = np.asarray(scatter, dtype=np.float64)
    n_k = np.asarray(n_k, dtype=np.float64)
    if scatter.ndim != 3 or scatter.shape[1] != scatter.shape[2]:
        raise ValueError(f"scatter must have shape (k, d, d), not {scatter.shape}")
    if n_k.shape != scatter.shape[:1]:
        raise ValueError(f"n_k must have shape ({scatter.shape[0]},), not {n_k.shape}")
    if name not in ITERATIVE_MODELS:
        return _CLOSED_FORM[name](scatter, n_k)
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, not {max_iter}")
    if previous is not None:
        previous = np.asarray(previous, dtype=np.float64)
        if previous.shape != scatter.shape:
            raise ValueError(f"previous must have shape {scatter.shape}, not {previous.shape}")
    if name in _SWEPT:
        return _ITERATIVE[name](scatter, n_k, previous, tol, max_iter, compiled=compiled)
    return _ITERATIVE[name](scatter, n_k, previous, tol, max_iter)


def compiled_sweeps(n: float, d: int, k: int) -> bool:
    """Whether EM's M-steps take the compiled sweeps: for n rows (their total weight) of d
    columns and k components, on a table large enough that its passes load numba anyway
    (``diagonal.COMPILED_FROM``), which a small fit's start-up would not afford."""
    from .diagonal import COMPILED_FROM

    return n * d * k >= COMPILED_FROM


# -- small helpers ------------------------------------------------------------------------


def _gm(values: FloatArray) -> FloatArray:
    """Geometric mean over the last axis: gm(v) = exp(mean(log v))."""
    return np.exp(np.log(values).sum(axis=-1) / values.shape[-1])


def _diagonals(matrices: FloatArray) -> FloatArray:
    """The (…, d) diagonals of (…, d, d) matrices."""
    return np.diagonal(matrices, axis1=-2, axis2=-1).copy()


def _diag_matrices(values: FloatArray) -> FloatArray:
    """(…, d, d) diagonal matrices from (…, d) diagonals."""
    d = values.shape[-1]
    return values[..., :, None] * np.eye(d)


def _eigh_descending(matrices: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Eigenvalues (largest first) and the matching eigenvectors (as columns) of each matrix."""
    values, vectors = np.linalg.eigh(matrices)
    return values[..., ::-1], vectors[..., ::-1]


def _symmetrise(matrices: FloatArray) -> FloatArray:
    """(M + Mᵀ) / 2, so rounding leaves no asymmetry."""
    return 0.5 * (matrices + np.swapaxes(matrices, -1, -2))


def _rotate(orientation: FloatArray, diagonals: FloatArray) -> FloatArray:
    """D diag(a_k) Dᵀ for each row a_k of ``diagonals`` (D one matrix or one per k)."""
    return _symmetrise((orientation * diagonals[..., None, :]) @ np.swapaxes(orientation, -1, -2))


def _moved(new: FloatArray, old: FloatArray, tol: float) -> bool:
    """True while some entry moved by more than tol × the largest entry."""
    return bool(abs(new - old).max() > tol * abs(new).max())


def _volumes(covariances: FloatArray) -> FloatArray:
    """λ_k = |Σ_k|^{1/d} of each covariance."""
    d = covariances.shape[-1]
    _, logdet = np.linalg.slogdet(covariances)
    return np.exp(logdet / d)


def _common_orientation(covariances: FloatArray, n_k: FloatArray) -> FloatArray:
    """The D shared by covariances D B_k Dᵀ: eigenvectors of Σ_k c_k Σ_k⁻¹ with unequal c_k.

    Unequal weights keep the eigenvalues of the combination apart when the B_k differ, so its
    eigenvectors are D itself and not some other basis of a repeated eigenvalue.
    """
    k = covariances.shape[0]
    c = n_k * (1.0 + np.arange(k) / (k * np.sqrt(2.0)))
    combined = np.einsum("k,kij->ij", c, np.linalg.inv(covariances))
    return _eigh_descending(_symmetrise(combined))[1]


# -- closed forms (Celeux & Govaert 1995) ---------------------------------------------------


def _eii(scatter: FloatArray, n_k: FloatArray) -> FloatArray:
    """EII: Σ_k = λ I, one sphere. λ = tr(W) / (n d)."""
    k, d, _ = scatter.shape
    volume = np.trace(scatter.sum(axis=0)) / (n_k.sum() * d)
    return np.broadcast_to(volume * np.eye(d), (k, d, d)).copy()


def _vii(scatter: FloatArray, n_k: FloatArray) -> FloatArray:
    """VII: Σ_k = λ_k I, spheres of their own size. λ_k = tr(W_k) / (N_k d)."""
    d = scatter.shape[-1]
    volumes = np.trace(scatter, axis1=1, axis2=2) / (n_k * d)
    return volumes[:, None, None] * np.eye(d)


def _eei(scatter: FloatArray, n_k: FloatArray) -> FloatArray:
    """EEI: Σ_k = B, one diagonal matrix. B = diag(W) / n."""
    k, d, _ = scatter.shape
    common = _diag_matrices(_diagonals(scatter.sum(axis=0)) / n_k.sum())
    return np.broadcast_to(common, (k, d, d)).copy()


def _evi(scatter: FloatArray, n_k: FloatArray) -> FloatArray:
    """EVI: Σ_k = λ A_k, diagonal, equal volume, own shape.

    A_k = diag(W_k) / gm(diag W_k); λ = Σ_k gm(diag W_k) / n.
    """
    diagonals = _diagonals(scatter)
    sizes = _gm(diagonals)
    volume = sizes.sum() / n_k.sum()
    return _diag_matrices(volume * diagonals / sizes[:, None])


def _vvi(scatter: FloatArray, n_k: FloatArray) -> FloatArray:
    """VVI: Σ_k = B_k, each its own diagonal matrix. B_k = diag(W_k) / N_k."""
    return _diag_matrices(_diagonals(scatter) / n_k[:, None])


def _eee(scatter: FloatArray, n_k: FloatArray) -> FloatArray:
    """EEE: Σ_k = Σ, one full matrix (tied). Σ = W / n."""
    k, d, _ = scatter.shape
    common = _symmetrise(scatter.sum(axis=0) / n_k.sum())
    return np.broadcast_to(common, (k, d, d)).copy()


def _eev(scatter: FloatArray, n_k: FloatArray) -> FloatArray:
    """EEV: Σ_k = λ D_k A D_kᵀ, equal volume and shape, own orientation.

    W_k = D_k diag(ω_k) D_kᵀ; A = Σ_k ω_k / gm(Σ_k ω_k); λ = gm(Σ_k ω_k) / n.
    """
    eigenvalues, vectors = _eigh_descending(scatter)
    pooled = eigenvalues.sum(axis=0)
    size = _gm(pooled)
    shape = pooled / size
    volume = size / n_k.sum()
    return _rotate(vectors, np.broadcast_to(volume * shape, eigenvalues.shape))


def _evv(scatter: FloatArray, n_k: FloatArray) -> FloatArray:
    """EVV: Σ_k = λ C_k with |C_k| = 1, equal volume, own shape and orientation.

    C_k = W_k / |W_k|^{1/d}; λ = Σ_k |W_k|^{1/d} / n.
    """
    sizes = _volumes(scatter)
    volume = sizes.sum() / n_k.sum()
    return _symmetrise(volume * scatter / sizes[:, None, None])


def _vvv(scatter: FloatArray, n_k: FloatArray) -> FloatArray:
    """VVV: Σ_k unconstrained (full). Σ_k = W_k / N_k."""
    return _symmetrise(scatter / n_k[:, None, None])


# -- iterative models ---------------------------------------------------------------------


def _start_volumes(scatter: FloatArray, n_k: FloatArray, previous: FloatArray | None) -> FloatArray:
    """λ_k of ``previous``, or without it the VVI volumes gm(diag W_k) / N_k."""
    if previous is not None:
        return _volumes(previous)
    return _gm(_diagonals(scatter)) / n_k


def _vei(
    scatter: FloatArray, n_k: FloatArray, previous: FloatArray | None, tol: float, max_iter: int
) -> FloatArray:
    """VEI: Σ_k = λ_k A, diagonal, own volume, equal shape.

    Alternates A = diag(Σ_k W_k/λ_k) / gm(diag(Σ_k W_k/λ_k)) and λ_k = tr(W_k A⁻¹) / (N_k d).
    """
    d = scatter.shape[-1]
    diagonals = _diagonals(scatter)
    volumes = _start_volumes(scatter, n_k, previous)
    covariances = np.zeros_like(scatter)
    for _ in range(max_iter):
        pooled = (diagonals / volumes[:, None]).sum(axis=0)
        shape = pooled / _gm(pooled)
        volumes = (diagonals / shape).sum(axis=1) / (n_k * d)
        new = _diag_matrices(volumes[:, None] * shape)
        converged = not _moved(new, covariances, tol)
        covariances = new
        if converged:
            break
    return covariances


def _vee(
    scatter: FloatArray, n_k: FloatArray, previous: FloatArray | None, tol: float, max_iter: int
) -> FloatArray:
    """VEE: Σ_k = λ_k C with |C| = 1, own volume, equal shape and orientation.

    Alternates C = S / |S|^{1/d} with S = Σ_k W_k/λ_k, and λ_k = tr(W_k C⁻¹) / (N_k d),
    from ``previous`` (which a sweep that moves nothing confirms at once). A sweep is four
    array operations on the flattened matrices: on the small matrices of a model selection
    grid the M-step's cost is the number of numpy calls.
    """
    k, d, _ = scatter.shape
    volumes = _start_volumes(scatter, n_k, previous)
    flat = scatter.reshape(k, d * d)
    per_volume = n_k * d
    covariances = np.zeros_like(scatter) if previous is None else previous
    for _ in range(max_iter):
        pooled = ((1.0 / volumes) @ flat).reshape(d, d)
        pooled = 0.5 * (pooled + pooled.T)
        _, logdet = np.linalg.slogdet(pooled)
        size = np.exp(logdet / d)
        volumes = flat @ (np.linalg.inv(pooled) * size).ravel() / per_volume
        new = volumes[:, None, None] * (pooled / size)
        converged = not _moved(new, covariances, tol)
        covariances = new
        if converged:
            break
    return covariances


def _vev(
    scatter: FloatArray, n_k: FloatArray, previous: FloatArray | None, tol: float, max_iter: int
) -> FloatArray:
    """VEV: Σ_k = λ_k D_k A D_kᵀ, own volume and orientation, equal shape.

    D_k are the eigenvectors of W_k (largest ω_k with largest A, which is optimal for any
    sorted A), then alternates A = Σ_k (ω_k/λ_k) / gm(Σ_k ω_k/λ_k) and
    λ_k = Σ_j (ω_kj / A_j) / (N_k d).
    """
    d = scatter.shape[-1]
    eigenvalues, vectors = _eigh_descending(scatter)
    volumes = _start_volumes(scatter, n_k, previous)
    diagonals = np.zeros_like(eigenvalues)
    for _ in range(max_iter):
        pooled = (eigenvalues / volumes[:, None]).sum(axis=0)
        shape = pooled / _gm(pooled)
        volumes = (eigenvalues / shape).sum(axis=1) / (n_k * d)
        new = volumes[:, None] * shape
        converged = not _moved(new, diagonals, tol)
        diagonals = new
        if converged:
            break
    return _rotate(vectors, diagonals)


def _plane_rotations(
    rotated: FloatArray,
    orientation: FloatArray,
    inverse_diagonals: Callable[[FloatArray], FloatArray],
) -> tuple[FloatArray, FloatArray, float]:
    """One sweep of plane rotations of D, each the least of f(D) = Σ_k tr(Dᵀ W_k D P_k);
    returns the new orientation, the new M_k and the largest |sin θ| the sweep turned by.

    ``rotated`` holds M_k = Dᵀ W_k D and ``inverse_diagonals(diag M)`` the diagonal weights
    P_k. Turning columns i and j of D by θ changes f by (a cos 2θ + b sin 2θ) − a, with
    a = Σ_k (P_ki − P_kj)(M_k,ii − M_k,jj) / 2 and b = Σ_k (P_ki − P_kj) M_k,ij, which is
    least at cos 2θ = −a / r, sin 2θ = −b / r, r = √(a² + b²): the Jacobi-type pairwise
    rotations of Flury & Gautschi's common-principal-components algorithm. The sweep visits
    every pair once, in d − 1 rounds (d rounds for odd d) of disjoint pairs (``_rounds``):
    with the P_k fixed, f is a sum over columns, so the rotations of disjoint planes do not
    interact and each round turns all its planes at once, then recomputes the P_k (the
    closed-form step for them). No step raises f.
    """
    k, d, _ = rotated.shape
    turned = 0.0
    for plan in _rounds(d):
        flat = rotated.reshape(k, d * d)
        weights = inverse_diagonals(flat[:, :: d + 1])[:, plan.ends]
        p = plan.ends.size // 2
        spread = weights[:, :p] - weights[:, p:]  # P_ki − P_kj, (k, pairs)
        terms = flat[:, plan.terms]  # M_k,ii, M_k,jj and M_k,ij of every pair
        a = (spread * (terms[:, :p] - terms[:, p : 2 * p])).sum(axis=0) * 0.5
        b = (spread * terms[:, 2 * p :]).sum(axis=0)
        r = np.hypot(a, b)  # ≥ |a|, so −1 ≤ a / r ≤ 1
        # cos 2θ = −a / r; r = 0 (or a = −r) leaves the plane as it is (θ = 0)
        ratio = np.divide(a, r, out=np.full_like(a, -1.0), where=r > 0.0)
        cos = np.sqrt(0.5 - 0.5 * ratio)
        sin = np.copysign(np.sqrt(0.5 + 0.5 * ratio), -b)
        turned = max(turned, float(abs(sin).max()))
        turn = np.eye(d)
        turn.flat[plan.cells] = np.concatenate((cos, -sin, sin, cos))
        orientation = orientation @ turn
        rotated = turn.T @ rotated @ turn
    return orientation, rotated, turned


@dataclass(frozen=True)
class _Round:
    """Disjoint pairs (i, j) of columns: ``ends`` the i of every pair then the j; flat
    indices into a d × d matrix, ``terms`` of the (i, i), then (j, j), then (i, j) entries,
    ``cells`` of a rotation's (i, i), (i, j), (j, i) and (j, j) entries."""

    ends: np.ndarray
    terms: np.ndarray
    cells: np.ndarray


@functools.cache
def _rounds(d: int) -> tuple[_Round, ...]:
    """Every pair (i, j), i < j, of 0..d−1 once, in rounds of disjoint pairs (the circle
    method of round-robin tournaments)."""
    players = list(range(d)) + ([-1] if d % 2 else [])  # −1 sits a round out
    rounds = []
    for _ in range(len(players) - 1):
        half = len(players) // 2
        pairs = [
            tuple(sorted((players[i], players[-1 - i])))
            for i in range(half)
            if players[i] >= 0 and players[-1 - i] >= 0
        ]
        players = [players[0], players[-1], *players[1:-1]]
        if not pairs:  # d = 1: nothing to turn
            continue
        first = np.array([i for i, _ in pairs], dtype=np.intp)
        second = np.array([j for _, j in pairs], dtype=np.intp)
        ii, ij, ji, jj = first * (d + 1), first * d + second, second * d + first, second * (d + 1)
        rounds.append(
            _Round(
                np.concatenate([first, second]),
                np.concatenate([ii, jj, ij]),
                np.concatenate([ii, ij, ji, jj]),
            )
        )
    return tuple(rounds)


def _start_orientation(
    scatter: FloatArray, n_k: FloatArray, previous: FloatArray | None
) -> FloatArray:
    """D of ``previous``, or without it the eigenvectors of the pooled scatter W."""
    if previous is not None:
        return _common_orientation(previous, n_k)
    return _eigh_descending(_symmetrise(scatter.sum(axis=0)))[1]


def _in_axes(scatter: FloatArray, orientation: FloatArray) -> FloatArray:
    """M_k = Dᵀ W_k D."""
    return _symmetrise(orientation.T @ scatter @ orientation)


def _common_axes(
    scatter: FloatArray,
    n_k: FloatArray,
    previous: FloatArray | None,
    tol: float,
    max_iter: int,
    inverse_diagonals: Callable[[FloatArray], FloatArray],
    profile: Callable[[FloatArray], tuple[float, FloatArray, Callable | None]],
    compiled: Callable[[FloatArray, FloatArray], tuple[FloatArray, FloatArray, float]]
    | None = None,
) -> tuple[FloatArray, FloatArray]:
    """The orientation D of EVE or VVE and the diagonals of Dᵀ W_k D, by steps from the
    start's D until no plane turns by more than ``tol`` (|sin θ|, or the Newton step's
    largest angle; the covariances then move by about that much of their largest entry) or
    after ``max_iter`` steps.

    A step is a sweep of plane rotations (``_plane_rotations``, the P_k from
    ``inverse_diagonals``) or, near the minimum, a Newton step on F profiled over the
    volumes and shapes (``_newton_step``, φ from ``profile``). Sweeps converge only
    linearly, and slowly where the components' axes are poorly determined: on the M-steps of
    an EVE/VVE fit at d = 16, k = 8, ten sweeps (4-5 ms) left F 10²-10³ above the minimum
    that three Newton steps reached to rounding; in EM, where the previous M-step's D is
    close, one Newton step (~0.4 ms) usually meets IN_EM_TOL. "Near" is: started from
    ``previous``, or the last sweep turned no plane by more than NEWTON_RADIUS. Far from
    the minimum Newton steps, even capped, led EM to worse fits, and the Hessian may be
    indefinite; once a Newton step is refused (``_newton_step`` gives None) the call goes
    on with sweeps only, as a refused step costs about a sweep. ``compiled``: the sweep of
    ``families_compiled`` in place of ``_plane_rotations`` (``_compiled_sweep``).
    """
    orientation = _start_orientation(scatter, n_k, previous)
    rotated = _in_axes(scatter, orientation)
    d = scatter.shape[-1]
    newton = 2 <= d <= NEWTON_MAX_D  # else its Hessian costs more than the sweeps
    near = previous is not None
    for _ in range(max_iter):
        step = None
        if newton and near:
            step = _newton_step(scatter, orientation, rotated, profile)
            newton = step is not None  # once refused, sweeps for the rest of this call
        if step is None:
            if compiled is None:
                orientation, rotated, turned = _plane_rotations(
                    rotated, orientation, inverse_diagonals
                )
            else:  # the same sweep, compiled
                orientation, rotated, turned = compiled(rotated, orientation)
            near = turned <= NEWTON_RADIUS
        else:
            orientation, rotated, turned = step
        if turned <= tol:
            break
    return orientation, _diagonals(_in_axes(scatter, orientation))  # afresh, without drift


NEWTON_MAX_D = 24
"""Newton steps for d ≤ this only: the Hessian has (d(d − 1)/2)² entries and its solve
grows as d⁶, while a sweep grows as d³."""
NEWTON_RADIUS = 0.1
"""Largest turn (rad) of a Newton step, and of the last sweep before Newton is tried."""
NEWTON_HALVINGS = 2
"""A Newton step that does not lower F is halved at most this often before it is refused."""
ROUNDING = 1e-14
"""A rise of φ by at most this much of |φ| counts as rounding, not a rise (``_newton_step``)."""


def _newton_step(
    scatter: FloatArray,
    orientation: FloatArray,
    rotated: FloatArray,
    profile: Callable[[FloatArray], tuple[float, FloatArray, Callable | None]],
) -> tuple[FloatArray, FloatArray, float] | None:
    """One Newton step for D on the profiled objective φ(t_1, …, t_k), t_k = diag(Dᵀ W_k D)
    (F with the volumes and shapes at their best for D); None where the Newton direction
    does not descend (the Hessian is far from positive definite) or no step along it, of at
    most NEWTON_RADIUS and halved up to NEWTON_HALVINGS times, lowers φ.

    D turns to D C(X), C(X) = (I − X/2)⁻¹ (I + X/2) the Cayley transform of the skew matrix
    X with X_ij = x_p for each plane p = (i, j), i < j. With M_k = Dᵀ W_k D, the t_k move by
    ∂t_ki/∂x_p = −2 M_k,ij, ∂t_kj/∂x_p = +2 M_k,ij to first order and by
    (M_k X²)_aa − (X M_k X)_aa to second; so with g = ∂φ/∂t the gradient is
    2 Σ_k M_k,ij (g_kj − g_ki), and the Hessian is the chain rule's Jᵀ (∂²φ/∂t²) J plus the
    quadratic form Σ_k tr(G_k M_k X²) − tr(G_k X M_k X), G_k = diag(g_k). Both only couple
    planes that share an axis: their entries come from K_abc = Σ_k h_ka M_k,ab M_k,ac
    (h_ka = −g_ka / t_ka, the diagonal of ∂²φ/∂t² for both models) and
    T_abc = Σ_k g_ka M_k,bc, and one bincount over ``_newton_plan(d)`` lays them out. EVE
    adds two low-rank terms (``profile``'s third value). The returned angle is max |x_p|.
    """
    d = rotated.shape[-1]
    plan = _newton_plan(d)
    value, gradient, hessian = _newton_model(rotated, profile)
    try:
        x = np.linalg.solve(hessian, -gradient)
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(x).all():
        return None
    largest = float(abs(x).max())
    if largest == 0.0:
        return orientation, rotated, 0.0  # at the minimum exactly: nothing to turn
    identity = np.eye(d)
    # no plane turns by more than NEWTON_RADIUS (the quadratic model is trusted that far;
    # along the long valleys of poorly determined axes the full step measured 0.1-2 rad),
    # and the step is halved while φ does not fall
    x *= min(1.0, NEWTON_RADIUS / largest)
    for _ in range(NEWTON_HALVINGS + 1):
        skew = np.zeros((d, d))
        skew.flat[plan.upper] = 0.5 * x
        skew.flat[plan.lower] = -0.5 * x
        turned_to = orientation @ np.linalg.solve(identity - skew, identity + skew)
        moved = _in_axes(scatter, turned_to)
        # φ's own rounding is not a rise: at the minimum the step is noise, and refusing it
        # by the noise's sign made fits from inputs equal to rounding part by 1e-10
        if profile(_diagonals(moved))[0] <= value + ROUNDING * abs(value):
            return turned_to, moved, float(abs(x).max())
        x *= 0.5
    return None


def _newton_model(
    rotated: FloatArray,
    profile: Callable[[FloatArray], tuple[float, FloatArray, Callable | None]],
) -> tuple[float, FloatArray, FloatArray]:
    """φ, its gradient and its Hessian in the plane angles x_p at x = 0, from M_k = Dᵀ W_k D
    (the formulas are ``_newton_step``'s)."""
    k, d, _ = rotated.shape
    plan = _newton_plan(d)
    t = _diagonals(rotated)
    value, g, low_rank = profile(t)
    m = rotated[:, plan.first, plan.second]  # M_k,ij of every plane, (k, P)
    gradient = 2.0 * (m * (g[:, plan.second] - g[:, plan.first])).sum(axis=0)
    weighted = rotated * (-g / t)[:, :, None]
    chain = np.matmul(weighted.transpose(1, 2, 0), rotated.transpose(1, 0, 2))  # K
    second = (g.T @ rotated.reshape(k, d * d)).ravel()  # T
    sources = np.concatenate((chain.ravel(), second))
    p = plan.first.size
    hessian = np.bincount(
        plan.target, weights=plan.sign * sources[plan.source], minlength=p * p
    ).reshape(p, p)
    hessian = 0.5 * (hessian + hessian.T)
    if low_rank is not None:
        hessian += low_rank(m, gradient)
    return value, gradient, hessian


@dataclass(frozen=True)
class _NewtonPlan:
    """The planes (i, j), i < j, in np.triu_indices order (``first``, ``second``), their
    flat cells (i, j) and (j, i) in a d × d matrix, and how the Hessian is laid out: entry
    ``target`` (flat, P × P) gains ``sign`` × sources[``source``], sources being K then T
    (``_newton_step``), both raveled (d, d, d)."""

    first: np.ndarray
    second: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    target: np.ndarray
    source: np.ndarray
    sign: np.ndarray


@functools.cache
def _newton_plan(d: int) -> _NewtonPlan:
    """The Hessian's sparsity pattern of ``_newton_step`` for d axes, worked out once.

    For planes p = (i, j) and q = (k, m) the chain-rule term adds, for each axis a they
    share, 4 σ_p(a) σ_q(a) K_{a,b,c} (b, c the other axes of p and q; σ_p(i) = −1,
    σ_p(j) = +1). The quadratic form's coefficient of x_p x_q is
    δ_jk A_mi − δ_jm A_ki − δ_ik A_mj + δ_im A_kj
    − δ_im T_ijk + δ_ik T_ijm + δ_jm T_jik − δ_jk T_jim, with A_ab = T_aab; the Hessian
    takes it twice before ``_newton_step`` symmetrises.
    """
    first, second = np.triu_indices(d, 1)
    p = first.size
    # the chain rule: planes through a, as (other axis, sign) for every a
    index = np.full((d, d), -1, dtype=np.intp)
    index[first, second] = index[second, first] = np.arange(p)
    targets, sources, signs = [], [], []
    cube = d * d * d
    for a in range(d):
        others = np.array([b for b in range(d) if b != a], dtype=np.intp)
        sigma = np.where(others > a, -1.0, 1.0)
        b, c = np.meshgrid(others, others, indexing="ij")
        targets.append((index[a, b] * p + index[a, c]).ravel())
        sources.append((a * d * d + b * d + c).ravel())
        signs.append(4.0 * np.outer(sigma, sigma).ravel())
    # the quadratic form, over every (p, q)
    i, j = (np.repeat(v, p) for v in (first, second))  # p = (i, j)
    k, m = (np.tile(v, p) for v in (first, second))  # q = (k, m)
    grid = np.arange(p * p)

    def add(mask: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, sign: float) -> None:
        targets.append(grid[mask])
        sources.append(cube + (a * d * d + b * d + c)[mask])
        signs.append(np.full(int(mask.sum()), 2.0 * sign))

    add(j == k, m, m, i, 1.0)
    add(j == m, k, k, i, -1.0)
    add(i == k, m, m, j, -1.0)
    add(i == m, k, k, j, 1.0)
    add(i == m, i, j, k, -1.0)
    add(i == k, i, j, m, 1.0)
    add(j == m, j, i, k, 1.0)
    add(j == k, j, i, m, -1.0)
    return _NewtonPlan(
        first,
        second,
        first * d + second,
        second * d + first,
        np.concatenate(targets),
        np.concatenate(sources),
        np.concatenate(signs),
    )


def _vve_profile(n_k: FloatArray) -> Callable[[FloatArray], tuple[float, FloatArray, None]]:
    """VVE's F at its best B_k = diag(t_k) / N_k for D: φ = Σ_k N_k Σ_a log t_ka (+ n d),
    with g = N_k / t_k and no low-rank Hessian term."""

    def profile(t: FloatArray) -> tuple[float, FloatArray, None]:
        return float(n_k @ np.log(t).sum(axis=1)), n_k[:, None] / t, None

    return profile


def _eve_profile(
    n_k: FloatArray,
) -> Callable[[FloatArray], tuple[float, FloatArray, Callable[..., FloatArray]]]:
    """EVE's F at its best λ, A_k for D: φ = n d log Σ_k s_k (+ n d), s_k = gm(t_k).

    g_ka = n s_k / (S t_ka), S = Σ_k s_k; ∂²φ/∂t² is h = −g / t on its diagonal plus, per
    component, (n / (d S)) s_k u_k u_kᵀ (u_k = 1 / t_k) less (n d / S²) v vᵀ
    (v_ka = s_k u_ka / d); through the chain rule the last is −∇∇ᵀ / (n d) and the first
    (n / (d S)) Σ_k s_k y_k y_kᵀ, y_k,p = 2 M_k,ij (u_kj − u_ki).
    """
    n = float(n_k.sum())

    def profile(t: FloatArray) -> tuple[float, FloatArray, Callable[..., FloatArray]]:
        d = t.shape[-1]
        sizes = _gm(t)
        total = float(sizes.sum())
        inverse = 1.0 / t
        g = (n / total) * sizes[:, None] * inverse

        def low_rank(m: FloatArray, gradient: FloatArray) -> FloatArray:
            plan = _newton_plan(d)
            y = 2.0 * m * (inverse[:, plan.second] - inverse[:, plan.first])
            return (n / (d * total)) * (y.T * sizes) @ y - np.outer(gradient, gradient) / (n * d)

        return n * d * float(np.log(total)), g, low_rank

    return profile


@functools.cache
def _sweep_kernel():
    """``families_compiled.sweep``, or None where numba does not import."""
    try:
        from .families_compiled import sweep
    except ImportError:
        return None
    return sweep


@functools.cache
def _round_arrays(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_rounds(d)`` as the compiled sweep reads them: every round's first and second axes,
    concatenated, and where each round starts."""
    rounds = _rounds(d)
    halves = [plan.ends.size // 2 for plan in rounds]
    firsts = np.concatenate([plan.ends[:h] for plan, h in zip(rounds, halves, strict=True)])
    seconds = np.concatenate([plan.ends[h:] for plan, h in zip(rounds, halves, strict=True)])
    starts = np.concatenate([[0], np.cumsum(halves)]).astype(np.intp)
    return firsts.astype(np.intp), seconds.astype(np.intp), starts


def _compiled_sweep(
    n_k: FloatArray, equal_volume: bool, wanted: bool
) -> Callable[[FloatArray, FloatArray], tuple[FloatArray, FloatArray, float]] | None:
    """The compiled sweep for EVE (``equal_volume``) or VVE, on copies of its inputs; None
    unless ``wanted`` and numba imports (then ``_plane_rotations`` serves)."""
    kernel = _sweep_kernel() if wanted else None
    if kernel is None:
        return None

    def run(rotated: FloatArray, orientation: FloatArray) -> tuple[FloatArray, FloatArray, float]:
        rotated = np.ascontiguousarray(rotated, dtype=np.float64).copy()
        orientation = np.ascontiguousarray(orientation, dtype=np.float64).copy()
        firsts, seconds, starts = _round_arrays(rotated.shape[-1])
        turned = kernel(rotated, orientation, firsts, seconds, starts, n_k, equal_volume)
        return orientation, rotated, float(turned)

    return run


def _eve(
    scatter: FloatArray,
    n_k: FloatArray,
    previous: FloatArray | None,
    tol: float,
    max_iter: int,
    compiled: bool = False,
) -> FloatArray:
    """EVE: Σ_k = λ D A_k Dᵀ, equal volume and orientation, own shape.

    Given D, with T_k = diag(Dᵀ W_k D): A_k = T_k / gm(T_k) and λ = Σ_k gm(T_k) / n. Given
    the A_k, D turns plane by plane to lower Σ_k tr(Dᵀ W_k D A_k⁻¹) (``_plane_rotations``),
    or, near the minimum, by Newton steps on F profiled over λ and the A_k (``_common_axes``).
    """
    orientation, diagonals = _common_axes(
        scatter,
        n_k,
        previous,
        tol,
        max_iter,
        lambda t: _gm(t)[:, None] / t,
        _eve_profile(n_k),
        _compiled_sweep(n_k, True, compiled),
    )
    sizes = _gm(diagonals)
    volume = sizes.sum() / n_k.sum()
    return _rotate(orientation, volume * diagonals / sizes[:, None])


def _vve(
    scatter: FloatArray,
    n_k: FloatArray,
    previous: FloatArray | None,
    tol: float,
    max_iter: int,
    compiled: bool = False,
) -> FloatArray:
    """VVE: Σ_k = D B_k Dᵀ (B_k = λ_k A_k diagonal), common orientation only (Flury's CPC).

    Given D: B_k = diag(Dᵀ W_k D) / N_k. Given the B_k, D turns plane by plane to lower
    Σ_k tr(Dᵀ W_k D B_k⁻¹), or, near the minimum, by Newton steps on F profiled over the B_k
    (``_common_axes``). (mclust 6.0.0 instead takes EVE's D, chosen with the volumes
    left out, which does not minimise F; its VVE fits differ from these, see the tests.)
    """
    orientation, diagonals = _common_axes(
        scatter,
        n_k,
        previous,
        tol,
        max_iter,
        lambda t: n_k[:, None] / t,
        _vve_profile(n_k),
        _compiled_sweep(n_k, False, compiled),
    )
    return _rotate(orientation, diagonals / n_k[:, None])


_CLOSED_FORM: dict[str, Callable[[FloatArray, FloatArray], FloatArray]] = {
    "EII": _eii,
    "VII": _vii,
    "EEI": _eei,
    "EVI": _evi,
    "VVI": _vvi,
    "EEE": _eee,
    "EEV": _eev,
    "EVV": _evv,
    "VVV": _vvv,
}

_ITERATIVE: dict[str, Callable[..., FloatArray]] = {
    "VEI": _vei,
    "VEE": _vee,
    "VEV": _vev,
    "EVE": _eve,
    "VVE": _vve,
}
_SWEPT = frozenset({"EVE", "VVE"})
"""The iterated M-steps whose orientation turns by sweeps, which may be compiled."""
