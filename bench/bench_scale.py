"""Benchmark: time per EM iteration of the three engines — in memory, Dask (LocalCluster of 2
worker processes) and stream (a CSV read in blocks) — and Spark MLlib on local[2].

    python bench/bench_scale.py                      # n = 200k, 1M; writes bench/RESULTS.md
    python bench/bench_scale.py --sizes 200000,1000000,5000000
    python bench/bench_scale.py --demo /tmp/big.csv  # the bounded-memory fit of a big CSV

Method: d = 16, k = 8, full covariance, make_blobs data (bench_spark's, so Spark sees the same
rows). One common start, gmm's k-means++ parameters, given to every engine; tol = 0 and a
fixed number of iterations; time per iteration = (t(1 + N iterations) − t(1)) / N, the
median over repeats, so loading, summary and set-up cancel. Dask: the rows scattered to the
workers in 4 partitions before timing (as `gmm fit --engine dask` keeps them there). Stream:
the rows written once to a CSV in /tmp; every iteration parses it again, which is the cost
of bounded memory. Spark: bench/bench_spark.py in its own venv (SPARK_PYTHON, default
/work/spark-venv/bin/python), skipped with a note when absent. Never part of the tests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SPARK_PYTHON = os.environ.get("SPARK_PYTHON", "/work/spark-venv/bin/python")
D, K = 16, 8


def make_blobs(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    try:
        from bench_spark import make_blobs as spark_blobs
    except ImportError:  # the Spark helper is optional; same recipe
        rng = np.random.default_rng(seed)
        centres = rng.normal(scale=8.0 / np.sqrt(2.0 * d), size=(k, d))
        x = rng.standard_normal((n, d))
        x += centres[rng.integers(k, size=n)]
        return x
    return spark_blobs(n, d, k, seed)


def per_iteration(run, n_iter: int, repeats: int) -> tuple[float, float]:
    """Median over repeats of (t(1 + N) − t(1)) / N, and the last mean log-likelihood."""
    samples, last = [], float("nan")
    for _ in range(repeats):
        t_one, _ = run(1)
        t_many, last = run(1 + n_iter)
        samples.append(max(t_many - t_one, 0.0) / n_iter)
    return statistics.median(samples), last


def timed(make_source, options_for, start):
    from gmmcli.engine.em import fit_source
    from gmmcli.engine.stats import single_threaded_blas

    def run(max_iter: int) -> tuple[float, float]:
        source = make_source()
        t0 = time.perf_counter()
        with single_threaded_blas():
            result = fit_source(source, options_for(max_iter), start)
        return time.perf_counter() - t0, result.best.history[-2]

    return run


def spark_seconds(x: np.ndarray, n_iter: int, repeats: int) -> tuple[float | None, str]:
    if not (HERE / "bench_spark.py").exists():
        return None, "bench/bench_spark.py not present"
    if not os.path.exists(SPARK_PYTHON):
        return None, f"no pyspark venv at {SPARK_PYTHON}"
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as folder:
        path = os.path.join(folder, "x.npy")
        np.save(path, x)
        command = [SPARK_PYTHON, str(HERE / "bench_spark.py"), "--npy", path, "--k", str(K),
                   "--json", "--repeats", str(repeats), "--extra-iters", str(n_iter)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["?"]
        return None, f"Spark failed: {tail[0]}"
    result = json.loads(done.stdout)
    return result["seconds_per_iteration"], (
        f"Spark {result['spark_version']}, Java {result['java_version']}, {result['master']}"
    )


def bench_size(n: int, n_iter: int, repeats: int, client, spark: bool) -> dict:
    from gmmcli import GaussianMixture
    from gmmcli.dataset import CsvBlocks, SpilledBlocks
    from gmmcli.engine.distributed import DaskSource
    from gmmcli.engine.em import EMOptions
    from gmmcli.engine.params import MixtureParams
    from gmmcli.engine.sources import ArraySource, BlockSource
    from gmmcli.scale import open_input
    from gmmcli.tableoptions import TableOptions

    x = make_blobs(n, D, K)
    init = GaussianMixture(K, max_iter=0, seed=1).fit(x)
    start = MixtureParams("full", init.weights_, init.means_, init.covariances_)

    def options_for(max_iter: int) -> EMOptions:
        return EMOptions(K, tol=0.0, max_iter=max_iter)

    row: dict = {"n": n}
    memory = timed(lambda: ArraySource(x, 2), options_for, start)
    row["memory"], ll_memory = per_iteration(memory, n_iter, repeats)
    print(f"n={n:,}: memory {row['memory'] * 1000:.1f} ms", flush=True)

    parts = client.scatter(np.array_split(x, 4), broadcast=False)
    dask = timed(lambda: DaskSource(client, parts, D), options_for, start)
    row["dask"], ll_dask = per_iteration(dask, n_iter, repeats)
    row["dask_ll_rel"] = abs(ll_dask - ll_memory) / abs(ll_memory)
    client.cancel(parts)  # free the workers for the next size
    print(f"n={n:,}: dask {row['dask'] * 1000:.1f} ms", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir="/tmp") as folder:
        path = os.path.join(folder, "x.csv")
        write_csv(x, path)
        row["csv_mb"] = os.path.getsize(path) / 1e6
        table = TableOptions()
        inputs, layout = open_input("stream", path, table)

        def stream_source(spill: bool) -> Callable[[], BlockSource]:
            def make() -> BlockSource:
                blocks = CsvBlocks(inputs, layout, table)
                return BlockSource(SpilledBlocks(blocks, D) if spill else blocks, D, threads=2)

            return make

        # as `gmm fit --engine stream` runs: the CSV parsed once, later passes from the spill
        stream = timed(stream_source(True), options_for, start)
        row["stream"], ll_stream = per_iteration(stream, n_iter, max(1, repeats - 1))
        row["stream_ll_rel"] = abs(ll_stream - ll_memory) / abs(ll_memory)
        # every pass parsing the CSV again (no room to spill)
        parse = timed(stream_source(False), options_for, start)
        row["stream_parse"], _ = per_iteration(parse, n_iter, max(1, repeats - 1))
    print(
        f"n={n:,}: stream {row['stream'] * 1000:.1f} ms "
        f"(parsing every pass {row['stream_parse'] * 1000:.1f} ms)",
        flush=True,
    )
    if spark:
        row["spark"], row["spark_note"] = spark_seconds(x, n_iter, repeats)
        print(f"n={n:,}: spark {row['spark']} ({row['spark_note']})", flush=True)
    return row


def write_csv(x: np.ndarray, path: str) -> None:
    """The rows exactly (shortest round-trip form), through pyarrow's writer."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    table = pa.table({f"x{j}": x[:, j] for j in range(x.shape[1])})
    pa_csv.write_csv(table, path)


# -- the bounded-memory demo ------------------------------------------------------------------
def demo(path: str, limit: str, max_iter: int) -> dict:
    """`gmm fit BIG.csv --engine stream` under prlimit --as, timed with /usr/bin/time -v."""
    command = ["prlimit", f"--as={limit}", "/usr/bin/time", "-v", sys.executable, "-m",
               "gmmcli", "fit", path, "-k", str(K), "--engine", "stream", "--tol", "0",
               "--max-iter", str(max_iter), "-o", "/tmp/bench-scale-demo.json"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    times = [float(m) for m in re.findall(r"│\s+\d+ │[^│]+│[^│]+│\s+([\d.]+) │", done.stderr)]
    return {
        "command": " ".join(command),
        "status": done.returncode,
        "wall_seconds": wall,
        "peak_rss_mib": int(peak.group(1)) / 1024 if peak else None,
        "pass_ms": times,
        "size_gb": os.path.getsize(path) / 1e9,
        "stderr_tail": done.stderr.strip().splitlines()[-30:],
    }


def report(rows: list[dict], n_iter: int, repeats: int, spark_note: str) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        f"## Scaling out: memory, Dask and stream engines ({today})",
        "",
        f"Command: `python bench/bench_scale.py --sizes {','.join(str(r['n']) for r in rows)}`"
        f"; d = {D}, k = {K}, full; time per iteration = (t(1 + {n_iter}) − t(1)) / {n_iter}, "
        f"median of {repeats} (stream: {max(1, repeats - 1)}). Memory: 2 threads. Dask: "
        "LocalCluster, 2 worker processes × 1 thread, rows in 4 partitions on the workers. "
        "Stream: the CSV parsed on the first pass and spilled to a temporary file, later "
        "passes read back from it (as `gmm fit --engine stream` does); 'parse' is every pass "
        "parsing the CSV again (the fallback when there is no room to spill). "
        f"Spark: {spark_note}.",
        "",
        "| n | memory | Dask (2 workers) | Dask / memory | stream | stream, parse | CSV MB | "
        "Spark local[2] | Spark / Dask | LL Dask vs memory (rel) | LL stream vs memory (rel) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        spark = r.get("spark")
        lines.append(
            f"| {r['n']:,} | {r['memory'] * 1000:.1f} ms | {r['dask'] * 1000:.1f} ms | "
            f"{r['dask'] / r['memory']:.2f}× | {r['stream'] * 1000:.0f} ms | "
            f"{r['stream_parse'] * 1000:.0f} ms | {r['csv_mb']:.0f} | "
            + (f"{spark * 1000:.0f} ms | {spark / r['dask']:.1f}× | " if spark else "– | – | ")
            + f"{r['dask_ll_rel']:.1e} | {r['stream_ll_rel']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200000,1000000")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--print-only", action="store_true")
    parser.add_argument("--demo", help="a big CSV: fit it with --engine stream under prlimit")
    parser.add_argument("--limit", default="1G", help="prlimit --as for --demo")
    parser.add_argument("--demo-iters", type=int, default=3)
    args = parser.parse_args()
    if args.demo:
        print(json.dumps(demo(args.demo, args.limit, args.demo_iters), indent=2))
        return

    import logging

    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR,
    )  # fmt: skip
    client = Client(cluster)
    rows = []
    try:
        for n in [int(v) for v in args.sizes.split(",")]:
            rows.append(bench_size(n, args.iters, args.repeats, client, not args.no_spark))
    finally:
        client.close()
        cluster.close()
    notes = {r.get("spark_note") for r in rows if r.get("spark_note")}
    spark_note = "; ".join(sorted(notes)) if notes else "not run (--no-spark)"
    text = report(rows, args.iters, args.repeats, spark_note)
    print(text)
    print(json.dumps(rows, indent=1))
    if not args.print_only:
        with open(args.out, "a") as out:
            out.write("\n" + text)


if __name__ == "__main__":
    main()
