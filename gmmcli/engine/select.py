"""Model selection: fit every (k, covariance model) cell of a grid and pick one by BIC, AIC
or ICL.

A cell whose best restart still has a collapsed component is *degenerate*: its likelihood is
a spike on a single point or repeated value, not a better model, and it is never chosen
while any non-degenerate cell exists. Cells run in worker processes (one engine thread
each), which beat one process with two engine threads on the small and middling data sets
model selection is usually run on (see the closing note of the issue for the figures).

Every worker gets the rows once, when it starts (not with every cell), and keeps one
``init.StartCache`` for the whole grid: the k-means++ partitions of a k and the hierarchical
tree are computed once per worker and start every covariance model. Cells are handed out
slowest first (large k, iterated M-steps), so no long cell is left for the end.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from .constraints import REFINE_MARGIN
from .covariance import get_strategy
from .init import StartCache
from .mixture import GaussianMixture, information_criteria

CRITERIA = ("bic", "aic", "icl")


@dataclass
class Cell:
    """One fitted cell of the grid."""

    n_components: int
    covariance_type: str
    model: GaussianMixture
    log_likelihood: float
    n_parameters: int
    bic: float
    aic: float
    icl: float
    converged: bool
    degenerate: bool
    # with or without a noise component; None in a grid without noise (as before noise)
    noise: bool | None = None
    # every restart, the best run to the stopping rule; False: the first start only,
    # stopped at the first-stage rule (a cell far from the best, ``run_grid``)
    refined: bool = True

    @property
    def model_name(self) -> str:
        """The covariance model, with "+noise" for a cell with a noise component."""
        return self.covariance_type + ("+noise" if self.noise else "")

    def score(self, criterion: str) -> float:
        """The cell's BIC, AIC or ICL (``CRITERIA``; lower is better)."""
        return {"bic": self.bic, "aic": self.aic, "icl": self.icl}[criterion]

    def record(self) -> dict:
        """The cell as one row of the grid table (and of the model file's selection); a grid
        with a noise component says which cells have it."""
        noise = {} if self.noise is None else {"noise": self.noise}
        return {
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            **noise,
            "log_likelihood": self.log_likelihood,
            "n_parameters": self.n_parameters,
            "bic": self.bic,
            "aic": self.aic,
            "icl": self.icl,
            "converged": self.converged,
            "degenerate": self.degenerate,
            "refined": self.refined,
        }


def fit_cell(
    x: np.ndarray,
    k: int,
    covariance_type: str,
    settings: dict,
    start_cache: StartCache | None = None,
    sample_weight: np.ndarray | None = None,
    noise: bool | None = None,
    stage: str = "whole",
    first: Cell | None = None,
) -> Cell:
    """Fit one cell (in a worker process or here); the log-likelihood is in data units.
    ``start_cache`` shares start partitions with the grid's other cells; ``sample_weight``:
    the rows' frequency weights (n = Σ w in the criteria); ``noise``: with or without a
    noise component, whatever ``settings`` say (None: as they say).

    ``stage``: "whole" (every restart of ``settings``, the best run to the stopping rule),
    "first" (the first restart only, stopped at the first-stage rule, ``em.FIRST_STAGE_TOL``:
    ``Cell.refined`` is False), or "rest" (after ``first``, this cell's first stage: that
    run carried on, the other restarts, the polish; the optimum "whole" finds)."""
    if noise is not None:
        volume = settings.get("noise_volume") if noise else None
        settings = {**settings, "noise": noise, "noise_volume": volume}
    elif settings.get("noise"):
        noise = True
    if stage == "first":
        settings = {**settings, "n_init": 1}
    screened = () if first is None else first.model.result_.restarts
    model = GaussianMixture(
        k, covariance_type=covariance_type, start_cache=start_cache, **settings
    ).fit(x, sample_weight=sample_weight, screened=screened, polish=stage != "first")
    ll = float(model.log_likelihood_)
    p = model.n_parameters()
    resp = model.responsibilities(x)  # with a noise component, its column too
    bic, aic, icl = information_criteria(ll, p, model.result_.n_effective, resp, sample_weight)
    return Cell(
        n_components=k,
        covariance_type=covariance_type,
        model=model,
        log_likelihood=ll,
        n_parameters=p,
        bic=bic,
        aic=aic,
        icl=icl,
        converged=bool(model.converged_),
        degenerate=model.result_.best.degenerate,  # collapsed, or identical components
        noise=noise,
        refined=stage != "first",
    )


def choose(cells: Iterable[Cell], criterion: str = "bic") -> Cell:
    """The cell with the lowest criterion among the non-degenerate ones (all, if none is)."""
    cells = list(cells)
    healthy = [c for c in cells if not c.degenerate] or cells
    return min(healthy, key=lambda c: (c.score(criterion), c.n_parameters))


def run_grid(
    x: np.ndarray,
    ks: list[int],
    covariance_types: list[str],
    settings: dict,
    jobs: int | None = None,
    on_cell: Callable[[Cell], None] | None = None,
    sample_weight: np.ndarray | None = None,
    noises: tuple[bool, ...] | None = None,
    criterion: str = "bic",
    margin: float = REFINE_MARGIN,
    on_more: Callable[[int], None] = lambda count: None,
) -> list[Cell]:
    """Fit every cell, in grid order in the result; ``on_cell`` hears of each fit as it
    ends (a refined cell's twice: its first stage, then the rest), and ``on_more`` of the
    second stage's fits as it begins (a progress bar's total grows by them).

    A search in two stages (``margin`` finite): every cell from its first start (mclust's
    tree, by default), stopped when its log-likelihood per row changes by less than
    ``em.FIRST_STAGE_TOL``; then each cell whose ``criterion`` is within ``margin`` × n of
    the best healthy cell's (n: the rows, or Σ w) gets that run carried on to emEM's
    screening rule, the rest of its restarts and its best run on to the stopping rule — the
    optimum one fit with every restart finds (``Cell.refined``). The others keep their
    first stage: far from the best, the restarts do not change the choice, and on small
    tables they were most of the time. ``margin=inf``: every cell refined, in one stage.

    The first stage's rule (1e-4, ten times emEM's screening) was chosen on the seven public
    sets of bench/MCLUST.md against 1e-5: the same choice and top three on all seven, every
    refined cell's BIC within 1e-5, every cell that the restarts bring within 10 of the best
    within 0.4 n of the best after its first stage (the widest need, 0.39 n, the same), and
    ~7 % less CPU on iris; the far cells' first fits end up to 335 BIC higher (a run stopped
    on a plateau), which the table marks as not refined. 3e-4 left a cell 4 BIC from the
    best (diabetes VVE, k = 5) unrefined.

    ``jobs`` worker processes (default: one per core); 1 fits in this process.
    ``sample_weight``: the rows' frequency weights, for every cell. ``noises``: fit every
    (k, model) cell with each, e.g. (False, True) to compare models with and without a noise
    component; None: as ``settings`` say.
    """
    grid = [(k, c, n) for n in noises or (None,) for c in covariance_types for k in ks]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(grid)))
    notify = on_cell or (lambda cell: None)
    with _Workers(x, settings, sample_weight, jobs, notify) as workers:
        if not margin < np.inf:
            return workers.fit([(*place, "whole", None) for place in grid])
        cells = workers.fit([(*place, "first", None) for place in grid])
        healthy = [c.score(criterion) for c in cells if not c.degenerate]
        n = cells[0].model.result_.n_effective
        bar = min(healthy or [c.score(criterion) for c in cells]) + margin * n
        near = [i for i, c in enumerate(cells) if c.score(criterion) <= bar]
        on_more(len(near))
        refined = workers.fit([(*grid[i], "rest", cells[i]) for i in near])
        for i, cell in zip(near, refined, strict=True):
            cells[i] = cell
    return cells


class _Workers:
    """The grid's cells fitted in worker processes (or here, for one job): ``fit`` takes
    (k, model, noise, stage, first stage) tasks and returns their cells in order."""

    def __init__(self, x, settings, sample_weight, jobs: int, notify) -> None:
        self.x, self.settings, self.weights = x, settings, sample_weight
        self.jobs, self.notify = jobs, notify
        self.pool: ProcessPoolExecutor | None = None
        self.cache = StartCache()

    def __enter__(self) -> _Workers:
        if self.jobs > 1:
            self.pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                initializer=_start_worker,
                initargs=(self.x, {**self.settings, "threads": 1}, self.weights),
            )
        return self

    def fit(self, tasks: list[tuple]) -> list[Cell]:
        if self.pool is None:
            cells = []
            for k, c, noise, stage, first in tasks:
                cells.append(
                    fit_cell(
                        self.x, k, c, self.settings, self.cache, self.weights, noise, stage, first
                    )
                )
                self.notify(cells[-1])
            return cells
        futures: dict[int, Future] = {}
        try:
            for i in sorted(range(len(tasks)), key=lambda i: _slowest_first(*tasks[i][:3])):
                futures[i] = self.pool.submit(_fit_in_worker, *tasks[i])
                futures[i].add_done_callback(lambda f: _notify_done(f, self.notify))
            return [futures[i].result() for i in range(len(tasks))]
        except BrokenProcessPool:
            _stop(self.pool)
            self.pool = None
            raise WorkerLost("a worker process died (out of memory?)") from None

    def __exit__(self, kind, error, trace) -> None:
        if self.pool is None:
            return
        if kind is None:
            self.pool.shutdown(wait=True)
        else:  # Ctrl-C, SIGTERM, an error in a cell: stop every worker now
            _stop(self.pool)


def _slowest_first(k: int, covariance_type: str, noise: bool | None = None) -> tuple[int, int]:
    """Sort key: the cells likely to take longest first — an M-step that iterates costs
    several E-steps — then by k (more components, more work per iteration)."""
    weight = 4 if get_strategy(covariance_type).iterated_mstep else 1
    return (-weight * k, -k)


# In a worker process: the grid's rows, settings and weights, and the starts its cells share.
_worker: tuple[np.ndarray, dict, StartCache, np.ndarray | None] | None = None


def _start_worker(x: np.ndarray, settings: dict, sample_weight: np.ndarray | None) -> None:
    global _worker
    _ignore_interrupts()
    _worker = (x, settings, StartCache(), sample_weight)


def _fit_in_worker(
    k: int, covariance_type: str, noise: bool | None, stage: str, first: Cell | None
) -> Cell:
    assert _worker is not None, "the pool's initializer did not run"
    x, settings, cache, sample_weight = _worker
    return fit_cell(x, k, covariance_type, settings, cache, sample_weight, noise, stage, first)


class WorkerLost(RuntimeError):
    """A worker process of the grid ended without an answer (killed, e.g. out of memory)."""


def _ignore_interrupts() -> None:
    """In a worker: Ctrl-C reaches the whole process group, and the parent alone handles it;
    SIGTERM (the parent stopping the grid) ends the worker at once, whatever handler the
    parent had installed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _notify_done(future: Future, notify: Callable[[Cell], None]) -> None:
    if not future.cancelled() and future.exception() is None:
        notify(future.result())


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued cells and end the running ones without waiting for them."""
    # the pool's manager thread closes its wake-up pipe as it notices the dead workers; it
    # must be waited for, or the interpreter's exit hook may write to that pipe as it is
    # being closed and print a traceback after the one-line error (EBADF, about 1 SIGTERM
    # in 20 on a loaded machine). shutdown(wait=False) forgets the thread, and a later
    # shutdown(wait=True) then has nothing to join: hold it here.
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for child in multiprocessing.active_children():
        child.terminate()
    for child in multiprocessing.active_children():
        child.join(timeout=5)
    if manager is not None:
        manager.join(timeout=10)


def parse_ks(text: str) -> list[int]:
    """'1-9', '2,4,8' or '3' to a sorted list of distinct component counts (>= 1)."""
    ks: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            low, high = part.split("-", 1)
            values = range(int(low), int(high) + 1)
            if int(low) > int(high):
                raise ValueError(f"empty range {part!r}")
            ks.update(values)
        else:
            ks.add(int(part))
    if not ks or min(ks) < 1:
        raise ValueError("component counts must be >= 1")
    return sorted(ks)
