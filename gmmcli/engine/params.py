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
class Noise:
    """A noise component (mclust's idea): the uniform density 1/V over the box
    [lower, upper] (d,), V = Π (upper − lower), with mixing weight ``weight`` beside the
    Gaussians (whose weights then sum to 1 − weight). A row with missing cells has the
    uniform density over its observed columns' box, 1 / Π_observed (upper_j − lower_j)."""

    weight: float
    lower: np.ndarray
    upper: np.ndarray
    # V given by the user (not a parameter); else the data's box, estimated from the data,
    # which mclust counts as one more free parameter (``mixture.n_parameters``)
    volume_given: bool = False

    @property
    def log_ranges(self) -> np.ndarray:
        """(d,) log (upper − lower): the log volume is their sum."""
        return np.log(self.upper - self.lower)

    @property
    def log_volume(self) -> float:
        return float(self.log_ranges.sum())

    @property
    def volume(self) -> float:
        return float(np.exp(self.log_volume))

    def with_weight(self, weight: float) -> Noise:
        return Noise(float(weight), self.lower, self.upper, self.volume_given)

    def rescaled(self, center: np.ndarray, scale: np.ndarray) -> Noise:
        """The same noise over x = center + scale·y (the box maps to a box)."""
        lower, upper = center + scale * self.lower, center + scale * self.upper
        return Noise(self.weight, lower, upper, self.volume_given)


@dataclass(frozen=True)
class MixtureParams:
    """weights (k,), means (k, d) and covariances in the shape of ``covariance_shape``; with
    a noise component (``noise``) the Gaussians' weights sum to 1 − noise.weight."""

    covariance_type: str
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    # With --standardize the parameters describe (x − center) / scale; None otherwise.
    center: np.ndarray | None = None
    scale: np.ndarray | None = None
    noise: Noise | None = None

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
        noise = None if self.noise is None else self.noise.rescaled(c, s)
        return MixtureParams(kind, self.weights, means, cov, noise=noise)
