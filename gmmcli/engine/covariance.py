"""One small strategy per covariance type: features, densities, statistics to parameters.

Each strategy says which features a chunk carries below its shifted rows z (see ``chunk``),
the coefficients that turn those features into log π_k N(x | μ_k, Σ_k) with one product, and
how the second moments that the same features yield become covariances. Everything is about
the fit's shift (means enter as ``m = means − shift``), never about the origin. Shapes of
covariances and precision Cholesky factors follow scikit-learn: full (k, d, d), tied (d, d),
diag (k, d), spherical (k,).

This module is also the one registry of covariance models: every fact that depends on the
model (names, aliases, shapes, parameter counts, wording, collapse thresholds, conversions)
is an attribute or method of its strategy, found with ``get_strategy``; no other module
switches on a covariance type name. A new model is one more subclass in ``_STRATEGIES``.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: importing chunk here would cycle through params
    from .chunk import Chunk

LOG_2PI = math.log(2.0 * math.pi)


class CovarianceStrategy:
    """The interface; subclasses fill in one covariance type each.

    Attributes
    ----------
    name : the canonical name, as written in model files and shown to people.
    aliases : other names ``get_strategy`` accepts for this model.
    description : what the stored covariances are, in words (model-file messages).
    shared : one covariance for every component (Σ_k = Σ), stored without a component axis.
        Its M-step needs only the second moments summed over the components, so its S2 is
        one row, (1, ``n_second``), summed over every row's Gaussian responsibilities
        (``stats.reduce_chunk_blocks``), and its E-step has a quadratic that is the same
        for every component (``row_factor``).
    is_diagonal : every Σ_k is diagonal (no correlations between columns).
    iterated_mstep : the M-step has no closed form and iterates (several times the work of
        a closed-form one).
    pairwise : the features are the pairs z_a z_b (full and the families); for many
        columns the kernel goes component by component instead (``bycomponent``).
    stores_variances : the covariances are stored as variances, (k, d) or (k,), each > 0
        (diag, spherical), not as matrices (which a diagonal family keeps, with zeros off
        the diagonal).
    row_features : the name of the compiled kernel (``diagonal_compiled``) that makes this
        model's features row by row, for the pass of ``diagonal``; None: the model's passes
        are ``stats``' only.
    """

    name: str = ""
    aliases: tuple[str, ...] = ()
    description: str = ""
    shared: bool = False
    is_diagonal: bool = False
    iterated_mstep: bool = False
    pairwise: bool = False
    stores_variances: bool = False
    row_features: str | None = None

    def shape(self, k: int, d: int) -> tuple[int, ...]:
        """Shape of the covariances array for k components and d columns: full (k, d, d),
        tied (d, d), diag (k, d), spherical (k,)."""
        raise NotImplementedError

    def min_rows(self, d: int) -> int:
        """Effective rows (N_k) below which a component counts as collapsed: d + 1 for full
        (fewer rows span a subspace), 1 for tied (the shared matrix has every row), 2 for
        diag and spherical (one row has no spread)."""
        raise NotImplementedError

    def to_full(self, cov: np.ndarray, k: int, d: int) -> np.ndarray:
        """Every component's covariance as a new (k, d, d) array: Σ_k (full), Σ for every k
        (tied), diag(σ²_k) (diag), σ²_k I (spherical)."""
        raise NotImplementedError

    def rescaled(self, cov: np.ndarray, s: np.ndarray) -> tuple[str, np.ndarray]:
        """(name, covariances) of D Σ_k D, D = diag(s), for x = c + s·y: the covariances of a
        standardized fit in the data's units, and the model they then belong to."""
        raise NotImplementedError

    def variance_index(self, i: int, j: int) -> tuple[int, ...]:
        """Where component i's variance of column j is stored in the covariances array."""
        raise NotImplementedError

    def matrices(self, cov: np.ndarray) -> np.ndarray:
        """The distinct (d, d) matrices, (m, d, d), of a non-diagonal model (m = k, or 1 if
        shared); each is checked and factored on its own."""
        raise NotImplementedError

    def matrix_name(self, j: int) -> str:
        """How messages name the j-th of ``matrices``: "covariances[j]" or "'covariances'"."""
        return "'covariances'" if self.shared else f"covariances[{j}]"

    def pinned_variance(
        self, variances: np.ndarray, floor: np.ndarray
    ) -> tuple[int | None, float] | None:
        """(column or None, variance) of the smallest of one component's (d,) variances
        that is below its column's floor, or None if none is."""
        pinned = np.flatnonzero(variances < floor)
        if not pinned.size:
            return None
        j = int(pinned[np.argmin(variances[pinned])])
        return j, float(variances[j])

    def n_parameters(self, k: int, d: int) -> int:
        """Free parameters of the covariances alone."""
        raise NotImplementedError

    def n_extra(self, d: int) -> int:
        """How many feature rows the chunk carries below z."""
        raise NotImplementedError

    def n_second(self, d: int) -> int:
        """How many numbers one row of S2 holds (the width of ``moments_of``): the extra
        features', whose sums S2 are, unless the model's chunks carry none (tied)."""
        return self.n_extra(d)

    def row_factor(self, prec_chol: np.ndarray) -> np.ndarray | None:
        """Q (d, d) when every component's log density has the same quadratic −½‖Q z‖² in
        z (a shared precision Λ = QᵀQ): ‖Q z‖² is computed once per row, not k times, into
        the first extra feature row, which the E-step fills before its product (it depends
        on Σ, not on the rows alone: ``stats.Model.row_terms``) and every component's
        coefficients take with −½. None: the features depend on the rows alone."""
        return None

    def fill_features(self, chunk: Chunk) -> None:
        """Compute the extra feature rows from z, in place."""
        raise NotImplementedError

    def coefficients(
        self, m: np.ndarray, prec_chol: np.ndarray, log_const: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(k, q) coefficients and (k,) constants: log π_k N(x_i|μ_k,Σ_k) = coef_k·f_i + const_k,
        where log_const_k = log π_k + log det P_k − ½ d log 2π."""
        raise NotImplementedError

    def raw_covariances(
        self,
        n_k: np.ndarray,
        counts: np.ndarray,
        m: np.ndarray,
        s2: np.ndarray,
        previous: np.ndarray | None = None,
        spread: np.ndarray | None = None,
    ) -> np.ndarray:
        """Covariances before regularisation from N_k (+10 eps), Σ_i r_ik, shifted means, and
        S2 = Σ_i r_ik × (the chunk's extra features) — second moments in this type's form
        (``moments_of``), one row per component, or one row summed over them (``shared``).
        ``previous`` (the current covariances) is where a model whose M-step iterates starts;
        ``spread`` is ``self.spread`` of the same statistics when it was computed already
        (it is these covariances, for a model whose M-step does not constrain them further).

        Σ_k = Σ_i r_ik (z_i − m_k)(z_i − m_k)ᵀ / N_k = S2_k / N_k − m_k m_kᵀ (2 − Σ_i r_ik / N_k),
        which is scikit-learn's two-pass formula expanded about the shift.
        """
        raise NotImplementedError

    def spread(
        self, n_k: np.ndarray, counts: np.ndarray, m: np.ndarray, s2: np.ndarray
    ) -> np.ndarray:
        """How far each component's rows spread, in this model's shape of covariances, for
        checks that need no M-step (whether statistics were summed far from a mean): the
        covariances themselves, unless the model's M-step is costly."""
        return self.raw_covariances(n_k, counts, m, s2)

    def regularise(self, raw: np.ndarray, reg_covar: float | np.ndarray) -> np.ndarray:
        """Add reg_covar (a number, or one per column) to the diagonal."""
        raise NotImplementedError

    def reach(self, m: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
        """(k,) ‖P_kᵀ m_k‖²: how far each shifted mean lies from the shift, in the component's
        own standard deviations, squared (inf where that overflows)."""
        raise NotImplementedError

    def select(self, prec_chol: np.ndarray, components: np.ndarray) -> np.ndarray:
        """The precision factors of some components, in the shape ``coefficients`` takes."""
        return prec_chol[components]

    def precision_cholesky(self, cov: np.ndarray) -> np.ndarray:
        """P with P Pᵀ = Σ⁻¹ (upper-triangular for full and tied, as in scikit-learn)."""
        raise NotImplementedError

    def log_det_precision_chol(self, prec_chol: np.ndarray, d: int) -> np.ndarray:
        """log det P per component, i.e. −½ log det Σ_k."""
        raise NotImplementedError

    def component_variances(self, raw: np.ndarray, k: int, d: int) -> np.ndarray:
        """(k, d) per-column variances of each component, before regularisation."""
        raise NotImplementedError

    def from_data_covariance(self, data_cov: np.ndarray, k: int) -> np.ndarray:
        """Covariances of this type that every component takes from the data's covariance:
        ``data_cov`` (d, d), or for a diagonal model (``is_diagonal``) also the (d,) column
        variances, all that such a model reads (its data summary holds no more)."""
        raise NotImplementedError

    def replace_component(self, cov: np.ndarray, index: int, data_cov: np.ndarray) -> np.ndarray:
        """A copy of cov with one component's covariance reset to the data's (for a re-seed)."""
        out = cov.copy()
        out[index] = self.from_data_covariance(data_cov, 1)[0]
        return out

    # -- rows with missing cells (engine/missing.py) -------------------------------------------
    def precisions(self, prec_chol: np.ndarray, k: int, d: int) -> np.ndarray:
        """(k, d, d) every component's precision Λ_k = P_k P_kᵀ, as the coefficients use it."""
        raise NotImplementedError

    def moments_of(self, second: np.ndarray) -> np.ndarray:
        """Second moments (..., d, d), e.g. Σ_i r_i C_i, as this model's statistics S2 sum them
        (..., n_second): the pairs a ≤ b (full, tied), the diagonal (diag), the trace
        (spherical)."""
        raise NotImplementedError


def covariance_names() -> tuple[str, ...]:
    """The canonical covariance model names, in the order they are offered."""
    return tuple(s.name for s in _STRATEGIES)


def get_strategy(name: str) -> CovarianceStrategy:
    """The strategy for a covariance model name or alias; ValueError naming the allowed
    (canonical) names for an unknown one."""
    try:
        return _BY_NAME[name.casefold()]
    except (KeyError, AttributeError):
        names = ", ".join(covariance_names())
        raise ValueError(f"unknown covariance type {name!r} (use one of {names})") from None


def cholesky_precision(cov: np.ndarray) -> np.ndarray:
    """Upper-triangular P = L⁻ᵀ for Σ = L Lᵀ, so that P Pᵀ = Σ⁻¹: of one (d, d) matrix, or of
    each of a stack (k, d, d) at once (numpy's stacked LAPACK calls; a loop of scipy calls
    cost 20× more on the small matrices of a model selection grid). LinAlgError when a
    matrix is not positive definite (or not finite)."""
    lower = np.linalg.cholesky(cov)
    inverse = np.linalg.inv(lower)
    # the inverse of a triangular matrix is triangular: drop the rounding that the pivoted
    # LU behind inv() may leave above the diagonal
    inverse *= _lower_mask(cov.shape[-1])
    return np.swapaxes(inverse, -1, -2)


@functools.cache
def _identity(d: int) -> np.ndarray:
    """The (d, d) identity (read-only): made once, as regularising needs it every M-step."""
    eye = np.eye(d)
    eye.flags.writeable = False
    return eye


@functools.cache
def _lower_mask(d: int) -> np.ndarray:
    """(d, d) ones on and below the diagonal, zeros above (read-only)."""
    mask = np.tri(d)
    mask.flags.writeable = False
    return mask


def _inverse_sqrt(variances: np.ndarray) -> np.ndarray:
    """1/√σ² for diag and spherical; a variance that is not positive is an error here, as a
    failed Cholesky is for full and tied."""
    if not np.all(variances > 0):
        raise np.linalg.LinAlgError("variance is not positive")
    return 1.0 / np.sqrt(variances)


def _variances(data_cov: np.ndarray) -> np.ndarray:
    """The (d,) diagonal of a (d, d) covariance, or (d,) variances as they are."""
    return data_cov if data_cov.ndim == 1 else np.diag(data_cov)


def _pairs(zt: np.ndarray, out: np.ndarray) -> None:
    """Products z_a z_b for a ≤ b, in ``np.triu_indices(d)`` order, one row each."""
    d = zt.shape[0]
    start = 0
    for a in range(d):
        np.multiply(zt[a], zt[a:], out=out[start : start + d - a])
        start += d - a


@functools.cache
def _triangle(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.triu_indices(d)`` (a, b) and the coefficient of Λ_ab on z_a z_b in
    −½ zᵀ Λ z: −½ on the diagonal, −1 off it (the pair stands for both (a, b) and (b, a)).
    Computed once per d (read-only): every E-step of a full model needs them."""
    a, b = np.triu_indices(d)
    weight = np.where(a == b, -0.5, -1.0)
    for array in (a, b, weight):
        array.flags.writeable = False
    return a, b, weight


def _quadratic_coefficients(
    precision: np.ndarray, m: np.ndarray, log_const: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients on [z; pairs] for −½ (z − m_k)ᵀ Λ_k (z − m_k) + log_const_k, with
    Λ_k (k, d, d): Λ_k m_k on z, −½ Λ_k,ab (doubled off the diagonal) on z_a z_b."""
    a, b, weight = _triangle(m.shape[1])
    quadratic = precision[:, a, b] * weight
    linear = np.einsum("kab,kb->ka", precision, m)
    const = log_const - 0.5 * np.einsum("ka,ka->k", linear, m)
    return np.concatenate([linear, quadratic], axis=1), const


def _unpack_symmetric(packed: np.ndarray, d: int) -> np.ndarray:
    """(..., d(d+1)/2) upper triangles in triu order to (..., d, d) symmetric matrices."""
    a, b, _ = _triangle(d)
    out = np.empty((*packed.shape[:-1], d, d))
    out[..., a, b] = packed
    out[..., b, a] = packed
    return out


class Full(CovarianceStrategy):
    """Features [z; z_a z_b (a ≤ b)]: with Λ_k = P_k P_kᵀ the quadratic form of every
    component is one product, and S2 is the same pairs against the responsibilities."""

    name = "full"
    aliases = ("VVV",)
    description = "one d x d matrix per component"
    pairwise = True
    row_features = "pairs"

    def shape(self, k: int, d: int) -> tuple[int, ...]:
        return (k, d, d)

    def min_rows(self, d: int) -> int:
        return d + 1  # fewer rows span at most a (d − 1)-dimensional subspace

    def to_full(self, cov, k, d):
        return np.array(cov)

    def rescaled(self, cov, s):
        return self.name, cov * s[None, :, None] * s[None, None, :]

    def variance_index(self, i, j):
        return (i, j, j)

    def matrices(self, cov):
        return cov

    def n_parameters(self, k: int, d: int) -> int:
        return k * d * (d + 1) // 2

    def n_extra(self, d: int) -> int:
        return d * (d + 1) // 2

    def fill_features(self, chunk):
        _pairs(chunk.zt, chunk.extra)

    def coefficients(self, m, prec_chol, log_const):
        precision = prec_chol @ np.swapaxes(prec_chol, 1, 2)
        return _quadratic_coefficients(precision, m, log_const)

    def raw_covariances(self, n_k, counts, m, s2, previous=None, spread=None):
        if spread is not None:
            return spread
        second = _unpack_symmetric(s2, m.shape[1])
        factor = 2.0 - counts / n_k
        cov = second / n_k[:, None, None] - factor[:, None, None] * m[:, :, None] * m[:, None, :]
        return 0.5 * (cov + np.swapaxes(cov, 1, 2))

    def regularise(self, raw, reg_covar):
        return raw + reg_covar * _identity(raw.shape[-1])

    def precision_cholesky(self, cov):
        return cholesky_precision(cov)

    def reach(self, m, prec_chol):
        return (np.einsum("kab,ka->kb", prec_chol, m) ** 2).sum(axis=1)

    def log_det_precision_chol(self, prec_chol, d):
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)

    def component_variances(self, raw, k, d):
        return np.diagonal(raw, axis1=1, axis2=2).copy()

    def from_data_covariance(self, data_cov, k):
        return np.broadcast_to(data_cov, (k, *data_cov.shape)).copy()

    def precisions(self, prec_chol, k, d):
        return prec_chol @ np.swapaxes(prec_chol, 1, 2)

    def moments_of(self, second):
        a, b = np.triu_indices(second.shape[-1])
        return second[..., a, b]


class Tied(CovarianceStrategy):
    """One shared Λ = P Pᵀ: log π_k N(x | μ_k, Σ) = const_k + (Λ m_k)ᵀ z − ½ ‖Pᵀ z‖², whose
    quadratic is the same for every component. So a chunk carries [z; q; 1] with
    q = ‖Pᵀ z‖² (one product per row, ``row_factor``, filled by the E-step), the
    coefficients are [Λ m_k, −½, const_k] (the constants in the product spare a pass over
    the (k, c) log densities), and the M-step needs only the pooled S2 = Σ_i s_i z_i z_iᵀ
    (s_i the row's Gaussian responsibilities, Σ_k r_ik), one row of pairs a ≤ b: the full
    model's features (the pairs of every row, k products over them) cost ~4× the work
    (issue 14)."""

    name = "tied"
    aliases = ("EEE",)
    description = "one d x d matrix shared by all components"
    shared = True

    def shape(self, k: int, d: int) -> tuple[int, ...]:
        return (d, d)

    def min_rows(self, d: int) -> int:
        return 1

    def to_full(self, cov, k, d):
        return np.broadcast_to(cov, (k, d, d)).copy()

    def rescaled(self, cov, s):
        return self.name, cov * s[:, None] * s[None, :]

    def variance_index(self, i, j):
        return (j, j)

    def matrices(self, cov):
        return cov[None]

    def n_parameters(self, k: int, d: int) -> int:
        return d * (d + 1) // 2

    def n_extra(self, d: int) -> int:
        return 2  # q = ‖Pᵀ z‖², the E-step's (``row_factor``), and 1; S2 is the Gram of z

    def n_second(self, d: int) -> int:
        return d * (d + 1) // 2

    def fill_features(self, chunk):
        chunk.extra[1] = 1.0  # q depends on Σ: the E-step fills it (``Model.row_terms``)

    def row_factor(self, prec_chol):
        return np.ascontiguousarray(prec_chol.T)  # ‖Pᵀ z‖² = zᵀ P Pᵀ z = zᵀ Λ z

    def coefficients(self, m, prec_chol, log_const):
        linear = m @ (prec_chol @ prec_chol.T)  # Λ m_k, as rows (Λ is symmetric)
        const = log_const - 0.5 * np.einsum("ka,ka->k", linear, m)
        coefficients = np.column_stack([linear, np.full(m.shape[0], -0.5), const])
        return coefficients, np.zeros_like(const)  # the constants are the product's

    def raw_covariances(self, n_k, counts, m, s2, previous=None, spread=None):
        if spread is not None:
            return spread
        # S2 is pooled, one row (``shared``); summing its rows also takes per-component ones
        second = _unpack_symmetric(s2.sum(axis=0), m.shape[1])
        cov = (second - (n_k[:, None] * m).T @ m) / n_k.sum()
        return 0.5 * (cov + cov.T)

    def regularise(self, raw, reg_covar):
        return raw + reg_covar * _identity(raw.shape[0])

    def precision_cholesky(self, cov):
        return cholesky_precision(cov)

    def reach(self, m, prec_chol):
        return ((m @ prec_chol) ** 2).sum(axis=1)

    def select(self, prec_chol, components):
        return prec_chol  # shared by every component

    def log_det_precision_chol(self, prec_chol, d):
        return np.log(np.diag(prec_chol)).sum()

    def component_variances(self, raw, k, d):
        return np.broadcast_to(np.diag(raw), (k, d)).copy()

    def from_data_covariance(self, data_cov, k):
        return data_cov.copy()

    def replace_component(self, cov, index, data_cov):
        return cov.copy()  # the shared covariance is not one component's to reset

    def precisions(self, prec_chol, k, d):
        return np.broadcast_to(prec_chol @ prec_chol.T, (k, d, d)).copy()

    def moments_of(self, second):
        a, b = np.triu_indices(second.shape[-1])
        return second[..., a, b]


class Diag(CovarianceStrategy):
    """Features [z; z²]: Σ_a λ_ka (z_a − m_ka)² expands to one product."""

    name = "diag"
    aliases = ("VVI",)
    description = "d variances per component"
    is_diagonal = True
    stores_variances = True
    row_features = "squares"

    def shape(self, k: int, d: int) -> tuple[int, ...]:
        return (k, d)

    def min_rows(self, d: int) -> int:
        return 2

    def to_full(self, cov, k, d):
        return np.einsum("kd,de->kde", cov, np.eye(d))

    def rescaled(self, cov, s):
        return self.name, cov * s**2

    def variance_index(self, i, j):
        return (i, j)

    def n_parameters(self, k: int, d: int) -> int:
        return k * d

    def n_extra(self, d: int) -> int:
        return d

    def fill_features(self, chunk):
        np.multiply(chunk.zt, chunk.zt, out=chunk.extra)

    def coefficients(self, m, prec_chol, log_const):
        precision = prec_chol**2
        const = log_const - 0.5 * (m * m * precision).sum(axis=1)
        return np.concatenate([precision * m, -0.5 * precision], axis=1), const

    def raw_covariances(self, n_k, counts, m, s2, previous=None, spread=None):
        if spread is not None:
            return spread
        factor = 2.0 - counts / n_k
        return np.maximum(s2 / n_k[:, None] - factor[:, None] * m * m, 0.0)

    def regularise(self, raw, reg_covar):
        return raw + reg_covar

    def precision_cholesky(self, cov):
        return _inverse_sqrt(cov)

    def reach(self, m, prec_chol):
        return ((m * prec_chol) ** 2).sum(axis=1)

    def log_det_precision_chol(self, prec_chol, d):
        return np.log(prec_chol).sum(axis=1)

    def component_variances(self, raw, k, d):
        return raw.copy()

    def from_data_covariance(self, data_cov, k):
        variances = _variances(data_cov)
        return np.broadcast_to(variances, (k, variances.shape[0])).copy()

    def precisions(self, prec_chol, k, d):
        return np.einsum("kd,de->kde", prec_chol**2, np.eye(d))

    def moments_of(self, second):
        return np.diagonal(second, axis1=-2, axis2=-1).copy()


class Spherical(CovarianceStrategy):
    """Features [z; ‖z‖²]: λ_k ‖z − m_k‖² expands to one product."""

    name = "spherical"
    aliases = ("VII",)
    description = "one variance per component"
    is_diagonal = True
    stores_variances = True
    row_features = "square_norm"

    def shape(self, k: int, d: int) -> tuple[int, ...]:
        return (k,)

    def min_rows(self, d: int) -> int:
        return 2

    def to_full(self, cov, k, d):
        return cov[:, None, None] * np.eye(d)[None]

    def rescaled(self, cov, s):
        """σ²_k s_j² differs by column: the result is diag."""
        return Diag.name, cov[:, None] * s[None, :] ** 2

    def variance_index(self, i, j):
        return (i,)

    def pinned_variance(self, variances, floor):
        """One variance, repeated in every column: pinned below the smallest floor."""
        if variances[0] < floor.min():
            return None, float(variances[0])
        return None

    def n_parameters(self, k: int, d: int) -> int:
        return k

    def n_extra(self, d: int) -> int:
        return 1

    def fill_features(self, chunk):
        np.einsum("ac,ac->c", chunk.zt, chunk.zt, out=chunk.extra[0])

    def coefficients(self, m, prec_chol, log_const):
        precision = prec_chol**2
        const = log_const - 0.5 * precision * (m * m).sum(axis=1)
        return np.column_stack([precision[:, None] * m, -0.5 * precision]), const

    def raw_covariances(self, n_k, counts, m, s2, previous=None, spread=None):
        if spread is not None:
            return spread
        factor = 2.0 - counts / n_k
        total = s2[:, 0] / n_k - factor * (m * m).sum(axis=1)
        return np.maximum(total / m.shape[1], 0.0)

    def regularise(self, raw, reg_covar):
        return raw + np.mean(reg_covar)  # one variance: the mean over the columns

    def precision_cholesky(self, cov):
        return _inverse_sqrt(cov)

    def reach(self, m, prec_chol):
        return prec_chol**2 * (m * m).sum(axis=1)

    def log_det_precision_chol(self, prec_chol, d):
        return d * np.log(prec_chol)

    def component_variances(self, raw, k, d):
        return np.broadcast_to(raw[:, None], (k, d)).copy()

    def from_data_covariance(self, data_cov, k):
        return np.full(k, _variances(data_cov).mean())

    def precisions(self, prec_chol, k, d):
        return (prec_chol**2)[:, None, None] * np.eye(d)[None]

    def moments_of(self, second):
        return np.trace(second, axis1=-2, axis2=-1)[..., None]


class Family(Full):
    """One of mclust's Celeux–Govaert models beyond the four above, Σ_k = λ_k D_k A_k D_kᵀ
    with volume, shape and orientation each Equal, Variable or Identity (the name's three
    letters). Stored and evaluated as a full (k, d, d) matrix per component, so the E-step is
    the full one; the M-step applies the model to the scatter matrices W_k = N_k Σ̂_k that
    the statistics give (``families.m_step``: closed form, or iterated to convergence), and
    reg_covar is added to the diagonal after it, as for every model."""

    aliases = ()

    def __init__(self, name: str, description: str) -> None:
        from .families import ITERATIVE_MODELS

        self.name = name
        self.description = description  # stored and checked as full matrices: not is_diagonal
        self.iterated_mstep = name in ITERATIVE_MODELS

    def min_rows(self, d: int) -> int:
        if self.name[0] == "E" and self.name[1] == "E":
            return 1  # volume and shape are pooled over the components
        return 2 if self.name[2] != "V" else d + 1  # a variable orientation is a full fit

    def n_parameters(self, k: int, d: int) -> int:
        from .families import n_covariance_parameters

        return n_covariance_parameters(self.name, k, d)

    def raw_covariances(self, n_k, counts, m, s2, previous=None, spread=None):
        from .families import IN_EM_MAX_ITER, IN_EM_TOL, compiled_sweeps, m_step

        unconstrained = self.spread(n_k, counts, m, s2) if spread is None else spread
        # A component on a point, a flat column or no rows at all has a singular (or zero)
        # scatter matrix, and the model's volumes and shapes then divide by zero; a jitter of
        # 1e-12 of each column's pooled variance keeps the maths finite, and the collapse
        # checks and reg_covar do the rest, as for every model. Per column, so that it stays
        # 1e-12 of every column whatever the units: one jitter from the mean variance over
        # columns 1e5 apart in scale was 0.3 % of the small columns' variance, enough to
        # make EEI's EM lower its own log-likelihood.
        pooled = np.einsum("k,kii->i", n_k, unconstrained) / n_k.sum()
        positive = pooled > 0
        if not positive.all():
            fallback = float(pooled[positive].mean()) if positive.any() else 1.0
            pooled = np.where(positive, pooled, fallback)
        jittered = unconstrained.copy()
        diagonal = np.arange(pooled.size)
        jittered[:, diagonal, diagonal] += 1e-12 * pooled
        with np.errstate(all="ignore"):
            try:
                usable = previous is not None and previous.shape == unconstrained.shape
                start = previous if usable and np.isfinite(previous).all() else None
                scatter = jittered * n_k[:, None, None]
                k, d = m.shape
                cov = m_step(
                    self.name,
                    scatter,
                    n_k,
                    start,
                    tol=IN_EM_TOL,
                    max_iter=IN_EM_MAX_ITER,
                    compiled=compiled_sweeps(float(n_k.sum()), d, k),
                )
            except np.linalg.LinAlgError:
                cov = np.full_like(unconstrained, np.nan)
        bad = ~np.isfinite(cov).all(axis=(1, 2))
        cov[bad] = unconstrained[bad]  # unconstrained where the model gave no number
        return cov

    def spread(self, n_k, counts, m, s2):
        return super().raw_covariances(n_k, counts, m, s2)  # the unconstrained scatter

    def rescaled(self, cov, s):
        return "full", cov * s[None, :, None] * s[None, None, :]  # D Σ_k D keeps no constraint

    def from_data_covariance(self, data_cov, k):
        from .families import m_step

        matrix = np.diag(data_cov) if data_cov.ndim == 1 else data_cov
        return m_step(self.name, np.broadcast_to(matrix, (k, *matrix.shape)).copy(), np.ones(k))


class DiagonalFamily(Family):
    """EII, EEI, VEI and EVI: families whose every Σ_k is diagonal. Their statistics and
    E-step are diag's (features [z; z²], (k, d) precision factors, the compiled diagonal
    pass of ``engine/diagonal``): a fifth of the full kernel's work at d = 16, k = 8, where
    taking the full kernel made them slower than full itself. The M-step is the family's,
    on the diagonal scatter matrices, and the covariances stay stored as (k, d, d)
    matrices like every family's, so model files are unchanged."""

    is_diagonal = True
    pairwise = False
    row_features = Diag.row_features
    n_extra = Diag.n_extra
    fill_features = Diag.fill_features
    coefficients = Diag.coefficients
    reach = Diag.reach
    log_det_precision_chol = Diag.log_det_precision_chol
    precisions = Diag.precisions
    moments_of = Diag.moments_of

    def spread(self, n_k, counts, m, s2):
        variances = Diag.raw_covariances(self, n_k, counts, m, s2)
        return variances[:, :, None] * _identity(m.shape[1])

    def precision_cholesky(self, cov):
        return _inverse_sqrt(np.diagonal(cov, axis1=1, axis2=2))


# The registry: canonical order, then every name and alias (any case) to its strategy.
_STRATEGIES: tuple[CovarianceStrategy, ...] = (
    Full(),
    Tied(),
    Diag(),
    Spherical(),
    DiagonalFamily("EII", "equal spherical matrices (one volume), stored d x d per component"),
    DiagonalFamily("EEI", "one diagonal matrix for all components, stored d x d per component"),
    DiagonalFamily("VEI", "diagonal matrices of equal shape, variable volume, stored d x d each"),
    DiagonalFamily("EVI", "diagonal matrices of equal volume, variable shape, stored d x d each"),
    Family("VEE", "matrices of equal shape and orientation, variable volume"),
    Family("EVE", "matrices of equal volume and orientation, variable shape"),
    Family("VVE", "matrices of equal orientation, variable volume and shape"),
    Family("EEV", "matrices of equal volume and shape, variable orientation"),
    Family("VEV", "matrices of equal shape, variable volume and orientation"),
    Family("EVV", "matrices of equal volume, variable shape and orientation"),
)
_BY_NAME: dict[str, CovarianceStrategy] = {
    key.casefold(): s for s in _STRATEGIES for key in (s.name, *s.aliases)
}
