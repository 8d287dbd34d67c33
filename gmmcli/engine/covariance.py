"""One small strategy per covariance type: statistics to parameters, precisions, densities.

Every strategy works on data ``Z = X - shift`` and shifted means ``M = means - shift`` (see
``stats``), so nothing here ever forms raw second moments about the origin. Shapes follow
scikit-learn: covariances and precision Cholesky factors are full (k, d, d), tied (d, d),
diag (k, d), spherical (k,).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import linalg

LOG_2PI = math.log(2.0 * math.pi)


class CovarianceStrategy:
    """The interface; subclasses fill in one covariance type each."""

    name: str = ""

    def n_parameters(self, k: int, d: int) -> int:
        """Free parameters of the covariances alone."""
        raise NotImplementedError

    def second_moment(self, z: np.ndarray, resp: np.ndarray) -> np.ndarray:
        """A chunk's second-moment statistic: Σ_i r_ik z_i z_iᵀ in this type's reduced form."""
        raise NotImplementedError

    def raw_covariances(
        self, n_k: np.ndarray, counts: np.ndarray, m: np.ndarray, s2: np.ndarray
    ) -> np.ndarray:
        """Covariances before regularisation from N_k (+10 eps), Σ r_ik, shifted means, S2.

        Σ_k = Σ_i r_ik (z_i − m_k)(z_i − m_k)ᵀ / N_k = S2_k / N_k − m_k m_kᵀ (2 − Σ_i r_ik / N_k),
        which is scikit-learn's two-pass formula expanded about the shift.
        """
        raise NotImplementedError

    def regularise(self, raw: np.ndarray, reg_covar: float) -> np.ndarray:
        """Add reg_covar to the diagonal."""
        raise NotImplementedError

    def precision_cholesky(self, cov: np.ndarray) -> np.ndarray:
        """P with P Pᵀ = Σ⁻¹ (upper-triangular for full and tied, as in scikit-learn)."""
        raise NotImplementedError

    def log_det_precision_chol(self, prec_chol: np.ndarray, d: int) -> np.ndarray:
        """log det P per component, i.e. −½ log det Σ_k."""
        raise NotImplementedError

    def mahalanobis(self, z: np.ndarray, m: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
        """(chunk, k) squared Mahalanobis distances ‖Pᵀ(z − m_k)‖²."""
        raise NotImplementedError

    def component_variances(self, raw: np.ndarray, k: int, d: int) -> np.ndarray:
        """(k, d) per-column variances of each component, before regularisation."""
        raise NotImplementedError

    def from_data_covariance(self, data_cov: np.ndarray, k: int) -> np.ndarray:
        """Covariances of this type that every component takes from the data's covariance."""
        raise NotImplementedError

    def replace_component(self, cov: np.ndarray, index: int, data_cov: np.ndarray) -> np.ndarray:
        """A copy of cov with one component's covariance reset to the data's (for a re-seed)."""
        out = cov.copy()
        out[index] = self.from_data_covariance(data_cov, 1)[0]
        return out

    def log_gaussian(self, z: np.ndarray, m: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
        """(chunk, k) log N(x | μ_k, Σ_k) = −½ d log 2π + log det P − ½ ‖Pᵀ(x − μ)‖²."""
        d = z.shape[1]
        log_det = self.log_det_precision_chol(prec_chol, d)
        return -0.5 * (d * LOG_2PI + self.mahalanobis(z, m, prec_chol)) + log_det


def _cholesky_precision(cov: np.ndarray) -> np.ndarray:
    """Upper-triangular P = L⁻ᵀ for Σ = L Lᵀ, so that P Pᵀ = Σ⁻¹."""
    lower = linalg.cholesky(cov, lower=True, check_finite=False)
    eye = np.eye(cov.shape[0])
    return linalg.solve_triangular(lower, eye, lower=True, check_finite=False).T


def _inverse_sqrt(variances: np.ndarray) -> np.ndarray:
    """1/√σ² for diag and spherical; a variance that is not positive is an error here, as a
    failed Cholesky is for full and tied."""
    if not np.all(variances > 0):
        raise np.linalg.LinAlgError("variance is not positive")
    return 1.0 / np.sqrt(variances)


class Full(CovarianceStrategy):
    name = "full"

    def n_parameters(self, k: int, d: int) -> int:
        return k * d * (d + 1) // 2

    def second_moment(self, z: np.ndarray, resp: np.ndarray) -> np.ndarray:
        k = resp.shape[1]
        out = np.empty((k, z.shape[1], z.shape[1]))
        for c in range(k):
            out[c] = (z * resp[:, c : c + 1]).T @ z
        return out

    def raw_covariances(self, n_k, counts, m, s2):
        factor = 2.0 - counts / n_k
        cov = s2 / n_k[:, None, None] - factor[:, None, None] * m[:, :, None] * m[:, None, :]
        return 0.5 * (cov + np.swapaxes(cov, 1, 2))

    def regularise(self, raw, reg_covar):
        d = raw.shape[-1]
        return raw + reg_covar * np.eye(d)[None]

    def precision_cholesky(self, cov):
        return np.stack([_cholesky_precision(c) for c in cov])

    def log_det_precision_chol(self, prec_chol, d):
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)

    def mahalanobis(self, z, m, prec_chol):
        out = np.empty((z.shape[0], m.shape[0]))
        for c in range(m.shape[0]):
            y = z @ prec_chol[c] - m[c] @ prec_chol[c]
            out[:, c] = np.einsum("ij,ij->i", y, y)
        return out

    def component_variances(self, raw, k, d):
        return np.diagonal(raw, axis1=1, axis2=2).copy()

    def from_data_covariance(self, data_cov, k):
        return np.broadcast_to(data_cov, (k, *data_cov.shape)).copy()


class Tied(CovarianceStrategy):
    name = "tied"

    def n_parameters(self, k: int, d: int) -> int:
        return d * (d + 1) // 2

    def second_moment(self, z, resp):
        # Σ_k r_ik = 1, so the shared statistic is Σ_i z_i z_iᵀ whatever the responsibilities.
        return z.T @ z

    def raw_covariances(self, n_k, counts, m, s2):
        cov = (s2 - (n_k[:, None] * m).T @ m) / n_k.sum()
        return 0.5 * (cov + cov.T)

    def regularise(self, raw, reg_covar):
        return raw + reg_covar * np.eye(raw.shape[0])

    def precision_cholesky(self, cov):
        return _cholesky_precision(cov)

    def log_det_precision_chol(self, prec_chol, d):
        return np.log(np.diag(prec_chol)).sum()

    def mahalanobis(self, z, m, prec_chol):
        zp = z @ prec_chol
        mp = m @ prec_chol
        out = np.empty((z.shape[0], m.shape[0]))
        for c in range(m.shape[0]):
            y = zp - mp[c]
            out[:, c] = np.einsum("ij,ij->i", y, y)
        return out

    def component_variances(self, raw, k, d):
        return np.broadcast_to(np.diag(raw), (k, d)).copy()

    def from_data_covariance(self, data_cov, k):
        return data_cov.copy()

    def replace_component(self, cov, index, data_cov):
        return cov.copy()  # the shared covariance is not one component's to reset


class Diag(CovarianceStrategy):
    name = "diag"

    def n_parameters(self, k: int, d: int) -> int:
        return k * d

    def second_moment(self, z, resp):
        return resp.T @ (z * z)

    def raw_covariances(self, n_k, counts, m, s2):
        factor = 2.0 - counts / n_k
        return np.maximum(s2 / n_k[:, None] - factor[:, None] * m * m, 0.0)

    def regularise(self, raw, reg_covar):
        return raw + reg_covar

    def precision_cholesky(self, cov):
        return _inverse_sqrt(cov)

    def log_det_precision_chol(self, prec_chol, d):
        return np.log(prec_chol).sum(axis=1)

    def mahalanobis(self, z, m, prec_chol):
        prec = prec_chol**2
        out = (z * z) @ prec.T
        out -= 2.0 * (z @ (m * prec).T)
        out += (m * m * prec).sum(axis=1)
        return np.maximum(out, 0.0)

    def component_variances(self, raw, k, d):
        return raw.copy()

    def from_data_covariance(self, data_cov, k):
        return np.broadcast_to(np.diag(data_cov), (k, data_cov.shape[0])).copy()


class Spherical(CovarianceStrategy):
    name = "spherical"

    def n_parameters(self, k: int, d: int) -> int:
        return k

    def second_moment(self, z, resp):
        return resp.T @ (z * z)

    def raw_covariances(self, n_k, counts, m, s2):
        return Diag().raw_covariances(n_k, counts, m, s2).mean(axis=1)

    def regularise(self, raw, reg_covar):
        return raw + reg_covar

    def precision_cholesky(self, cov):
        return _inverse_sqrt(cov)

    def log_det_precision_chol(self, prec_chol, d):
        return d * np.log(prec_chol)

    def mahalanobis(self, z, m, prec_chol):
        prec = prec_chol**2
        out = np.einsum("ij,ij->i", z, z)[:, None] - 2.0 * (z @ m.T)
        out += (m * m).sum(axis=1)[None, :]
        return np.maximum(out, 0.0) * prec[None, :]

    def component_variances(self, raw, k, d):
        return np.broadcast_to(raw[:, None], (k, d)).copy()

    def from_data_covariance(self, data_cov, k):
        return np.full(k, np.diag(data_cov).mean())


STRATEGIES: dict[str, CovarianceStrategy] = {
    s.name: s for s in (Full(), Tied(), Diag(), Spherical())
}


def strategy(covariance_type: str) -> CovarianceStrategy:
    """The strategy for a covariance type name."""
    try:
        return STRATEGIES[covariance_type]
    except KeyError:
        names = ", ".join(STRATEGIES)
        raise ValueError(
            f"unknown covariance type {covariance_type!r} (use one of {names})"
        ) from None
