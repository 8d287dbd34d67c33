"""SQUAREM (Varadhan & Roland 2008, step length SqS3) in the space of the sufficient
statistics, with a safeguard that keeps EM's guarantees.

One EM map is s → E-pass(M-step(s)) on the statistics s = (N_k, S1_k, S2_k). From three
statistics of consecutive plain EM steps s0, s1 = F(s0), s2 = F(s1), with r = s1 − s0 and
v = s2 − 2 s1 + s0, the extrapolated statistics are s' = s0 − 2α r + α² v, α = −‖r‖/‖v‖
(α ≤ −1; α = −1 gives s2, the plain step). The statistics are linear sums over rows, so
their extrapolation needs nothing of the covariance model or of the engine, and the M-step
of s' keeps each model's structure. The norm weighs each statistic by the data's scale
(counts per row, S1 by 1/σ_j, S2 by 1/(σ_i σ_j) through the model's features), so the step
length does not depend on the data's units.

Safeguards: statistics whose M-step is not a valid mixture (a count at or below zero, a
collapse, a covariance that cannot be factored, a number that is not finite) step back,
α → (α − 1)/2, without a pass over the rows; parameters whose log-likelihood (the next pass)
is below that of the last plain step step back once and then take the plain step. So the
log-likelihood of the accepted parameters never decreases. The step length is capped, the
cap growing ×4 each time a step reaches it and shrinking ÷4 when a step fails (as in the
SQUAREM R package), so the first cycles stay close to plain EM. Cycles whose plain steps do
not shrink are not extrapolated (``Squarem._contracting``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .covariance import CovarianceStrategy
from .params import MixtureParams
from .stats import SuffStats

# The cap on |α| starts here (plain EM) and grows ×CAP_FACTOR each time a step reaches it.
FIRST_CAP = 1.0
CAP_FACTOR = 4.0
LARGEST_CAP = 1e6
# Step lengths within this of −1 are the plain step.
PLAIN = 1e-3
# Plain steps shrinking faster than this rate (Δ2 < SLOW·Δ1) are left to plain EM: it is
# fast there, and an extrapolation is often rejected (a pass lost). Measured over 0, 0.2,
# 0.4, 0.6 on tests/test_convergence's cases and tests/test_accel's overlapping clusters.
SLOW = 0.2
# Halvings of α → (α − 1)/2 tried for invalid statistics before the plain step.
MAX_HALVINGS = 12


@dataclass
class Proposal:
    """An extrapolation whose parameters the next pass evaluates."""

    alpha: float
    base: SuffStats  # s0
    r: np.ndarray
    v: np.ndarray
    floor: float  # mean log-likelihood of the last plain step's parameters (of s2)
    plain: MixtureParams  # M-step of s2: the plain step to fall back to
    retreated: bool = False


@dataclass
class Squarem:
    """The accelerator's state through one restart (``em.run_restart`` drives it).

    ``runs`` are the mean log-likelihoods of consecutive plain EM steps, one list per
    stretch between accepted extrapolations: the stopping rule reads its estimate of the
    distance to the fixed point from them (``convergence``), since an extrapolated step is
    no EM step."""

    strategy: CovarianceStrategy
    scale: np.ndarray  # (d,) the columns' standard deviations (1 for a constant one)
    n_rows: int
    cap: float = FIRST_CAP
    cycle: list[SuffStats] = field(default_factory=list)
    runs: list[list[float]] = field(default_factory=lambda: [[]])
    pending: Proposal | None = None
    weights: np.ndarray | None = None  # each statistic's weight in the norm

    def reset(self) -> None:
        """Forget the cycle (after a re-seed: a new EM trajectory)."""
        self.cycle = []
        self.runs.append([])
        self.pending = None

    def accept(self, stats: SuffStats, value: float) -> bool:
        """Whether the pass that gave ``stats`` (mean log-likelihood ``value``) is kept: a
        plain step always is; an extrapolated one when its log-likelihood is no lower than
        the plain step's it replaced."""
        proposal = self.pending
        if proposal is not None and not value >= proposal.floor:
            return False
        if proposal is not None:
            self.pending = None
            if -proposal.alpha >= self.cap:
                self.cap = min(self.cap * CAP_FACTOR, LARGEST_CAP)
            self.cycle = []
            self.runs.append([])
        if self.cycle and not np.array_equal(self.cycle[0].origins, stats.origins):
            self.cycle = []  # summed about other points: not comparable (a far component)
        self.cycle.append(stats)
        self.runs[-1].append(value)
        return True

    @property
    def floor(self) -> float:
        """The log-likelihood kept when an extrapolation is rejected."""
        assert self.pending is not None
        return self.pending.floor

    def propose(
        self, step: Callable[[SuffStats], MixtureParams | None], plain: MixtureParams
    ) -> MixtureParams:
        """The parameters for the next pass, after the plain step ``plain`` (the M-step of
        the last statistics): an extrapolation once three plain steps are in the cycle,
        else ``plain``. ``step`` is the M-step, None for statistics that give no valid
        mixture."""
        if len(self.cycle) < 3:
            return plain
        if not self._contracting():
            self.cycle = self.cycle[-2:]
            return plain
        s0, s1, s2 = self.cycle[-3:]
        r = self._stack(s1) - self._stack(s0)
        v = self._stack(s2) - 2.0 * self._stack(s1) + self._stack(s0)
        w = self._weights()
        norm_v = float(np.linalg.norm(v * w))
        if not norm_v > 0.0 or not np.all(np.isfinite(v)):
            self.cycle = self.cycle[-2:]
            return plain
        alpha = -float(np.linalg.norm(r * w)) / norm_v
        alpha = max(min(alpha, -1.0), -self.cap)
        if -alpha >= self.cap and self.cap < CAP_FACTOR * FIRST_CAP and alpha > -1.0 - PLAIN:
            self.cap *= CAP_FACTOR  # the first cycles: plain steps reached the cap
        floor = self.runs[-1][-1]
        proposal = Proposal(alpha, s0, r, v, floor, plain)
        found = self._valid(proposal, step)
        if found is None:
            self.cycle = self.cycle[-2:]  # the plain step continues this cycle's run
            return plain
        self.pending = proposal
        return found

    def _contracting(self) -> bool:
        """Whether the last two plain steps shrink, slowly (SLOW·Δ1 ≤ Δ2 < Δ1 in
        log-likelihood): EM approaches a fixed point slowly, where the extrapolation is
        meant to act. Growing steps
        (EM leaving a saddle's plateau, or speeding up between basins) are left to plain
        EM: extrapolating there jumped, in a measured case (bench_accel's overlapping
        clusters, d = 8, k = 6), to a worse fixed point than plain EM's from the same
        start, and took twice plain EM's passes. (Also gating on Aitken's distance left, at
        1e-3 or 1e-4 per row, only cost passes.)"""
        run = self.runs[-1]
        if len(run) < 3:
            return True  # the cycle spans an extrapolation only if origins moved: see accept
        first, second = run[-2] - run[-3], run[-1] - run[-2]
        return 0.0 < second < first and second >= SLOW * first

    def retreat(self, step: Callable[[SuffStats], MixtureParams | None]) -> MixtureParams:
        """After a rejected extrapolation: one step back (α → (α − 1)/2), then the plain
        step. The cap shrinks."""
        proposal = self.pending
        assert proposal is not None
        self.cap = max(FIRST_CAP, self.cap / CAP_FACTOR)
        if not proposal.retreated:
            proposal.retreated = True
            proposal.alpha = (proposal.alpha - 1.0) / 2.0
            found = self._valid(proposal, step)
            if found is not None:
                return found
        self.pending = None
        self.cycle = self.cycle[-2:]
        return proposal.plain

    def _valid(
        self, proposal: Proposal, step: Callable[[SuffStats], MixtureParams | None]
    ) -> MixtureParams | None:
        """The M-step of the proposal's statistics, stepping back until they give a valid
        mixture; None when only the plain step is left."""
        for _ in range(MAX_HALVINGS):
            if proposal.alpha > -1.0 - PLAIN:
                return None
            a = proposal.alpha
            flat = self._stack(proposal.base) - 2.0 * a * proposal.r + a * a * proposal.v
            stats = self._unstack(flat, proposal.base)
            params = step(stats) if np.all(stats.counts > 0) else None
            if params is not None:
                return params
            proposal.alpha = (a - 1.0) / 2.0
        return None

    # -- the statistics as one vector ------------------------------------------------------
    def _stack(self, stats: SuffStats) -> np.ndarray:
        """The statistics as one vector; a noise component's count N_0 last."""
        noise = [] if stats.noise is None else [[stats.noise]]
        return np.concatenate(
            [stats.counts.ravel(), stats.first.ravel(), stats.second.ravel(), *noise]
        )

    def _unstack(self, flat: np.ndarray, like: SuffStats) -> SuffStats:
        k = like.counts.size
        f = like.first.size
        end = k + f + like.second.size
        return dataclasses.replace(
            like,
            counts=flat[:k].reshape(like.counts.shape),
            first=flat[k : k + f].reshape(like.first.shape),
            second=flat[k + f : end].reshape(like.second.shape),
            noise=None if like.noise is None else float(flat[end]),
            log_likelihood=float("nan"),
            spread=None,
        )

    def _weights(self) -> np.ndarray:
        """Each statistic's weight in the norm: per row, and in the data's scale."""
        if self.weights is None:
            s = self.cycle[0]
            inverse = 1.0 / self.scale
            first = np.broadcast_to(inverse, s.first.shape)
            second = np.broadcast_to(
                self.strategy.moments_of(np.outer(inverse, inverse)), s.second.shape
            )
            noise = [] if s.noise is None else [np.ones(1)]
            parts = [np.ones(s.counts.size), first.ravel(), second.ravel(), *noise]
            self.weights = np.concatenate(parts) / self.n_rows
        return self.weights
