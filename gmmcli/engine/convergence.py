"""When EM stops: by default when the mean log-likelihood per row is within LIMIT_TOL of the
limit EM is heading for (Aitken's estimate of that limit); with an explicit tol, scikit-learn's
rule (the last change per row below tol, however far the limit still is).

Both rules read the mean log-likelihood per row, whose differences do not depend on the data's
units. Pure Python (no numpy), so the command line shows the defaults without the engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# The default rule stops when the estimated distance to the limit is at most this per row:
# the total log-likelihood is then within 1e-6 relative of its limit whenever the mean per
# row is beyond ±0.01 (it is about −1.4 per column for standardized Gaussian data).
LIMIT_TOL = 1e-8
# The most EM iterations by default: enough for slow fits to meet the rule; a fit cut here
# says so (``mixture.NotConverged``).
MAX_ITER = 1000
# Rounding noise of the log-likelihoods the iterations compute, in units of the working
# precision's epsilon times (1 + |mean log-likelihood per row|): the rule asks for no more
# than this (with float32 iterations about 2e-6 relative: their log-likelihoods wander by a
# few of these units).
NOISE_ULPS = 16
# A step within this many float64 epsilons (times the same) is EM standing still, however
# the rows were summed (engines may sum in another order).
STILL_ULPS = 64
EPSILON = {"float64": 2.0**-52, "float32": 2.0**-23}


@dataclass(frozen=True)
class LimitRule:
    """Stop when Aitken's estimate of the limit ℓ∞ of the mean log-likelihood lies within
    ``tol`` of the last value: with steps Δ_t = ℓ_t − ℓ_{t−1} and rate a = Δ_t / Δ_{t−1},
    ℓ∞ ≈ ℓ_t + Δ_t a / (1 − a), so the distance is |Δ_t a / (1 − a)| (exact for a geometric
    sequence, the way EM approaches a fixed point). Two estimates in a row must agree: one
    can be fooled where the rate changes (a big step then a small one look like fast
    convergence). The estimate holds for |a| < 1; while the steps grow (|a| ≥ 1) the limit
    is unknown and EM goes on, unless both steps are rounding noise of the working precision
    (``noise``), which is also the least distance the rule asks for (float32 iterations know
    their log-likelihood to about 1e-6 only). A single step within float64's rounding
    (``still``) is EM standing still: the rule stops at once."""

    tol: float = LIMIT_TOL
    epsilon: float = EPSILON["float64"]

    def noise(self, value: float) -> float:
        """The rounding noise of a mean log-likelihood ``value`` in the working precision."""
        return NOISE_ULPS * self.epsilon * (1.0 + abs(value))

    @staticmethod
    def still(values: Sequence[float]) -> bool:
        """Whether the last step is within float64's rounding: EM stands still."""
        if len(values) < 2:
            return False
        step, value = values[-1] - values[-2], values[-1]
        return abs(step) <= STILL_ULPS * EPSILON["float64"] * (1.0 + abs(value))

    def distance(self, values: Sequence[float]) -> float:
        """The estimated |ℓ∞ − ℓ_t| from the mean log-likelihoods per row ``values`` (one EM
        trajectory, no re-seed among them): 0 when EM stands still, inf when the limit
        cannot be estimated yet."""
        if self.still(values):
            return 0.0
        if len(values) < 2:
            return math.inf
        step = values[-1] - values[-2]
        before = values[-2] - values[-3] if len(values) > 2 else math.inf
        if abs(step) < abs(before) < math.inf:
            rate = step / before
            return abs(step * rate / (1.0 - rate))
        if max(abs(step), abs(before)) <= self.noise(values[-1]):
            return 0.0
        return math.inf

    def done(self, values: Sequence[float]) -> bool:
        """Whether ``values`` (as for ``distance``) stand still (the last step within
        float64's rounding), or are within ``tol`` of their limit by the last two
        estimates."""
        if self.still(values):
            return True
        least = max(self.tol, self.noise(values[-1]))
        return self.distance(values) <= least and self.distance(values[:-1]) <= least

    def distance_in_runs(self, runs: Sequence[Sequence[float]]) -> float:
        """``distance`` under acceleration (``runs`` as for ``done_in_runs``): from the last
        run of plain EM steps, when it is long enough for Aitken's estimate (inf when not:
        an earlier run's estimate is stale, and an extrapolated step is no EM step, so the
        change across one says nothing of the distance left)."""
        if self.still(runs[-1]):
            return 0.0
        return self.distance(runs[-1]) if len(runs[-1]) >= 3 else math.inf

    def done_in_runs(self, runs: Sequence[Sequence[float]]) -> bool:
        """``done`` under acceleration (``squarem``): ``runs`` are the mean log-likelihoods
        of consecutive plain EM steps, one list per stretch between extrapolations (an
        extrapolated step is no EM step, so no estimate spans one). Aitken's estimate comes
        from the last three plain values of a run; two in a row must be within ``tol`` — the
        last run's, and its previous one or else the last of an earlier run."""
        run = runs[-1]
        if self.still(run):
            return True
        if len(run) < 3:
            return False
        if len(run) > 3:
            return self.done(run)
        earlier = next((r for r in reversed(runs[:-1]) if len(r) >= 3), None)
        if earlier is None:
            return False
        least = max(self.tol, self.noise(run[-1]))
        return self.distance(run) <= least and self.distance(earlier) <= least


@dataclass(frozen=True)
class ChangeRule:
    """scikit-learn's rule: stop when the mean log-likelihood per row changed by less than
    ``tol`` in the last iteration."""

    tol: float

    def distance(self, values: Sequence[float]) -> float:
        """The last change (NaN before two values): all this rule knows of the limit."""
        return abs(values[-1] - values[-2]) if len(values) > 1 else math.nan

    def done(self, values: Sequence[float]) -> bool:
        return len(values) > 1 and abs(values[-1] - values[-2]) < self.tol

    def done_in_runs(self, runs: Sequence[Sequence[float]]) -> bool:
        """Under acceleration: the last plain EM step changed by less than ``tol``."""
        return self.done(runs[-1])

    def distance_in_runs(self, runs: Sequence[Sequence[float]]) -> float:
        """Under acceleration: the last plain EM step's change (NaN before one)."""
        full = next((run for run in reversed(runs) if len(run) >= 2), None)
        return math.nan if full is None else self.distance(full)


StoppingRule = LimitRule | ChangeRule


def stopping_rule(tol: float | None, dtype: str = "float64") -> StoppingRule:
    """scikit-learn's rule for a given ``tol``; else the default rule, for iterations
    computed in ``dtype``."""
    if tol is not None:
        return ChangeRule(tol)
    return LimitRule(epsilon=EPSILON[dtype])
