"""Benchmark: one EM pass of the full kernel, on its features or component by component.

    python bench/bench_kernel.py                      # the grid of d and k, one thread
    python bench/bench_kernel.py --d 16,64 --k 4,8 --n 200000 --threads 2

Per (d, k): the same rows and model, one ``stats.em_pass`` through each of the two ways
(``bycomponent.chosen`` forced either way, each with its default chunk size), alternated,
the median over repeats; the ratio says where ``bycomponent.chosen``'s rule belongs. On one
thread the time is the process's CPU time, so that on a shared machine the time others hold
the core is not counted. tests/test_bycomponent.py checks that both give the same
statistics. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from gmmcli.engine import bycomponent, stats
from gmmcli.engine.chunk import Rows
from gmmcli.engine.covariance import get_strategy
from gmmcli.engine.params import MixtureParams


def model_and_rows(n: int, d: int, k: int, covariance: str, dtype: str):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d) * 4
    strategy = get_strategy(covariance)
    a = rng.normal(size=(k, d, d))
    cov = a @ np.swapaxes(a, 1, 2) / d + np.eye(d)
    if strategy.shared:
        cov = cov[0]
    params = MixtureParams(strategy.name, np.full(k, 1.0 / k), x[rng.choice(n, k)], cov)
    shift = x.mean(axis=0)
    rows = Rows(x, shift, dtype, cache=Rows.fits_budget(n, d, k, dtype))
    return stats.prepare(params, strategy, shift), rows


def seconds(model, rows, by_component: bool, chunk_size: int, threads: int) -> float:
    saved = bycomponent.chosen
    bycomponent.chosen = lambda strategy, d, k: by_component and strategy.pairwise
    clock = time.process_time if threads == 1 else time.perf_counter
    try:
        t0 = clock()
        with stats.single_threaded_blas():
            stats.em_pass(
                model, rows, chunk_size, n_worst=model.params.n_components, threads=threads
            )
        return clock() - t0
    finally:
        bycomponent.chosen = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", default="8,16,24,32,48,64")
    parser.add_argument("--k", default="2,4,8,16,32")
    parser.add_argument("--covariance", default="full")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=0, help="0: the default")
    args = parser.parse_args()
    print("| d | k | features ms | by component ms | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for d in map(int, args.d.split(",")):
        for k in map(int, args.k.split(",")):
            model, rows = model_and_rows(args.n, d, k, args.covariance, args.dtype)
            size = {}
            for way in (False, True):
                saved = bycomponent.chosen
                bycomponent.chosen = lambda strategy, d_, k_, way=way: way and strategy.pairwise
                size[way] = args.chunk_size or stats.default_chunk_size(k, d, args.covariance)
                bycomponent.chosen = saved
            times = {False: [], True: []}
            with threadpool_limits(1):
                for way in (False, True):  # warm up: buffers, caches
                    seconds(model, rows, way, size[way], args.threads)
                for _ in range(args.repeats):
                    for way in (False, True):
                        times[way].append(seconds(model, rows, way, size[way], args.threads))
            lifted, by = (statistics.median(times[w]) * 1e3 for w in (False, True))
            print(f"| {d} | {k} | {lifted:.1f} | {by:.1f} | {lifted / by:.2f} |", flush=True)


if __name__ == "__main__":
    main()
