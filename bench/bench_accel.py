"""Benchmark: passes over the data and wall time to a converged answer, plain EM against
SQUAREM (``--accelerate``, the default), and the issue's case against scikit-learn.

    python bench/bench_accel.py              # the grid and the issue's case, a Markdown table
    python bench/bench_accel.py --quick      # a few configurations
    python bench/bench_accel.py --issue      # only the issue's case (200,000 × 8, k = 6)
    python bench/bench_accel.py --grid       # only the grid
    python bench/bench_accel.py --rate       # seconds per iteration on the issue's case

Per configuration: data from bench_em's generator (stretched blobs, centres ~N(0, 8²)) or,
"overlapping", the same with the centres 4× closer; one common start (gmm's k-means++,
bench_em.common_start). The fixed point ℓ* is where the accelerated iteration ends with
tol 0 after 600 passes (it stands still there; plain EM from the same start agrees to
1e-8 relative, tests/test_accel.py). "passes to 1e-6" is the first pass whose mean
log-likelihood is within 1e-6 relative of ℓ* (from the history of a run with the default
stopping rule, which goes on past that point); "default" is the fit with gmm's defaults
(the rule: within 1e-8 per row of the limit), its passes and wall time (median of
``--repeat``), and how far it ended from ℓ*. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_em import blobs, common_start, precisions  # noqa: E402

PROMISE = 1e-6


def overlapping(n: int, d: int, k: int, seed: int = 0, closer: float = 4.0) -> np.ndarray:
    x = blobs(n, d, k, seed)
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, n, k + 1).astype(int)
    for c in range(k):  # move each cluster's centre towards the data's
        part = x[bounds[c] : bounds[c + 1]]
        centre = part.mean(axis=0)
        part -= centre * (1.0 - 1.0 / closer)
    return x[rng.permutation(n)]


REFERENCE_PASSES = 1000


def fixed_point(x, k, covariance, start, passes: int) -> float:
    """ℓ* per row: the accelerated iteration with tol 0 (its last 50 passes must have moved
    it by less than 1e-3 of the promise, else the table would measure against a moving
    target: then a note on stderr)."""
    model = gmm_fit(x, k, covariance, start, True, tol=0.0, max_iter=passes)
    history = model.log_likelihood_history_
    if abs(history[-1] - history[-51]) > 1e-3 * PROMISE * abs(history[-1]):
        print(f"ℓ* still moving after {passes} passes: {history[-51]} → {history[-1]}",
              file=sys.stderr)  # fmt: skip
    return history[-1]


def issue_data(n: int, d: int, k: int, spread: float, seed: int = 1) -> np.ndarray:
    """k clusters of one shape (a random d × d factor, each axis rescaled by 0.8–1.25 per
    cluster), centres ~N(0, spread²) per column: at spread 0.8 they overlap so much that
    plain EM needs hundreds of iterations, as in the issue."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    x = np.empty((n, d))
    bounds = np.linspace(0, n, k + 1).astype(int)
    for c in range(k):
        shape = base * rng.uniform(0.8, 1.25, d)
        rows = rng.normal(size=(bounds[c + 1] - bounds[c], d)) @ shape
        x[bounds[c] : bounds[c + 1]] = rows + spread * rng.normal(size=d)
    return x[rng.permutation(n)]


def first_within(history: list[float], limit: float) -> int:
    """The first pass whose mean log-likelihood is within PROMISE relative of ``limit``."""
    for t, value in enumerate(history):
        if abs(value - limit) <= PROMISE * abs(limit):
            return t
    return -1


def gmm_fit(x, k, covariance, start, accelerate, **options):
    from gmmcli import GaussianMixture

    weights, means, covariances = start
    return GaussianMixture(
        k,
        covariance_type=covariance,
        weights_init=weights,
        means_init=means,
        covariances_init=covariances,
        accelerate=accelerate,
        **options,
    ).fit(x)


def timed(function, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times)


def one_config(x, k, covariance, repeat: int) -> dict:
    start = common_start(x, k, covariance)
    limit = fixed_point(x, k, covariance, start, REFERENCE_PASSES)
    row: dict = {}
    for name, accelerate in [("plain", False), ("accel", True)]:
        model, seconds = timed(lambda a=accelerate: gmm_fit(x, k, covariance, start, a), repeat)
        row[name] = {
            "passes_to": first_within(model.log_likelihood_history_, limit),
            "passes": model.n_iter_,
            "seconds": seconds,
            "gap": abs(model.log_likelihood_ / len(x) - limit) / abs(limit),
            "converged": bool(model.converged_),
        }
    return row


def grid(quick: bool) -> list[tuple[str, int, int, int, str]]:
    if quick:
        return [("overlapping", 20_000, 2, 4, "full"), ("blobs", 20_000, 16, 8, "diag")]
    configs = []
    for kind in ("blobs", "overlapping"):
        for d, k in [(2, 4), (2, 8), (16, 3), (16, 8)]:
            for covariance in ("full", "diag", "VVE"):
                configs.append((kind, 20_000, d, k, covariance))
    configs += [("overlapping", 20_000, 16, 5, "tied"), ("overlapping", 20_000, 16, 5, "spherical")]
    return configs


def run_grid(quick: bool, repeat: int) -> None:
    print(
        "| data | n | d | k | model | passes to 1e-6, plain | accelerated | ratio | "
        "default fit, plain: passes / s | accelerated: passes / s | time ratio | "
        "accelerated gap to ℓ* |"
    )
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, n, d, k, covariance in grid(quick):
        x = (blobs if kind == "blobs" else overlapping)(n, d, k)
        r = one_config(x, k, covariance, repeat)
        p, a = r["plain"], r["accel"]
        if p["passes_to"] < 0:  # plain EM stopped (max_iter) before it got there
            plain_to, ratio = f"> {p['passes']}", f"> {p['passes'] / a['passes_to']:.1f}×"
        elif a["passes_to"] > 0:
            plain_to, ratio = str(p["passes_to"]), f"{p['passes_to'] / a['passes_to']:.1f}×"
        else:
            plain_to, ratio = str(p["passes_to"]), "(the start)"
        print(
            f"| {kind} | {n:,} | {d} | {k} | {covariance} | {plain_to} | "
            f"{a['passes_to']} | {ratio} | {p['passes']} / {p['seconds']:.2f} | "
            f"{a['passes']} / {a['seconds']:.2f} | {p['seconds'] / a['seconds']:.1f}× | "
            f"{a['gap']:.0e} |",
            flush=True,
        )


def issue_case(repeat: int) -> None:
    """200,000 × 8, 6 overlapping clusters, one common start: gmm's defaults against
    scikit-learn run on (tol 1e-7) from the same start, time to within 1e-6 of ℓ*."""
    from sklearn.mixture import GaussianMixture as Sk

    n, d, k = 200_000, 8, 6
    x = issue_data(n, d, k, spread=0.8)
    start = common_start(x, k, "full")
    limit = fixed_point(x, k, "full", start, 1500)
    weights, means, covariances = start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk, sk_seconds = timed(
            lambda: Sk(
                k,
                tol=1e-7,
                max_iter=3000,
                weights_init=weights,
                means_init=means,
                precisions_init=precisions(covariances, "full"),
            ).fit(x),
            1,
        )
    # lower_bounds_[t] is the log-likelihood of the parameters entering iteration t + 1
    sk_to = first_within(list(sk.lower_bounds_), limit)
    sk_to_seconds = sk_seconds * (sk_to + 1) / sk.n_iter_ if sk_to >= 0 else float("nan")
    print(f"scikit-learn: {sk.n_iter_} iterations in {sk_seconds:.1f} s", file=sys.stderr)
    rows = []
    for name, accelerate in [("gmm, plain EM (--no-accelerate)", False), ("gmm (defaults)", True)]:
        model, seconds = timed(lambda a=accelerate: gmm_fit(x, k, "full", start, a), repeat)
        gap = abs(model.log_likelihood_ / n - limit) / abs(limit)
        rows.append((name, model.n_iter_, first_within(model.log_likelihood_history_, limit),
                     seconds, gap))  # fmt: skip
    print(f"\nIssue case: {n:,} rows × {d} columns, {k} overlapping clusters, full, one start")
    print(f"ℓ* (mean per row) = {limit:.10f}; total {limit * n:,.1f}\n")
    print("| fit | passes | passes to 1e-6 | wall s | gap to ℓ* | vs scikit-learn's time to 1e-6 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| scikit-learn tol 1e-7 | {sk.n_iter_} | {sk_to + 1} | {sk_seconds:.2f} "
        f"(to 1e-6: {sk_to_seconds:.2f}) | "
        f"{abs(sk.lower_bounds_[-1] - limit) / abs(limit):.0e} | 1 |"
    )
    for name, passes, to, seconds, gap in rows:
        print(
            f"| {name} | {passes} | {to} | {seconds:.2f} | {gap:.0e} | "
            f"{seconds / sk_to_seconds:.2f} |"
        )


def per_iteration() -> None:
    """Seconds per iteration on the issue's case from its start: scikit-learn with BLAS on
    one and on two threads, gmm's plain pass ((time of 11 iterations − time of 1) / 10), to
    turn its iteration counts into times when the machine is quieter than in the long run."""
    from sklearn.mixture import GaussianMixture as Sk
    from threadpoolctl import threadpool_limits

    x = issue_data(200_000, 8, 6, spread=0.8)
    weights, means, covariances = common_start(x, 6, "full")

    def rate(fit) -> float:
        times = []
        for n in (1, 11):
            t0 = time.perf_counter()
            fit(n)
            times.append(time.perf_counter() - t0)
        return (times[1] - times[0]) / 10

    for threads in (1, 2):
        with threadpool_limits(threads), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds = rate(
                lambda n: Sk(6, tol=0, max_iter=n, weights_init=weights, means_init=means,
                             precisions_init=precisions(covariances, "full")).fit(x)
            )  # fmt: skip
        print(f"scikit-learn, BLAS on {threads} thread(s): {seconds:.3f} s per iteration")
    start = (weights, means, covariances)
    seconds = rate(lambda n: gmm_fit(x, 6, "full", start, False, tol=0.0, max_iter=n))
    print(f"gmm, plain pass: {seconds:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--issue", action="store_true", help="only the issue's case")
    parser.add_argument("--grid", action="store_true", help="only the grid")
    parser.add_argument("--rate", action="store_true", help="only seconds per iteration")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.rate:
        per_iteration()
        return
    if not args.issue:
        run_grid(args.quick, args.repeat)
    if not args.quick and not args.grid:
        issue_case(args.repeat)


if __name__ == "__main__":
    main()
