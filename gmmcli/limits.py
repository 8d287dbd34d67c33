"""The range of numbers gmm works in, shared by the table reader and the model file.

Squares and products of the data must stay finite in float64 (max ~1.8e308), with room for
sums; the model's parameters must stay where such data can put them.
"""

from __future__ import annotations

# The largest |x| read from a table, and the largest |mean| or |centre| in a model file.
MAX_MAGNITUDE = 1e150
# The largest variance in a model file: data within ±MAX_MAGNITUDE have at most this variance.
MAX_VARIANCE = 1e300  # MAX_MAGNITUDE squared, written out (1e150**2 rounds above 1e300)
# Model parameters computed from data at the edge of the range may pass it by rounding.
ROUNDING_SLACK = 1 + 1e-6
# With --dtype float32, |x − column mean| must stay below this, so that its square (and a sum
# of a few of them) stays below float32's largest number, ~3.4e38.
FLOAT32_MAX_DEVIATION = 1e18
# ... and a column that varies must vary by at least this (standard deviation): the inverse of
# its variance, floored at --reg-covar (1e-6) times it, must stay below float32's largest too.
FLOAT32_MIN_SPREAD = 1e-15
# A column whose standard deviation is at most this times |its mean| is constant: what is
# left is the rounding noise of the mean (0.09 three times has a mean 1 ulp off, and a
# standard deviation of 1.4e-17), not a spread of the data.
MEAN_NOISE = 16 * 2.220446049250313e-16  # 16 float64 eps
