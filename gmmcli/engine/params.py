"""The parameters of a Gaussian mixture: weights, means and covariances of one covariance type."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple[int, ...]:
    """Shape of the covariances array: full (k, d, d), tied (d, d), diag (k, d), spherical (k,)."""
    k, d = n_components, n_features
    shapes = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
    if covariance_type not in shapes:
        raise ValueError(f"unknown covariance type {covariance_type!r}")
    return shapes[covariance_type]


@dataclass(frozen=True)
class MixtureParams:
    """weights (k,), means (k, d) and covariances in the shape of ``covariance_shape``."""

    covariance_type: str
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.means.shape[1])

    def full_covariances(self) -> np.ndarray:
        """Every component's covariance as a (k, d, d) array, whatever the type."""
        k, d = self.n_components, self.n_features
        cov = self.covariances
        if self.covariance_type == "full":
            return cov
        if self.covariance_type == "tied":
            return np.broadcast_to(cov, (k, d, d)).copy()
        if self.covariance_type == "diag":
            return np.einsum("kd,de->kde", cov, np.eye(d))
        return cov[:, None, None] * np.eye(d)[None]
