"""Benchmark: time to a converged answer, gmm against scikit-learn, mclust and mlpack on the
same data — part of ``bench/bench_em.py``'s run.

    python bench/converged.py --quick        # small cases, prints the section
    python bench/converged.py --case issue,200000,8,6,full   # one case

Per case (``cases``): the data in memory; one common start (gmm's k-means++,
``bench_em.common_start``); the fixed point ℓ* from it, mean log-likelihood per row
(``reference``): the better of gmm's accelerated iteration with tol 0 (continued while its last
50 passes move it by more than 1e-3 of the promise) and plain EM (``--no-accelerate``, the
default rule), then raised to any better final value a peer reaches from the same start (the
table says when). Plain EM is the path scikit-learn and mclust take from that start, so its
history says where they get within the promise. Every tool is run until it is within
``PROMISE`` (1e-6) relative of ℓ*:

- gmm: its defaults (SQUAREM, Aitken's 1e-8 per row) from the start (``means_init`` …, as
  ``gmm fit --init start.json``); the whole fit is timed.
- scikit-learn: the same start (``means_init``, ``weights_init``, ``precisions_init``), timed
  to its first iteration within 1e-6 of ℓ* (tol 0, max_iter that many: the count from plain
  EM's path, checked on its own history; if that fails, found by runs to tol 1e-7, 1e-9,
  1e-11); the table gives the tol with which its rule would run that far.
- mclust: ``me(modelName, data, z)`` (VVV for full, VVI for diag) in Rscript, z the start's
  responsibilities (its first M-step gives the start back, and it runs plain EM from there);
  its relative tolerance (``emControl(tol=)``, |Δℓ| / (1 + |ℓ|) on the total) the loosest of
  1e-5 (its default), 1e-6, … with which plain EM's path stops within 1e-6 of ℓ*, tightened
  tenfold in R while its answer is not there and still moves; timed inside R (R's start and
  reading the data excluded). R's BLAS here is the reference one: one thread.
- mlpack: ``gmm_train`` cannot take a start (``input_model`` only fixes the shape: it runs
  its k-means again, as its verbose log shows), so it starts from its own k-means (seed 1;
  not timed) and may end at another fixed point. Its tolerance (absolute, on the total) is
  mclust's as an absolute one, tightened tenfold while the answer is not within 1e-6 and
  still moves; the EM part is timed (the call less a call that stops after the same k-means);
  its iterations come from its verbose log (its diagonal EM logs none). One thread only: its
  fits to convergence are the longest of the four, and bench_em's per-iteration table has it
  on all cores.

Where plain EM from the start is not within 1e-6 of ℓ* after its 1,000 passes (EM creeping,
as on the 2-column blobs with k = 8, full), no peer is run: the table shows gmm's answer and
says why. A peer's fit forecast to take more than ``--cap`` seconds (180) is not run, and the
table says so: the forecast is the tool's time per iteration (t(4) − t(1)) / 3, here, times
plain EM's iterations (for mlpack, from another start, a guess). scikit-learn with BLAS on
both cores of a loaded 2-core machine took 2.1 s per iteration of the issue's case (against
0.48 s on one).

Wall seconds are medians of up to ``repeats`` runs, fewer when a tool's runs on one case use
up ``budget`` seconds (the count is in the table). Threads: gmm and scikit-learn on one thread
and on all cores (threadpoolctl; gmm's own ``threads``), mlpack and mclust on one. Never part
of the test suite.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_accel import PROMISE, first_within, gmm_fit, issue_data  # noqa: E402
from bench_em import (  # noqa: E402
    blobs,
    common_start,
    fit_mlpack,
    have_mlpack,
    sklearn_fit,
)

MCLUST_MODEL = {"full": "VVV", "diag": "VVI"}
SKLEARN_TOLS = (1e-7, 1e-9, 1e-11)
MCLUST_TOLS = (1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11)
MLPACK_TOLS = 5  # tolerances tried at most, tenfold apart
CAP = 180.0  # seconds: a peer's fit forecast to take longer is not run
MLPACK_MAX_ITER = 100_000  # (0 would be "until convergence" for full models only)


@dataclass(frozen=True)
class Case:
    name: str  # the data: "issue" (bench_accel.issue_data) or "blobs" (bench_em.blobs)
    n: int
    d: int
    k: int
    covariance: str

    def data(self) -> np.ndarray:
        if self.name == "issue":
            return issue_data(self.n, self.d, self.k, spread=0.8)
        return blobs(self.n, self.d, self.k)

    @property
    def label(self) -> str:
        what = "blobs"
        if self.name == "issue":
            issue = (self.n, self.d, self.k) == (200_000, 8, 6)
            what = "overlapping, the issue's case" if issue else "overlapping (the issue's data)"
        return f"{self.n:,} × {self.d}, k = {self.k}, {self.covariance}, {what}"


def cases(quick: bool) -> list[Case]:
    """The issue's case and bench_em's 200,000-row blobs at d = 2 and 16, k = 8.

    Left out (each peer would need minutes per fit, and the run must fit in ~30 minutes on
    2 cores): d = 64 (scikit-learn and mlpack take 1.5–3.5 s per full iteration there), k =
    32, 1,000,000 rows, and tied and spherical (mlpack has neither).
    """
    if quick:
        return [Case("issue", 5_000, 4, 3, "full"), Case("blobs", 10_000, 2, 4, "diag")]
    return [
        Case("issue", 200_000, 8, 6, "full"),
        Case("blobs", 200_000, 2, 8, "full"),
        Case("blobs", 200_000, 2, 8, "diag"),
        Case("blobs", 200_000, 16, 8, "full"),
        Case("blobs", 200_000, 16, 8, "diag"),
    ]


@dataclass
class Run:
    """One tool's answer on one case and thread count."""

    tool: str
    threads: int
    settings: str
    iterations: int | None = None  # in the timed run
    to_promise: int | None = None  # the first iteration within PROMISE of ℓ*, where known
    seconds: list[float] = field(default_factory=list)
    final: float = float("nan")  # mean log-likelihood per row at the end
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def repeated(work: Callable[[], float], repeats: int, budget: float, done=()) -> list[float]:
    """The seconds of ``done`` and of more runs of ``work`` (which returns its own seconds),
    up to ``repeats`` in all while their sum stays under ``budget``; at least one."""
    samples = list(done)
    while len(samples) < repeats and (not samples or sum(samples) < budget):
        samples.append(work())
    return samples


# -- ℓ* ---------------------------------------------------------------------------------------
@dataclass
class Reference:
    limit: float  # ℓ*: the best of the runs below (and, later, of the peers' from the start)
    accelerated: float  # gmm's accelerated iteration with tol 0, run until it stands still
    moved: float  # how far that moved over its last 50 passes
    plain: list[float]  # plain EM's history (gmm --no-accelerate, its default rule)


def reference(x, k, covariance, start, passes: int = 300, rounds: int = 5) -> Reference:
    """ℓ*: the better of gmm's accelerated iteration with tol 0 (continued from where it
    stopped while its last 50 passes move it by 1e-3 of the promise) and plain EM with the
    default rule (the path scikit-learn and mclust take from the start; its history predicts
    where they get within the promise)."""
    moved, begin = float("inf"), start
    for _ in range(rounds):
        model = gmm_fit(x, k, covariance, begin, True, tol=0.0, max_iter=passes)
        history = model.log_likelihood_history_
        moved = abs(history[-1] - history[-51])
        begin = (model.weights_, model.means_, model.covariances_)
        if moved <= 1e-3 * PROMISE * abs(history[-1]):
            break
    plain = gmm_fit(x, k, covariance, start, False).log_likelihood_history_
    return Reference(max(history[-1], plain[-1]), history[-1], moved, list(plain))


def plain_stop(plain: list[float], n: int, tol: float) -> int:
    """Where a relative-change rule (|Δℓ| / (1 + |ℓ|) on the total, mclust's) stops on
    plain EM's path; the path's end if it does not."""
    for t in range(2, len(plain)):
        if n * abs(plain[t] - plain[t - 1]) / (1.0 + n * abs(plain[t])) < tol:
            return t
    return len(plain) - 1


def plain_tolerance(plain: list[float], limit: float, n: int, tols) -> float:
    """The loosest of ``tols`` with which that rule stops within the promise of ℓ* on plain
    EM's path (the tightest if none does)."""
    for tol in tols:
        if abs(plain[plain_stop(plain, n, tol)] - limit) <= PROMISE * abs(limit):
            return tol
    return tols[-1]


# -- the four tools ----------------------------------------------------------------------------
def run_gmm(x, k, covariance, start, threads, limit, repeats, budget) -> Run:
    """gmm's defaults from the start (its whole fit timed)."""
    model = None

    def once() -> float:
        nonlocal model
        t0 = time.perf_counter()
        model = gmm_fit(x, k, covariance, start, True, threads=threads)
        return time.perf_counter() - t0

    seconds = repeated(once, repeats, budget)
    return Run(
        "gmm",
        threads or os.cpu_count(),
        "defaults (SQUAREM; Aitken within 1e-8 per row)",
        iterations=model.n_iter_,
        to_promise=first_within(model.log_likelihood_history_, limit),
        seconds=seconds,
        final=model.log_likelihood_ / len(x),
    )


def sklearn_discovered(x, k, covariance, start, limit) -> tuple[float, int, float, float]:
    """(tol, the first iteration within PROMISE of ℓ* (−1: none), its run's seconds, its last
    value) for the loosest of SKLEARN_TOLS whose history gets there, or the first whose
    answer no longer moves."""
    previous = None
    for tol in SKLEARN_TOLS:
        model, seconds = sklearn_fit(x, k, covariance, start, tol, 3000)
        # lower_bounds_[t] is the log-likelihood of the parameters entering iteration t + 1
        to = first_within(list(model.lower_bounds_), limit)
        last = float(model.lower_bounds_[-1])
        if to >= 0 or (previous is not None and abs(last - previous) <= 1e-10 * abs(limit)):
            break
        previous = last
    return tol, to, seconds, last


def sklearn_forecast(x, k, covariance, start, iterations: int) -> float:
    """Seconds ``iterations`` iterations of scikit-learn would take: (t(4) − t(1)) / 3 each."""
    _, one = sklearn_fit(x, k, covariance, start, 0.0, 1)
    _, four = sklearn_fit(x, k, covariance, start, 0.0, 4)
    return max(four - one, 0.0) / 3 * iterations


def run_sklearn(x, k, covariance, start, threads, ref: Reference, repeats, budget, cap) -> Run:
    """Timed to the first iteration within PROMISE of ℓ*: tol 0 and max_iter that many,
    the count from plain EM's path (checked on scikit-learn's own history; else found with
    SKLEARN_TOLS). Not run when that is forecast to take more than ``cap`` seconds."""
    limit, to = ref.limit, first_within(ref.plain, ref.limit)
    model = None
    forecast = sklearn_forecast(x, k, covariance, start, to + 1 if to >= 0 else len(ref.plain))
    if forecast > cap:
        return Run(
            "scikit-learn",
            threads or os.cpu_count(),
            "–",
            note=f"not run: ~{forecast:.0f} s forecast (over the cap, {cap:.0f} s)",
        )

    def once() -> float:
        nonlocal model
        model, taken = sklearn_fit(x, k, covariance, start, 0.0, to + 1)
        return taken

    found = "plain EM's path"
    if to >= 0:
        first = once()
        if first_within(list(model.lower_bounds_), limit) < 0:
            to = -1
    if to < 0:
        tol, to, seconds, last = sklearn_discovered(x, k, covariance, start, limit)
        found = f"its run to tol {tol:g}"
        if to < 0:
            return Run(
                "scikit-learn",
                threads or os.cpu_count(),
                f"tol {tol:g}, max_iter 3000",
                seconds=[seconds],
                final=last,
                note=f"not within {PROMISE:g} of ℓ* (its run to tol {tol:g} timed)",
            )
        first = once()
    samples = repeated(once, repeats, budget, [first])
    history = list(model.lower_bounds_)
    # the largest tol with which scikit-learn's rule (|Δ| < tol) would stop there
    stop_tol = float(np.abs(np.diff(history)).min()) if len(history) > 1 else float("nan")
    return Run(
        "scikit-learn",
        threads or os.cpu_count(),
        f"tol 0, max_iter {to + 1} (from {found}; tol ≤ {stop_tol:.0e} runs that far)",
        iterations=to + 1,
        to_promise=to + 1,
        seconds=samples,
        final=history[-1],
    )


def mlpack_call(x, k, covariance, max_iterations, tolerance) -> tuple[float, int, object]:
    """(seconds, EM iterations, model) of one gmm_train call from its k-means (seed 1); the
    iterations counted in its verbose log, which goes to the process's stdout."""
    import mlpack

    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        try:
            t0 = time.perf_counter()
            out = mlpack.gmm_train(
                input_=x,
                gaussians=k,
                diagonal_covariance=covariance == "diag",
                max_iterations=max_iterations,
                kmeans_max_iterations=1000,
                tolerance=tolerance,
                seed=1,
                verbose=True,
            )
            seconds = time.perf_counter() - t0
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        text = log.read().decode(errors="replace")
    iterations = len(re.findall(r"EMFit::Estimate\(\): iteration \d+", text))
    return seconds, iterations, out["output_model"]


def mlpack_loglik(x, model) -> float:
    import mlpack

    density = mlpack.gmm_probability(input_=x, input_model=model)["output"].ravel()
    with np.errstate(divide="ignore"):
        return float(np.mean(np.log(density)))


def mlpack_forecast(x, k, covariance, iterations: int) -> float:
    """Seconds ``iterations`` EM iterations of gmm_train would take: (t(4) − t(1)) / 3 per
    iteration, each call after the same short k-means (bench_em.fit_mlpack)."""
    one, _ = fit_mlpack(x, k, covariance, 1)
    four, _ = fit_mlpack(x, k, covariance, 4)
    return max(four - one, 0.0) / 3 * iterations


def run_mlpack(x, k, covariance, limit, guess, repeats, budget) -> Run:
    """The EM part of gmm_train (the call less a call that stops after the same k-means),
    its tolerance ``guess`` × (1 + n|ℓ*|) (mclust's relative rule, as an absolute one),
    tightened tenfold while its answer is not within PROMISE of ℓ* and still moves, and
    while its runs for this case stay under 3 × ``budget``."""
    n = len(x)
    kmeans, _, _ = mlpack_call(x, k, covariance, 1, 1.0)  # 1: no EM iteration
    tolerance, previous, spent = guess * (1.0 + n * abs(limit)), None, 0.0
    for _ in range(MLPACK_TOLS):
        seconds, iterations, model = mlpack_call(x, k, covariance, MLPACK_MAX_ITER, tolerance)
        spent += seconds
        final = mlpack_loglik(x, model)
        within = abs(final - limit) <= PROMISE * abs(limit)
        still = previous is None or abs(final - previous) > 1e-10 * abs(limit)
        if within or not still or spent > 3 * budget:
            break
        previous, tolerance = final, tolerance / 10

    def once() -> float:
        whole, _, _ = mlpack_call(x, k, covariance, MLPACK_MAX_ITER, tolerance)
        return max(whole - kmeans, 0.0)

    samples = repeated(once, repeats, budget, [max(seconds - kmeans, 0.0)])
    note = f"its own k-means start (it takes none; {kmeans:.2f} s, not counted)"
    if covariance == "diag":
        note += "; its diagonal EM logs no iteration count"
    if not within:
        note += f"; not within {PROMISE:g} of ℓ*" + (
            " (another fixed point)" if not still else " (stopped tightening: time)"
        )
    return Run(
        "mlpack",
        1,
        f"tolerance {tolerance:.2g} (absolute, on the total)",
        iterations=iterations if covariance != "diag" else None,
        seconds=samples,
        final=final,
        note=note,
    )


R_SCRIPT = r"""
suppressMessages({library(mclust); library(jsonlite)})
a <- commandArgs(trailingOnly = TRUE)
folder <- a[1]; model <- a[2]
n <- as.integer(a[3]); d <- as.integer(a[4]); k <- as.integer(a[5])
target <- as.numeric(a[6]); promise <- as.numeric(a[7])
repeats <- as.integer(a[8]); budget <- as.numeric(a[9])
tols <- as.numeric(strsplit(a[10], ",")[[1]])
X <- matrix(readBin(file.path(folder, "x.bin"), "double", n * d), n, d, byrow = TRUE)
Z <- matrix(readBin(file.path(folder, "z.bin"), "double", n * k), n, k, byrow = TRUE)
run <- function(tol) {
  control <- emControl(tol = c(tol, sqrt(.Machine$double.eps)))
  started <- proc.time()[["elapsed"]]
  fit <- me(X, modelName = model, z = Z, control = control, warn = FALSE)
  seconds <- proc.time()[["elapsed"]] - started
  loglik <- if (is.null(fit$loglik) || is.na(fit$loglik)) NA else fit$loglik
  list(tol = tol, seconds = seconds, iterations = unname(attr(fit, "info")[1]),
       loglik = loglik)
}
tried <- list(); chosen <- NULL; previous <- NA
for (tol in tols) {
  r <- run(tol)
  tried[[length(tried) + 1]] <- r
  if (is.na(r$loglik)) break
  if (abs(r$loglik - target) <= promise * abs(target)) { chosen <- r; break }
  if (!is.na(previous) && abs(r$loglik - previous) <= 1e-10 * abs(target)) break
  previous <- r$loglik
}
last <- tried[[length(tried)]]
seconds <- last$seconds
if (!is.null(chosen)) {
  while (length(seconds) < repeats && sum(seconds) < budget)
    seconds <- c(seconds, run(chosen$tol)$seconds)
}
out <- list(tried = tried, last = last, within = !is.null(chosen), seconds = seconds,
            version = as.character(packageVersion("mclust")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, na = "null"),
           file.path(folder, "mclust.json"))
"""


def have_mclust() -> bool:
    try:
        found = subprocess.run(
            ["Rscript", "-e", "suppressMessages({library(mclust); library(jsonlite)})"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 0


def run_mclust(x, k, covariance, start, limit, guess, repeats, budget) -> Run:
    """me() from the start's responsibilities, its tolerance from ``guess`` on (plain EM's
    path says which tolerance gets there), tightened in R if it does not."""
    from gmmcli import GaussianMixture

    weights, means, covariances = start
    begin = GaussianMixture(
        k,
        covariance_type=covariance,
        max_iter=0,
        weights_init=weights,
        means_init=means,
        covariances_init=covariances,
    ).fit(x)
    n, d = x.shape
    with tempfile.TemporaryDirectory(prefix="bench-mclust-") as folder:
        np.ascontiguousarray(x, dtype=np.float64).tofile(Path(folder) / "x.bin")
        np.ascontiguousarray(begin.predict_proba(x)).tofile(Path(folder) / "z.bin")
        arguments = [folder, MCLUST_MODEL[covariance], n, d, k, limit * n, PROMISE, repeats]
        tols = [t for t in MCLUST_TOLS if t <= guess] or [guess]
        arguments += [budget, ",".join(f"{t:g}" for t in tols)]
        environment = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        subprocess.run(
            ["Rscript", "-e", R_SCRIPT, *map(str, arguments)], check=True, env=environment
        )
        out = json.loads((Path(folder) / "mclust.json").read_text())
    last = out["last"]
    note = "" if out["within"] else f"not within {PROMISE:g} of ℓ* at the tightest tolerance"
    final = last["loglik"] / n if last["loglik"] is not None else float("nan")
    return Run(
        f"mclust {out['version']}",
        1,
        f"me({MCLUST_MODEL[covariance]}), emControl(tol = {last['tol']:g})",
        iterations=int(last["iterations"]),
        seconds=list(out["seconds"]) if isinstance(out["seconds"], list) else [out["seconds"]],
        final=final,
        note=note,
    )


# -- one case, the whole part ----------------------------------------------------------------
def run_case(case: Case, modes, repeats: int, budget: float, tools: set[str], cap: float) -> dict:
    from threadpoolctl import threadpool_limits

    x = case.data()
    start = common_start(x, case.k, case.covariance)
    ref = reference(x, case.k, case.covariance, start)
    say(
        f"  {case.label}: ℓ* = {ref.limit:.10f} (accelerated {ref.accelerated:.10f}, moved "
        f"{ref.moved:.1e}; plain {ref.plain[-1]:.10f} after {len(ref.plain) - 1} passes)"
    )
    runs: list[Run] = []
    guess = plain_tolerance(ref.plain, ref.limit, len(x), MCLUST_TOLS)
    skipped = []
    if first_within(ref.plain, ref.limit) < 0:
        # EM creeps (e.g. two components sharing one blob): plain EM, the path scikit-learn
        # and mclust take from this start, is not within the promise after its max_iter
        # passes, so no peer's time to ℓ* can be measured, only gmm's answer shown
        note = (
            f"not run: plain EM from this start is not within 1e-6 of ℓ* after "
            f"{len(ref.plain) - 1} passes"
        )
        say(f"    {note}")
        names = {"sklearn": "scikit-learn", "mlpack": "mlpack", "mclust": "mclust"}
        skipped = [Run(names[tool], 1, "–", note=note) for tool in sorted(tools)]
        tools = set()
    for threads in modes:
        with threadpool_limits(threads):
            runs.append(run_gmm(x, case.k, case.covariance, start, threads, ref.limit, repeats,
                                budget))  # fmt: skip
            if "sklearn" in tools:
                runs.append(
                    run_sklearn(
                        x, case.k, case.covariance, start, threads, ref, repeats, budget, cap
                    )
                )
        for run in runs[-2 if tools else -1 :]:
            say(f"    {run.tool} ({run.threads}): {run.median:.2f} s, {run.iterations} it.")
    if "mlpack" in tools:
        with threadpool_limits(1):
            # its iterations forecast from plain EM's path with the same rule (another start)
            forecast = mlpack_forecast(
                x, case.k, case.covariance, plain_stop(ref.plain, len(x), guess)
            )
            if forecast > cap:
                runs.append(
                    Run("mlpack", 1, "–", note=f"not run: ~{forecast:.0f} s forecast "
                        f"(over the cap, {cap:.0f} s)")
                )  # fmt: skip
            else:
                runs.append(
                    run_mlpack(x, case.k, case.covariance, ref.limit, guess, repeats, budget)
                )
        say(f"    mlpack (1): {runs[-1].median:.2f} s, {runs[-1].iterations} it.")
    if "mclust" in tools:
        runs.append(run_mclust(x, case.k, case.covariance, start, ref.limit, guess, repeats,
                               budget))  # fmt: skip
        say(f"    {runs[-1].tool}: {runs[-1].median:.2f} s, {runs[-1].iterations} it.")
    runs += skipped
    # ℓ*: the best value reached from the common start (mlpack starts elsewhere)
    same_start = [r.final for r in runs if r.tool != "mlpack" and np.isfinite(r.final)]
    return {"case": case, "ref": ref, "limit": max([ref.limit, *same_start]), "runs": runs}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def available_tools() -> set[str]:
    tools = {"sklearn"}
    if have_mlpack():
        tools.add("mlpack")
    if have_mclust():
        tools.add("mclust")
    return tools


def run_all(quick, modes, repeats: int, budget: float, cap: float, only=None) -> list:
    tools = available_tools()
    say(f"time to converged: {', '.join(sorted(tools))}")
    chosen = only or cases(quick)
    return [run_case(case, modes, repeats, budget, tools, cap) for case in chosen]


# -- the report --------------------------------------------------------------------------------
def gap_text(final: float, limit: float) -> str:
    if not np.isfinite(final):
        return "–"
    gap = (limit - final) / abs(limit)
    return f"{gap:.0e}" if gap >= 0 else f"{gap:.0e} (above)"


def report(results: list[dict], repeats: int, budget: float) -> str:
    lines = [
        "## Time to a converged answer (within 1e-6 of ℓ*)",
        "",
        "Made by `bench/converged.py` (its docstring has the procedure). ℓ*: the fixed point "
        "from the common start (gmm's k-means++), mean log-likelihood per row. Seconds: gmm's "
        "whole default fit; scikit-learn to its first iteration within 1e-6 of ℓ*; mclust's "
        "`me()` and mlpack's EM with the loosest tolerance that gets there (mlpack: its own "
        "k-means start, not timed; one thread). Medians of up to "
        f"{repeats} runs (fewer when a tool's runs on a case pass {budget:.0f} s). "
        "'vs gmm': the tool's seconds over gmm's on as many threads (mclust: gmm on one). "
        "Gap: (ℓ* − final) / |ℓ*|.",
        "",
    ]
    for result in results:
        case, limit, ref = result["case"], result["limit"], result["ref"]
        lines += [
            f"**{case.label}**: ℓ* = {limit:.10f} per row. gmm's accelerated iteration with "
            f"tol 0: {ref.accelerated:.10f} (its last 50 passes moved it by {ref.moved:.0e}); "
            f"plain EM: {ref.plain[-1]:.10f} after {len(ref.plain) - 1} passes"
            + ("; raised by a peer's final value" if limit > ref.limit else "")
            + (
                f". **The two differ by {abs(ref.accelerated - ref.plain[-1]) / abs(limit):.0e}"
                " relative: another fixed point.**"
                if abs(ref.accelerated - ref.plain[-1]) > PROMISE * abs(limit)
                else "."
            ),
            "",
            "| tool | threads | settings | iterations | first within 1e-6 | seconds | runs "
            "| vs gmm | gap to ℓ* | note |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        gmm_seconds = {r.threads: r.median for r in result["runs"] if r.tool == "gmm"}
        for r in result["runs"]:
            ratio = (
                "1" if r.tool == "gmm" else f"{r.median / gmm_seconds[r.threads]:.1f}×"
                if r.seconds and r.threads in gmm_seconds and gmm_seconds[r.threads] > 0
                else "–"
            )  # fmt: skip
            lines.append(
                f"| {r.tool} | {r.threads} | {r.settings} | "
                f"{'–' if r.iterations is None else r.iterations} | "
                f"{'–' if r.to_promise is None or r.to_promise < 0 else r.to_promise} | "
                f"{f'{r.median:.2f}' if r.seconds else '–'} | {len(r.seconds)} | {ratio} | "
                f"{gap_text(r.final, limit)} | "
                f"{r.note} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--threads", default="1,all")
    parser.add_argument("--cap", type=float, default=CAP)
    parser.add_argument("--case", help="one case: issue|blobs,n,d,k,covariance")
    args = parser.parse_args()
    modes = [None if t == "all" else int(t) for t in args.threads.split(",")]
    only = None
    if args.case:
        name, n, d, k, covariance = args.case.split(",")
        only = [Case(name, int(n), int(d), int(k), covariance)]
    results = run_all(args.quick, modes, args.repeats, args.budget, args.cap, only)
    print(report(results, args.repeats, args.budget))


if __name__ == "__main__":
    main()
