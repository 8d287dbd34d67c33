"""Benchmark helper: time per EM iteration of Spark MLlib's GaussianMixture, a peer for gmm.

pyspark is no dependency of gmm, so this runs with a venv of its own (Java 17 or later on PATH,
or JAVA_HOME set):

    python3 -m venv /work/spark-venv && /work/spark-venv/bin/pip install pyspark numpy pandas
    /work/spark-venv/bin/python bench/bench_spark.py --n 200000 --d 16 --k 8
    /work/spark-venv/bin/python bench/bench_spark.py --npy data.npy --k 8 --json

With --npy the rows are that (n, d) float array, so a caller can time Spark on the very data it
gives its own engines; without it, make_blobs(n, d, k, seed). With --json, stdout carries the
one JSON object and nothing else: everything Spark, the JVM and the Python workers print goes
to stderr.

Method: Spark runs on local[2] in one SparkSession, made once and reused. The rows are a
DataFrame of one Vector column, cached and counted before any timing. GaussianMixture runs
with tol = 0 (Spark's only covariance type, full), so it does exactly maxIter iterations; one
untimed fit warms the JVM up; then, per repeat, a fit with maxIter = 1 and one with
maxIter = 1 + N. Time per iteration = (median t(1 + N) − median t(1)) / N, so Spark's set-up,
its sampling initialisation and its job scheduling cancel. (Should Spark reach an exact fixed
point and stop early despite tol = 0, N is the iterations it really ran, with a warning.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MASTER = "local[2]"
_SPARK = None  # the one SparkSession of this process


def make_blobs(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """k well-separated Gaussian blobs, float64 (n, d), rows in random order.

    Each blob has identity covariance; the centres are N(0, s²) per coordinate with
    s = 8 / √(2d), so two centres are typically 8 units apart (at d = 16, k = 8, seed 0: 4.8
    to 9.8), whatever d. Blob sizes are multinomial. Not further apart on purpose: when no
    point has a responsibility above 0 for another blob, EM reaches an exact fixed point in a
    few iterations and Spark, even with tol = 0, stops there.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0 / np.sqrt(2.0 * d), size=(k, d))
    x = rng.standard_normal((n, d))
    x += centres[rng.integers(k, size=n)]
    return x


def spark_session(driver_memory: str = "8g"):
    """The process's SparkSession on local[2], made on first use.

    In local mode the executors live in the driver's JVM, so the driver's heap holds the
    cached rows: 8 GiB is ample for 5M × 16 doubles (640 MB raw). driver_memory only counts
    on the first call, which starts the JVM.
    """
    global _SPARK
    if _SPARK is None:
        from pyspark.sql import SparkSession

        # the host name here resolves to loopback; keep Spark's driver on loopback too
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

        _SPARK = (
            SparkSession.builder.master(MASTER)
            .appName("gmm-bench-spark")
            .config("spark.driver.memory", driver_memory)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate()
        )
        _SPARK.sparkContext.setLogLevel("ERROR")
    return _SPARK


def _cached_frame(spark, npy_path: str):
    """A cached and counted DataFrame with one Vector column "features", rows of the .npy.

    Each partition's Python worker reads its own slice of the file (memory-mapped), so the
    rows never pass through the driver as one big Python list.
    """
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import StructField, StructType

    n = np.load(npy_path, mmap_mode="r").shape[0]
    parts = spark.sparkContext.defaultParallelism
    bounds = np.linspace(0, n, parts + 1).astype(int).tolist()

    def rows(part):  # a closure, so cloudpickle ships it by value to the workers
        import numpy as np
        from pyspark.ml.linalg import Vectors

        data = np.load(npy_path, mmap_mode="r")
        for start in range(bounds[part], bounds[part + 1], 65536):
            block = np.array(data[start : min(start + 65536, bounds[part + 1])], dtype=np.float64)
            for row in block:
                yield (Vectors.dense(row),)

    schema = StructType([StructField("features", VectorUDT(), False)])
    rdd = spark.sparkContext.parallelize(range(parts), parts).flatMap(rows)
    frame = spark.createDataFrame(rdd, schema).cache()
    if frame.count() != n:
        raise RuntimeError("Spark's cached row count differs from the data's")
    return frame, parts


def spark_npy_seconds(
    npy_path: str,
    k: int,
    repeats: int = 3,
    extra_iters: int = 5,
    seed: int = 0,
    driver_memory: str = "8g",
) -> dict:
    """spark_iteration_seconds on the rows of a .npy file of shape (n, d)."""
    import pyspark
    from pyspark.ml.clustering import GaussianMixture

    n, d = np.load(npy_path, mmap_mode="r").shape
    spark = spark_session(driver_memory)
    t0 = time.perf_counter()
    frame, parts = _cached_frame(spark, npy_path)
    load_seconds = time.perf_counter() - t0

    def fit(max_iter: int) -> tuple[float, int]:
        """Seconds for one fit, and the iterations Spark ran."""
        estimator = GaussianMixture(k=k, tol=0.0, maxIter=max_iter, seed=seed)
        t0 = time.perf_counter()
        model = estimator.fit(frame)
        seconds = time.perf_counter() - t0
        return seconds, model.summary.numIter

    try:
        fit(1 + extra_iters)  # warm-up: JIT, Python workers, broadcast machinery
        t_one, t_many, iters = [], [], []
        for _ in range(repeats):
            seconds, _ = fit(1)
            t_one.append(seconds)
            seconds, done = fit(1 + extra_iters)
            t_many.append(seconds)
            iters.append(done)
    finally:
        frame.unpersist()
    # tol = 0 still stops early if the log-likelihood repeats exactly (an exact fixed point):
    # divide by the iterations Spark really ran beyond the first, and say so
    timed = int(statistics.median(iters)) - 1
    if timed != extra_iters:
        print(
            f"warning: Spark stopped after {timed + 1} of {1 + extra_iters} iterations "
            "(exact convergence); the figure is over those",
            file=sys.stderr,
        )
    if timed < 1:
        raise RuntimeError("Spark converged after one iteration: nothing left to time")
    one, many = statistics.median(t_one), statistics.median(t_many)
    return {
        "tool": "spark-mllib",
        "seconds_per_iteration": (many - one) / timed,
        "median_seconds_one": one,  # maxIter = 1
        "median_seconds_many": many,  # maxIter = 1 + extra_iters
        "seconds_one": t_one,
        "seconds_many": t_many,
        "extra_iters": extra_iters,
        "iterations_timed": timed,  # extra_iters unless Spark converged exactly
        "repeats": repeats,
        "n": int(n),
        "d": int(d),
        "k": k,
        "covariance": "full",
        "master": MASTER,
        "partitions": parts,
        "load_and_cache_seconds": load_seconds,
        "spark_version": spark.version,
        "pyspark_version": pyspark.__version__,
        "java_version": spark.sparkContext._jvm.System.getProperty("java.version"),
    }


def spark_iteration_seconds(
    x: np.ndarray, k: int, repeats: int = 3, extra_iters: int = 5, seed: int = 0
) -> dict:
    """Seconds per EM iteration of Spark MLlib's GaussianMixture on the rows of x (n, d).

    (median t(maxIter = 1 + extra_iters) − median t(maxIter = 1)) / extra_iters, tol = 0,
    the data cached in Spark beforehand; see the module's docstring. The dict also holds both
    medians, the versions of Spark, pyspark and Java, and how long loading and caching took.
    """
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as folder:
        path = str(Path(folder) / "x.npy")
        np.save(path, np.ascontiguousarray(x, dtype=np.float64))
        return spark_npy_seconds(path, k, repeats, extra_iters, seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="rows of make_blobs data")
    parser.add_argument("--d", type=int, default=16, help="columns of make_blobs data")
    parser.add_argument("--k", type=int, default=8, help="components to fit (and blobs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extra-iters", type=int, default=5, help="N in t(1 + N) − t(1)")
    parser.add_argument("--seed", type=int, default=0, help="for the data and for Spark")
    parser.add_argument("--npy", help="time on the (n, d) array in this .npy (ignores --n, --d)")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    # stdout is the result's alone: fd 1 now points at stderr, for us, the JVM and the workers
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)
    if args.npy:
        result = spark_npy_seconds(
            args.npy, args.k, args.repeats, args.extra_iters, args.seed, args.driver_memory
        )
    else:
        spark_session(args.driver_memory)
        x = make_blobs(args.n, args.d, args.k, args.seed)
        result = spark_iteration_seconds(x, args.k, args.repeats, args.extra_iters, args.seed)
    if args.json:
        text = json.dumps(result) + "\n"
    else:
        text = (
            f"Spark MLlib GaussianMixture, n={result['n']:,} d={result['d']} k={result['k']} "
            f"({result['master']}, Spark {result['spark_version']}, Java "
            f"{result['java_version']}): {result['seconds_per_iteration'] * 1000:.1f} ms per "
            f"iteration (median t(1) = {result['median_seconds_one']:.2f} s, "
            f"t({1 + args.extra_iters}) = {result['median_seconds_many']:.2f} s, "
            f"{args.repeats} repeats)\n"
        )
    with os.fdopen(result_fd, "w") as out:
        out.write(text)


if __name__ == "__main__":
    main()
