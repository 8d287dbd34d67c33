"""The parameters of a Gaussian mixture: weights, means and covariances of one covariance type."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


class NumericalRangeError(ValueError):
    """The data or parameters lie outside what the working precision can represent (e.g. the
    squares of float32 values overflow). The caller names the input at fault, and the
    column when ``column`` (0-based) is given."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.column = column


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
    # With --standardize the parameters describe (x − center) / scale; None otherwise.
    center: np.ndarray | None = None
    scale: np.ndarray | None = None

    @property
    def standardized(self) -> bool:
        return self.scale is not None

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

    def in_data_units(self) -> MixtureParams:
        """The same mixture over the original columns: for y = (x − c)/s, x = c + s·y is again a
        Gaussian mixture with means c + s·μ and covariances D Σ D, D = diag(s) — densities
        then include the Jacobian −Σ log s by themselves. Spherical becomes diag (the scales
        differ by column); every other type keeps its type."""
        if self.scale is None or self.center is None:
            return self
        s, c = self.scale, self.center
        means = self.means * s + c
        kind, cov = self.covariance_type, self.covariances
        if kind == "full":
            cov = cov * s[None, :, None] * s[None, None, :]
        elif kind == "tied":
            cov = cov * s[:, None] * s[None, :]
        elif kind == "diag":
            cov = cov * s**2
        else:
            kind, cov = "diag", cov[:, None] * s[None, :] ** 2
        return MixtureParams(kind, self.weights, means, cov)
