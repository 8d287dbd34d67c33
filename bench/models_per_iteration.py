"""Benchmark: the time per EM iteration of each of the fourteen covariance models, against full.

    python bench/models_per_iteration.py                    # n = 200,000, d = 16, k = 8
    python bench/models_per_iteration.py --n 200000 --d 16 --k 8 --threads 1 --repeats 3

Issue 14 asks that every covariance model be no slower per iteration than full. Each model
runs plain EM from its own start (the model's M-step of a k-means++ partition) on bench_em's
blobs, timed as bench_em times it ((t(1 + N) − t(1)) / N, the median over repeats), with the
BLAS held to ``--threads``. The models run in turn, full first and again last, so that a
drift of the machine shows. Never part of the test suite.
"""

from __future__ import annotations

import argparse

from bench_em import blobs, common_start, fit_gmm, per_iteration
from threadpoolctl import threadpool_limits


def main() -> None:
    from gmmcli.engine.covariance import covariance_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    x = blobs(args.n, args.d, args.k)
    models = ["full", *[m for m in covariance_names() if m != "full"], "full"]
    times = []
    with threadpool_limits(args.threads):
        for model in models:
            start = common_start(x, args.k, model)
            seconds, _ = per_iteration(
                lambda it, m=model, s=start: fit_gmm(x, args.k, m, s, it, threads=args.threads),
                args.iterations,
                args.repeats,
            )
            times.append(seconds)
    full = min(times[0], times[-1])
    print(
        f"n = {args.n:,}, d = {args.d}, k = {args.k}, {args.threads} thread(s), plain EM; "
        f"median of {args.repeats} (full first and last: {times[0] * 1e3:.1f} and "
        f"{times[-1] * 1e3:.1f} ms)\n"
    )
    print("| model | ms per iteration | against full |")
    print("|---|---|---|")
    for model, seconds in zip(models[:-1], times[:-1], strict=True):
        print(f"| {model} | {seconds * 1e3:.1f} | {seconds / full:.2f}× |")


if __name__ == "__main__":
    main()
