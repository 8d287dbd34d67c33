"""The parameters of a Gaussian mixture: weights, means and covariances of one covariance type."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .covariance import get_strategy


class NumericalRangeError(ValueError):
    """The data or parameters lie outside what the working precision can represent (e.g. the
    squares of float32 values overflow). The caller names the input at fault, and the
    column when ``column`` (0-based) is given."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.column = column


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple[int, ...]:
    """Shape of the covariances array (``CovarianceStrategy.shape``), e.g. full (k, d, d)."""
    return get_strategy(covariance_type).shape(n_components, n_features)


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
        strategy = get_strategy(self.covariance_type)
        return strategy.to_full(self.covariances, self.n_components, self.n_features)

    def in_data_units(self) -> MixtureParams:
        """The same mixture over the original columns: for y = (x − c)/s, x = c + s·y is again a
        Gaussian mixture with means c + s·μ and covariances D Σ D, D = diag(s) — densities
        then include the Jacobian −Σ log s by themselves. The covariance model may change
        (``CovarianceStrategy.rescaled``: spherical becomes diag, the scales differ by column)."""
        if self.scale is None or self.center is None:
            return self
        s, c = self.scale, self.center
        means = self.means * s + c
        kind, cov = get_strategy(self.covariance_type).rescaled(self.covariances, s)
        return MixtureParams(kind, self.weights, means, cov)
