"""The noise component's box and its start (mclust's idea): a uniform density 1/V over the
data's bounding box beside the Gaussians, its weight fitted by EM (the kernel, ``stats``,
carries it as one more term of each row's log-sum and one more count).

V is the product of the columns' ranges (mclust's ``hypvol`` in its simplest form), or a
volume given by the user: the data's box then grows or shrinks about its centre by the same
factor in every column until its volume is V (so a row with missing cells, scored over its
observed columns' box, and ``sample``, which draws from the box, stay defined).
"""

from __future__ import annotations

import numpy as np

from .init import DataSummary
from .params import MixtureParams, Noise, NumericalRangeError

# The start: the noise holds this weight, the Gaussians share the rest in their proportions.
START_WEIGHT = 0.1


def noise_box(summary: DataSummary, volume: float | None = None) -> Noise:
    """The noise component over the data's box (or that box scaled to ``volume``), with the
    starting weight. A constant column has no range: an error naming it."""
    assert summary.low is not None and summary.high is not None, "a summary with the box"
    low, high = summary.low, summary.high
    ranges = high - low
    flat = np.flatnonzero(~(ranges > 0) | ~np.isfinite(ranges))
    if flat.size:
        raise NumericalRangeError(
            "is constant, so the data's box has no volume for the noise component",
            column=int(flat[0]),
        )
    if volume is None:
        return Noise(START_WEIGHT, low.copy(), high.copy())
    d = ranges.shape[0]
    factor = np.exp((np.log(volume) - np.log(ranges).sum()) / d)
    middle, half = 0.5 * (low + high), 0.5 * ranges * factor
    return Noise(START_WEIGHT, middle - half, middle + half, volume_given=True)


def with_noise(params: MixtureParams, noise: Noise) -> MixtureParams:
    """Starting parameters with a noise component: the Gaussians' weights scaled to sum to
    1 − noise.weight, everything else as it was."""
    weights = params.weights / params.weights.sum() * (1.0 - noise.weight)
    return MixtureParams(
        params.covariance_type,
        weights,
        params.means,
        params.covariances,
        params.center,
        params.scale,
        noise,
    )
