"""The EM loop: restarts, convergence, collapse detection and re-seeding, identical
components found at the end of a restart, progress events.

One iteration is one pass of the kernel (E-step of the current parameters, reduced to
sufficient statistics) followed by the M-step, exactly as scikit-learn's loop: the
log-likelihood recorded for iteration t is that of the parameters entering it, and the fit
stops when the stopping rule (``convergence``: by default within 1e-8 per row of the limit,
or scikit-learn's tol on the change per row) says so, or after max_iter M-steps. A last pass
gives the log-likelihood of the parameters returned. With acceleration (the default) the
M-step of every third pass may take extrapolated statistics (``squarem``); an iteration is
still one pass, and the rule reads only the plain steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..limits import MEAN_NOISE
from .constraints import ParameterError, check_all
from .convergence import MAX_ITER, StoppingRule, stopping_rule
from .covariance import CovarianceStrategy, cholesky_precision, get_strategy
from .init import INITIALISERS, DataSummary, Start, StartCache, restart_plan, starting_point
from .noise import noise_box, with_noise
from .params import MixtureParams, NumericalRangeError
from .sources import ArraySource, Source
from .squarem import Squarem
from .stats import (
    Model,
    SuffStats,
    default_chunk_size,
    default_threads,
    mstep,
    prepare,
    recentred,
    single_threaded_blas,
)

# A component is collapsed when its effective count is below CovarianceStrategy.min_rows(d)
# ... or when a column's variance in it is below min(reg_covar, RELATIVE_FLOOR · data variance).
RELATIVE_FLOOR = 1e-3
# Re-seeding stops this many iterations before max_iter, so a re-seeded fit can still settle.
RESEED_MARGIN = 10
# Two components are duplicates when their means differ by at most this many of the data's
# standard deviations in every column, and their covariances by at most this much relative
# to the data's (σ_i σ_j for entry (i, j)): EM cannot tell them apart again.
DUPLICATE_TOL = 1e-3


@dataclass(frozen=True)
class Collapse:
    """A component that collapsed: onto too few rows, or with no spread in a column."""

    component: int
    column: int | None
    reason: str  # "few-points", "zero-variance", "subspace", "singular"
    value: float  # the effective count or the variance that tripped the check (subspace:
    # the smallest eigenvalue, in the regularisation's units, see CollapseCheck)

    def describe(self, names: list[str]) -> str:
        """One line for people, e.g. "component 2 has no spread in column 'x' (variance 0)"."""
        who = f"component {self.component}"
        if self.reason == "few-points" and self.value < 1.5:
            return f"{who} holds only {self.value:.3g} effective row (collapsed onto a point)"
        if self.reason == "few-points":
            return (
                f"{who} holds only {self.value:.3g} effective rows, too few to estimate "
                "its covariance"
            )
        if self.reason == "zero-variance" and self.column is not None:
            return (
                f"{who} collapsed onto a single value in column '{names[self.column]}' "
                f"(variance {self.value:.3g})"
            )
        if self.reason == "zero-variance":
            return f"{who} collapsed onto a point (variance {self.value:.3g})"
        if self.reason == "subspace":
            return f"{who} collapsed onto a lower-dimensional subspace (a combination of columns)"
        return f"{who} has a singular covariance (regularised with extra jitter)"


@dataclass(frozen=True)
class Duplicate:
    """A component with the same mean and covariance as an earlier one (to DUPLICATE_TOL):
    the two give every row the same density, so the mixture is one with a component fewer
    (their weights summed), and EM, which moves both alike, never separates them."""

    component: int
    same_as: int  # the earlier component it copies (itself no duplicate)
    distance: float  # the largest difference, in the data's standard deviations (σ_j; σ_iσ_j
    # for covariance entries), at most DUPLICATE_TOL


@dataclass(frozen=True)
class IterationEvent:
    restart: int
    iteration: int  # 0 = the starting parameters
    mean_log_likelihood: float
    change: float  # NaN for the first iteration of a restart and right after a re-seed
    seconds: float


@dataclass(frozen=True)
class PassEvent:
    """Progress within a long pass over the rows (sources that read as they go)."""

    restart: int
    iteration: int  # the iteration whose pass this is (1 = the first M-step's)
    rows_done: int
    rows_total: int


@dataclass(frozen=True)
class ReseedEvent:
    restart: int
    iteration: int
    collapse: Collapse
    new_mean: np.ndarray


@dataclass(frozen=True)
class RestartEvent:
    restart: int
    n_iter: int
    converged: bool
    mean_log_likelihood: float
    collapsed: tuple[Collapse, ...]
    duplicates: tuple[Duplicate, ...] = ()
    same_start_as: int | None = None  # not run: it started where this earlier restart did


Event = IterationEvent | ReseedEvent | RestartEvent | PassEvent


@dataclass
class RestartResult:
    restart: int
    params: MixtureParams
    n_iter: int
    converged: bool
    log_likelihood: float  # total, of the returned parameters
    history: list[float]  # mean log-likelihood per row, entry t = after t M-steps
    reseeds: list[ReseedEvent] = field(default_factory=list)
    collapsed: tuple[Collapse, ...] = ()
    duplicates: tuple[Duplicate, ...] = ()  # components identical to another at the end
    # not run: it started from the same partition of the rows as this earlier restart, so it
    # is that restart's result (EM from one partition is one run, whatever its numbering)
    same_start_as: int | None = None
    # under acceleration, the mean log-likelihoods of the plain EM steps, a list per run
    # between extrapolations (``Squarem.runs``): what the stopping rule read; None: plain EM,
    # whose every step is in ``history``
    plain_runs: tuple[tuple[float, ...], ...] | None = None

    def distance_left(self, rule: StoppingRule) -> tuple[float, float]:
        """The last plain EM step's change and ``rule``'s estimate of the distance left to
        the limit (per row), from the plain steps only."""
        if self.plain_runs is None:
            runs: Sequence[Sequence[float]] = [self.history]
            distance = rule.distance(self.history)
        else:
            runs = self.plain_runs
            distance = rule.distance_in_runs(runs) if runs else math.inf
        last = next((run for run in reversed(runs) if len(run) >= 2), None)
        change = abs(last[-1] - last[-2]) if last is not None else math.nan
        return change, distance

    @property
    def degenerate(self) -> bool:
        """A collapsed component, or two identical ones: not a fit of k components."""
        return bool(self.collapsed or self.duplicates)

    def repeated_as(self, restart: int) -> RestartResult:
        """This result as restart ``restart``, which started from the same partition."""
        reseeds = [dataclasses.replace(e, restart=restart) for e in self.reseeds]
        return dataclasses.replace(
            self, restart=restart, reseeds=reseeds, same_start_as=self.restart
        )


@dataclass
class FitResult:
    best: RestartResult
    restarts: list[RestartResult]
    n_samples: int
    shift: np.ndarray
    flat_columns: list[int]  # columns constant in the data (``constant_columns``)
    weight_total: float | None = None  # Σ w of weighted rows (None: unweighted)

    @property
    def n_effective(self) -> float:
        """The n of BIC and of the mean log-likelihood: Σ w with weights, else the rows."""
        return self.n_samples if self.weight_total is None else self.weight_total

    @property
    def all_collapsed(self) -> bool:
        return all(r.collapsed for r in self.restarts)

    @property
    def all_duplicated(self) -> bool:
        """Every restart ended with identical components."""
        return all(r.duplicates for r in self.restarts)

    @property
    def all_degenerate(self) -> bool:
        return all(r.degenerate for r in self.restarts)


@dataclass(frozen=True)
class EMOptions:
    n_components: int
    covariance_type: str = "full"
    # None: stop within convergence.LIMIT_TOL per row of the limit; a number: scikit-learn's
    # rule (the mean log-likelihood per row changed by less than tol)
    tol: float | None = None
    reg_covar: float = 1e-6
    # "data": reg_covar is relative to each column's variance in the data (so a fit does not
    # change when a column is rescaled); "absolute": added as it is (as scikit-learn does)
    reg_scale: str = "data"
    max_iter: int = MAX_ITER
    n_init: int = 1
    init: str = "kmeans++"
    seed: int = 0
    chunk_size: int | None = None
    threads: int | None = None
    dtype: str = "float64"
    # a noise component (``engine.noise``) over the data's box, or a box of this volume
    noise: bool = False
    noise_volume: float | None = None
    # SQUAREM on the statistics (``squarem``); False: plain EM, one M-step per pass
    accelerate: bool = True

    def validate(self) -> None:
        """Raise ValueError (``constraints.ParameterError``) for a value outside its
        constraint, an unknown covariance model or an unknown initialiser."""
        get_strategy(self.covariance_type)
        # the fields as they are (``dataclasses.asdict`` deep-copies: 0.1 ms a fit)
        check_all({option.name: getattr(self, option.name) for option in dataclasses.fields(self)})
        if self.init not in INITIALISERS:
            raise ParameterError("init", self.init, f"use one of {', '.join(INITIALISERS)}")


# Below this a column's variance (times reg_covar, then inverted) leaves float64's range.
MIN_VARIANCE = 1e-270


def constant_columns(summary: DataSummary) -> np.ndarray:
    """(d,) bool: the columns that are constant in the data, a property of the data alone
    (not of reg_covar): one value in every row, or a variance no larger than the rounding
    noise of the mean, (16 eps |mean|)². (One value repeated can leave more noise than that:
    3.7 in 300 rows has a mean 25 eps off, so a variance of 4e-28.)"""
    noise = summary.variances <= (MEAN_NOISE * np.abs(summary.shift)) ** 2
    return summary.single_valued | noise


def regularisation(options: EMOptions, summary: DataSummary) -> np.ndarray:
    """(d,) what the M-step adds to each column's variance: reg_covar times the column's
    variance in the data (a constant column: times 1), or reg_covar as it is.

    Relative to the data, the same data in other units (× 1e-6 or × 1e6) gets the same fit,
    and a covariance stays well conditioned (its smallest eigenvalue at least reg_covar
    times the data's scale), whatever the units.
    """
    variances = summary.variances
    if options.reg_scale == "absolute":
        return np.full(variances.shape[0], float(options.reg_covar))
    constant = constant_columns(summary)
    tiny = np.flatnonzero(~constant & (variances < MIN_VARIANCE))
    if tiny.size:
        j = int(tiny[0])
        raise NumericalRangeError(
            f"varies too little for float64 (standard deviation {np.sqrt(variances[j]):.3g})",
            column=j,
        )
    return options.reg_covar * np.where(constant, 1.0, variances)


@dataclass(frozen=True)
class CollapseCheck:
    """The collapse checks of one restart's M-steps, with what they compare against (the
    floors, the limit, which checks apply) worked out once: EM runs them after every M-step
    and SQUAREM on every extrapolation, and on small tables their fixed cost was ~6 % of
    ``select``'s time.

    A component collapsed when it has too few effective rows, a variance pinned at the floor
    or a direction with no spread. A column whose variance in the whole data is itself at
    the floor (a constant column) is a property of the data, not of a component, and is not
    counted here.
    """

    strategy: CovarianceStrategy
    floor: np.ndarray  # (d,) each column's variance floor
    min_rows: int
    # The subspace check (a direction with no spread) works in the regularisation's units,
    # each column divided by the square root of what the M-step adds to its variance
    # (``regularisation``), where that addition is the identity whatever the columns'
    # scales (without one, reg_covar 0, in the data's units). It applies to a full or tied
    # model on data that itself spreads in every direction beyond the regularisation there
    # (collinear columns are the data's property, not a collapse); a component's
    # unregularised covariance in those units, less ``limit`` · I, must then be positive
    # definite.
    subspace: bool
    limit: float
    unit: np.ndarray  # (d, d) outer(1/√reg, 1/√reg), or (0, 0) where the check is off
    # (d, d) limit · I in those units, as a matrix in the data's units (limit · diag(reg)):
    # Σ less it is positive definite exactly when Σ · unit − limit · I is
    limit_eye: np.ndarray

    @classmethod
    def of(
        cls, strategy: CovarianceStrategy, summary: DataSummary, reg_covar: float | np.ndarray
    ) -> CollapseCheck:
        d = summary.shift.shape[0]
        floor = np.minimum(reg_covar, RELATIVE_FLOOR * summary.variances)
        none = np.zeros((0, 0))
        if strategy.is_diagonal or summary.covariance is None:
            return cls(strategy, floor, strategy.min_rows(d), False, 0.0, none, none)
        reg = np.broadcast_to(np.asarray(reg_covar, dtype=float), (d,))
        # without a regularisation (reg_covar 0) in a column, the data's own units
        inverse = 1.0 / np.sqrt(reg) if (reg > 0).all() else np.ones(d)
        unit = np.outer(inverse, inverse)
        ridge = reg * inverse**2  # what the M-step adds, in these units: 1, or reg_covar
        spread = float(np.linalg.eigvalsh(summary.covariance * unit)[0])
        if not spread > ridge.max():
            return cls(strategy, floor, strategy.min_rows(d), False, 0.0, none, none)
        limit = min(float(ridge.min()), RELATIVE_FLOOR * spread)
        limit_eye = np.diag(limit / inverse**2)
        return cls(strategy, floor, strategy.min_rows(d), True, limit, unit, limit_eye)

    def __call__(self, step_counts: np.ndarray, raw: np.ndarray) -> list[Collapse]:
        strategy = self.strategy
        k = step_counts.shape[0]
        variances = strategy.component_variances(raw, k, self.floor.shape[0])
        few = step_counts < self.min_rows
        below = (variances < self.floor).any(axis=1)  # where pinned_variance may find one
        found: list[Collapse] = []
        for c in map(int, np.flatnonzero(few | below)):  # mostly none
            if few[c]:
                found.append(Collapse(c, None, "few-points", float(step_counts[c])))
                continue
            pinned = strategy.pinned_variance(variances[c], self.floor)
            if pinned is not None:
                found.append(Collapse(c, pinned[0], "zero-variance", pinned[1]))
                if strategy.shared:
                    return found
        if not self.subspace:
            return found
        # One stacked call for every component left (the shared matrix once): a Cholesky
        # factorisation of Σ − limit_eye, which succeeds when no eigenvalue in the
        # regularisation's units lies below the limit (a third of the eigenvalues' cost),
        # and those eigenvalues only when it fails.
        collapsed = {collapse.component for collapse in found}
        spread = [c for c in range(k) if c not in collapsed]
        if not spread:
            return found
        if strategy.shared:
            spread = spread[:1]
        matrices = strategy.matrices(raw)
        if found and not strategy.shared:
            matrices = matrices[spread]
        try:
            np.linalg.cholesky(matrices - self.limit_eye)
            return found
        except np.linalg.LinAlgError:
            pass
        smallest = np.linalg.eigvalsh(matrices * self.unit)[:, 0]
        found += [
            Collapse(c, None, "subspace", float(value))
            for c, value in zip(spread, smallest, strict=True)
            if value < self.limit
        ]
        found.sort(key=lambda collapse: collapse.component)
        return found


def find_duplicates(
    params: MixtureParams, strategy: CovarianceStrategy, summary: DataSummary
) -> tuple[Duplicate, ...]:
    """Components whose mean and covariance equal an earlier component's to DUPLICATE_TOL,
    measured in the data's scale: |μ_aj − μ_bj| / σ_j and |Σ_a,ij − Σ_b,ij| / (σ_i σ_j), σ
    the columns' standard deviations (1 for a constant column). Weights are not compared:
    equal means and covariances make the same mixture whatever the weights. O(k² × the
    parameters of one component)."""
    k = params.n_components
    scale = np.sqrt(summary.variances)
    scale = np.where(scale > 0, scale, 1.0)
    means = params.means / scale
    cov = None
    if not strategy.shared:  # a shared covariance is the same for every component
        cov = strategy.rescaled(params.covariances, 1.0 / scale)[1].reshape(k, -1)
    found: list[Duplicate] = []
    originals: list[int] = [0]
    for b in range(1, k):
        earlier = np.array(originals)
        distance = np.abs(means[earlier] - means[b]).max(axis=1)
        if cov is not None:
            distance = np.maximum(distance, np.abs(cov[earlier] - cov[b]).max(axis=1))
        close = np.flatnonzero(distance <= DUPLICATE_TOL)
        if close.size:
            a = int(earlier[close[0]])
            found.append(Duplicate(b, a, float(distance[close[0]])))
        else:
            originals.append(b)
    return tuple(found)


def _positive_definite(block: np.ndarray) -> bool:
    """Whether the E-step can factor this covariance: positive eigenvalues are not enough
    when the condition number passes 1/eps (Cholesky then fails), so factor it here too."""
    if block.ndim == 2:
        try:
            factor = cholesky_precision(block)
        except np.linalg.LinAlgError:
            return False
        return bool(np.all(np.isfinite(factor)) and np.all(np.diag(factor) > 0))
    return bool(np.all(block > 0))


def _prepare_safely(
    params: MixtureParams,
    strategy: CovarianceStrategy,
    shift: np.ndarray,
    reg_covar: float,
    known: dict[int, tuple[MixtureParams, Model]] | None = None,
) -> tuple[Model, MixtureParams, list[int]]:
    """prepare(), adding growing jitter to any covariance that is not positive definite
    (possible only with reg_covar = 0). Returns the model, the parameters actually used and
    the components that needed jitter. ``known``: parameters prepared already (by
    ``_valid_step``), by id, taken from it rather than prepared again."""
    if known:
        held = known.pop(id(params), None)
        known.clear()
        if held is not None and held[0] is params:
            return held[1], params, []
    try:
        return prepare(params, strategy, shift), params, []
    except np.linalg.LinAlgError:
        pass
    cov = params.covariances.copy()
    tied = strategy.shared
    fixed: list[int] = []
    for c in [0] if tied else range(params.n_components):
        block = cov if tied else cov[c]
        eye = np.eye(block.shape[0]) if block.ndim == 2 else 1.0
        jitter = max(float(np.max(reg_covar)), 1e-10) * max(1.0, float(np.max(np.abs(block))))
        if not np.all(np.isfinite(block)):
            raise NumericalRangeError(
                f"component {c}'s covariance is not finite: the data's spread overflows the "
                "working precision"
            )
        if _positive_definite(block):
            continue
        for _ in range(40):  # jitter grows ×10 a step: from 1e-10 past any finite scale
            if _positive_definite(block):
                break
            block = block + jitter * eye
            jitter *= 10.0
        else:
            raise NumericalRangeError(
                f"component {c}'s covariance cannot be made positive definite"
            )
        if tied:
            cov = block
        else:
            cov[c] = block
        fixed.append(c)
    new = MixtureParams(
        params.covariance_type, params.weights, params.means, cov, noise=params.noise
    )
    return prepare(new, strategy, shift), new, fixed


def _reseed(
    params: MixtureParams,
    collapses: list[Collapse],
    stats: SuffStats,
    strategy: CovarianceStrategy,
    summary: DataSummary,
    reg_covar: float,
) -> tuple[MixtureParams, list[tuple[Collapse, np.ndarray]]]:
    """Move each collapsed component to a distinct worst-explained row, with the data's
    covariance and weight 1/k (weights renormalised, to 1 − π_0 beside a noise component);
    the (collapse, new mean) of each moved.

    Never two components to one point (they would stay identical for ever): when the worst
    rows hold fewer distinct points than there are collapses, the others stay where they are
    (still collapsed, a later iteration may move them).
    """
    k = params.n_components
    means = params.means.copy()
    weights = params.weights.copy()
    cov = params.covariances
    data_cov = summary.data_covariance(reg_covar)
    rows = list(stats.worst_points)
    distinct: list[np.ndarray] = []
    for row in rows:
        if not any(np.array_equal(row, seen) for seen in distinct):
            distinct.append(row)
    moved = []
    for collapse, row in zip(collapses, distinct, strict=False):
        c = collapse.component
        means[c] = row
        weights[c] = 1.0 / k
        cov = strategy.replace_component(cov, c, data_cov)
        moved.append((collapse, row.copy()))
    if params.noise is None:
        weights /= weights.sum()
    else:
        weights *= (1.0 - params.noise.weight) / weights.sum()
    return MixtureParams(params.covariance_type, weights, means, cov, noise=params.noise), moved


def _accelerator(
    options: EMOptions, strategy: CovarianceStrategy, summary: DataSummary, n: int
) -> Squarem | None:
    """SQUAREM's state for one restart, or None for plain EM."""
    if not options.accelerate:
        return None
    scale = np.sqrt(summary.variances)
    return Squarem(strategy, np.where(scale > 0, scale, 1.0), n)


def _valid_step(
    strategy: CovarianceStrategy,
    summary: DataSummary,
    reg_covar: float | np.ndarray,
    current: MixtureParams,
    prepared: dict[int, tuple[MixtureParams, Model]],
    check: CollapseCheck,
) -> Callable[[SuffStats], MixtureParams | None]:
    """The M-step of extrapolated statistics (``squarem``), None when they give no valid
    mixture: numbers that are not finite, a collapsed component (as ``check``
    finds one), a noise weight outside (0, 1), or a covariance the E-step cannot factor.
    The E-step's model of valid parameters goes into ``prepared`` (``_prepare_safely``)."""

    def step(stats: SuffStats) -> MixtureParams | None:
        with np.errstate(all="ignore"):
            try:
                result = mstep(stats, strategy, reg_covar, current.covariances, current.noise)
                p = result.params
                parts = (p.weights, p.means, p.covariances, result.raw_covariances)
                if not all(np.all(np.isfinite(a)) for a in parts):
                    return None
                if p.noise is not None and not 0 < p.noise.weight < 1:
                    return None
                if check(stats.counts, result.raw_covariances):
                    return None
                prepared[id(p)] = (p, prepare(p, strategy, summary.shift))
            except (np.linalg.LinAlgError, ValueError, FloatingPointError):
                return None
        return p

    return step


# emEM's short runs (``fit_source``): scikit-learn's rule at this change of the mean
# log-likelihood per row; measured on the select grids of iris, faithful and diabetes.
SCREEN_TOL = 1e-5
# A search's first look at a cell (``fit_source(polish=False)``, ``select``'s first stage):
# the same rule, stopped sooner; the cells it hands on are first carried on to SCREEN_TOL.
FIRST_STAGE_TOL = 1e-4


def run_restart(
    source: Source,
    start: MixtureParams,
    options: EMOptions,
    summary: DataSummary,
    restart: int,
    n_rows: int,
    on_event: Callable[[Event], None],
    earlier: RestartResult | None = None,
) -> RestartResult:
    """EM from one starting point until the stopping rule is met or max_iter M-steps.

    ``source`` holds the rows, bound to the fit's shift (``Source.bind``); ``n_rows`` is
    their number. ``earlier``: the run this one continues from its end (``start`` is its
    parameters), so iterations, history and re-seeds go on from it. With weighted rows the
    log-likelihood per row the stopping rule sees is per unit of weight (Σ w log p / Σ w).
    """
    strategy = get_strategy(options.covariance_type)
    n = n_rows if summary.weight_total is None else summary.weight_total
    k = start.n_components
    budget = max(3, 2 * k)
    params = start
    model, params, _ = _prepare_safely(params, strategy, summary.shift, options.reg_covar)
    done_before = 0 if earlier is None else earlier.n_iter
    # the earlier run's last value is the log-likelihood of ``start``: this run's first pass
    history: list[float] = [] if earlier is None else list(earlier.history[:-1])
    reseeds: list[ReseedEvent] = [] if earlier is None else list(earlier.reseeds)
    rule = stopping_rule(options.tol, options.dtype)
    accel = _accelerator(options, strategy, summary, n)
    trail: list[float] = []  # the mean log-likelihoods since the start or the last re-seed
    prepared: dict[int, tuple[MixtureParams, Model]] = {}  # by SQUAREM's checks
    check = CollapseCheck.of(strategy, summary, options.reg_covar)
    previous = np.nan
    converged = False
    n_iter = done_before
    collapses: list[Collapse] = []
    for iteration in range(done_before + 1, options.max_iter + 1):
        t0 = time.perf_counter()
        if hasattr(source, "on_rows"):  # a source that reads as it goes reports its progress
            source.on_rows = lambda done, it=iteration: on_event(
                PassEvent(restart, it, done, n_rows)
            )
        stats = source.em_pass(model, n_worst=k)
        origins = recentred(stats, strategy)
        if origins is not None:  # a component's new mean lies far from where it was summed
            stats = source.em_pass(model.with_moment_origins(origins), n_worst=k)
        current = stats.log_likelihood / n
        n_iter = iteration
        if accel is not None and not accel.accept(stats, current):
            # an extrapolation that lowered the log-likelihood: the parameters of the last
            # plain step stay (their value is recorded again: this pass counts), and the
            # next pass tries a shorter step or the plain one
            kept = accel.floor
            history.append(kept)
            on_event(IterationEvent(restart, iteration - 1, kept, 0.0, time.perf_counter() - t0))
            plain = accel.pending.plain if accel.pending is not None else params
            step = _valid_step(strategy, summary, options.reg_covar, plain, prepared, check)
            params = accel.retreat(step)
            model, params, _ = _prepare_safely(
                params, strategy, summary.shift, options.reg_covar, prepared
            )
            continue
        history.append(current)
        trail.append(current)
        change = current - previous
        step = mstep(stats, strategy, options.reg_covar, params.covariances, params.noise)
        params = step.params
        collapses = check(stats.counts, step.raw_covariances)
        done = rule.done(trail) if accel is None else rule.done_in_runs(accel.runs)
        on_event(IterationEvent(restart, iteration - 1, current, change, time.perf_counter() - t0))
        can_reseed = budget > 0 and iteration <= options.max_iter - RESEED_MARGIN
        movable = [c for c in collapses if not strategy.shared or c.reason == "few-points"]
        if movable and can_reseed:
            todo = movable[:budget]
            params, moved = _reseed(params, todo, stats, strategy, summary, options.reg_covar)
            budget -= len(moved)
            for collapse, mean in moved:
                event = ReseedEvent(restart, iteration, collapse, mean)
                reseeds.append(event)
                on_event(event)
            previous = np.nan
            trail = []
            if accel is not None:
                accel.reset()
        else:
            previous = current
            if done:
                converged = True
            elif accel is not None and not collapses and iteration < options.max_iter:
                params = accel.propose(
                    _valid_step(strategy, summary, options.reg_covar, params, prepared, check),
                    params,
                )
        model, params, singular = _prepare_safely(
            params, strategy, summary.shift, options.reg_covar, prepared
        )
        for c in singular:
            if all(col.component != c for col in collapses):
                collapses.append(Collapse(c, None, "singular", float("nan")))
        if converged:
            break
    if accel is not None and accel.pending is not None:
        # max_iter ended the run before the extrapolation was checked: the plain step
        params = accel.pending.plain
        model, params, _ = _prepare_safely(params, strategy, summary.shift, options.reg_covar)
    t0 = time.perf_counter()
    # The log-likelihood reported is always computed in float64, whatever the iterations used.
    final = source.em_pass(model, n_worst=0, exact=True)
    final_mean = final.log_likelihood / n
    change = final_mean - history[-1] if history else np.nan
    history.append(final_mean)
    on_event(IterationEvent(restart, n_iter, final_mean, change, time.perf_counter() - t0))
    if options.max_iter == 0:
        collapses = []
    duplicates = find_duplicates(params, strategy, summary)
    result = RestartResult(
        restart,
        params,
        n_iter,
        converged,
        final.log_likelihood,
        history,
        reseeds,
        tuple(collapses),
        duplicates,
        plain_runs=None if accel is None else tuple(tuple(run) for run in accel.runs if run),
    )
    on_event(RestartEvent(restart, n_iter, converged, final_mean, result.collapsed, duplicates))
    return result


def better(a: RestartResult, b: RestartResult | None) -> bool:
    """Whether restart a beats b: a restart that is not degenerate (no collapsed component,
    no two identical ones) beats any that is; then the higher likelihood."""
    if b is None:
        return True
    if a.degenerate != b.degenerate:
        return not a.degenerate
    return a.log_likelihood > b.log_likelihood


def fit(
    x: np.ndarray,
    options: EMOptions,
    start: MixtureParams | None = None,
    on_event: Callable[[Event], None] | None = None,
    cache: StartCache | None = None,
    weights: np.ndarray | None = None,
    screened: Sequence[RestartResult] = (),
    polish: bool = True,
) -> FitResult:
    """Fit a mixture to the rows of x (n, d) with n_init restarts; keep the best restart.

    With ``start`` (a warm start), every restart begins there (so one restart suffices).
    ``cache`` keeps start partitions for other fits of the same rows (``init.StartCache``).
    ``weights`` (n,): frequency weights, checked by the caller (finite, ≥ 0, not all 0).
    """
    options.validate()
    x = np.ascontiguousarray(x, dtype=np.float64)
    source = ArraySource(x, options.threads or default_threads(), weights)
    with single_threaded_blas():
        return fit_source(source, options, start, on_event, cache, screened, polish)


def fit_source(
    source: Source,
    options: EMOptions,
    start: MixtureParams | None = None,
    on_event: Callable[[Event], None] | None = None,
    cache: StartCache | None = None,
    screened: Sequence[RestartResult] = (),
    polish: bool = True,
) -> FitResult:
    """``fit`` over any source of rows (in memory, streamed from a file, on Dask workers):
    the same loop, checks and re-seeding; only the passes over the rows differ.

    Restarts from a partition of the rows (k-means++, hc) take it from ``cache`` (a fresh
    one per fit by default); a restart whose partition equals an earlier restart's is not
    run again, its result is that restart's (``RestartResult.same_start_as``).

    A fit in two stages (``select``'s search): ``polish=False`` runs every restart to the
    first-stage rule (FIRST_STAGE_TOL, looser than emEM's screening) and keeps the best as
    it is; a later fit with more restarts takes those results as ``screened`` (the plan's
    first restarts), carries each on to the screening rule (SCREEN_TOL), runs the others to
    it, and continues the best of all to the stopping rule: emEM over every restart, the
    optimum one fit with all of them finds (a carried-on run's last bits may differ, its
    path having stopped and gone on).
    """
    options.validate()
    d = source.n_features
    strategy = get_strategy(options.covariance_type)
    chunk_size = options.chunk_size or default_chunk_size(
        options.n_components, d, options.covariance_type
    )
    n, summary = source.summarise(chunk_size, strategy.is_diagonal)
    if n < options.n_components:
        raise ValueError(f"{n} rows are fewer than the {options.n_components} components")
    if summary.weight_total is not None and not summary.weight_total > 0:
        raise ValueError("every row's weight is 0: there is nothing to fit")
    source.bind(summary.shift, options.dtype, options.n_components, chunk_size)
    options = dataclasses.replace(options, reg_covar=regularisation(options, summary))
    noise = noise_box(summary, options.noise_volume) if options.noise else None
    if noise is not None and start is not None and start.noise is None:
        start = with_noise(start, noise)
    cache = StartCache() if cache is None else cache
    emit = on_event or (lambda event: None)
    results: list[RestartResult] = []
    best: RestartResult | None = None
    started: dict[bytes, RestartResult] = {}  # restarts run, by the partition they began at
    plan = restart_plan(options.init, options.n_init, options.seed)
    # emEM: with several restarts and the default rule, each runs to SCREEN_TOL; the best is
    # then run on to the default rule (the same EM trajectory, continued). A fit in two
    # stages does so whatever its number of restarts (one restart's first stage was screened)
    staged = bool(screened) or not polish
    short_runs = options.tol is None and start is None and (len(plan) > 1 or staged)
    screen = SCREEN_TOL if polish else FIRST_STAGE_TOL
    short = dataclasses.replace(options, tol=screen) if short_runs else options

    def planned(restart: int, method: str, seed: np.random.SeedSequence) -> RestartResult:
        """The result of the plan's restart from its own start (run, or repeated)."""
        request = Start(
            options.n_components,
            strategy,
            summary,
            options.reg_covar,
            np.random.default_rng(seed),
            chunk_size,
            seed,
        )
        point = starting_point(method, source.init_rows(), request, cache)
        earlier = started.get(point.partition) if point.partition is not None else None
        if restart < len(screened):  # run before, in the first stage: carried on to SCREEN_TOL
            result = screened[restart]
            if short_runs and result.n_iter < options.max_iter:
                result = run_restart(
                    source, result.params, short, summary, restart, n, emit, earlier=result
                )
        elif earlier is not None:
            result = earlier.repeated_as(restart)
            emit(_restart_event(result))
        else:
            begin = point.params if noise is None else with_noise(point.params, noise)
            result = run_restart(source, begin, short, summary, restart, n, emit)
        if point.partition is not None and earlier is None:
            started[point.partition] = result
        return result

    for restart, (method, seed) in enumerate(plan):
        if start is not None:
            result = run_restart(source, start, options, summary, restart, n, emit)
        else:
            result = planned(restart, method, seed)
        results.append(result)
        if better(result, best):
            best = result
    assert best is not None
    if short_runs and polish and best.n_iter < options.max_iter:
        best = run_restart(
            source, best.params, options, summary, best.restart, n, emit, earlier=best
        )
        results = [
            best if r.restart == best.restart
            else best.repeated_as(r.restart) if r.same_start_as == best.restart
            else r
            for r in results
        ]  # fmt: skip
    flat = [int(j) for j in np.flatnonzero(constant_columns(summary))]
    return FitResult(best, results, n, summary.shift, flat, summary.weight_total)


def _restart_event(result: RestartResult) -> RestartEvent:
    return RestartEvent(
        result.restart,
        result.n_iter,
        result.converged,
        result.history[-1],
        result.collapsed,
        result.duplicates,
        result.same_start_as,
    )
