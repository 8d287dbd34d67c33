"""Benchmark: time per EM iteration of gmm against scikit-learn and mlpack, in one run.

    python bench/bench_em.py                 # the whole grid, writes bench/RESULTS.md
    python bench/bench_em.py --quick         # a few configurations, prints only
    python bench/bench_em.py --only 200000,16,8,full
    python bench/bench_em.py --threads 1     # one thread only (default: 1 and all cores)

Per configuration: stretched Gaussian blobs generated in memory; one common start (gmm's
k-means++ initialisation) given to gmm and to scikit-learn; tol = 0 and a fixed number of
iterations; time per iteration = (time(1 + N iterations) − time(1 iteration)) / N, so set-up
and initialisation cancel; the median over repeats. mlpack's gmm_train cannot take given
parameters: each call starts afresh from its own k-means (seeded, so every call does the same
work; with input_model it only takes the model's shape) and stops when EM stands still (the
diagonal model is Armadillo's gmm_diag, which stops once the mean log-likelihood changes by
at most eps, whatever the tolerance; on most of these blobs after its second iteration), so it is
timed as t(2 iterations) − t(1 iteration), the one iteration it always runs — its (t(1 + N)
− t(1)) / N was that iteration divided by N. gmm's log-likelihood after N iterations is
checked against scikit-learn's from the same start. Peak memory is measured in a fresh
process per tool (VmHWM after resetting it once the data exists), so it is what the fit
itself adds to the data. Never part of the test suite.

Each configuration runs on one thread (gmm's ``threads=1`` and every BLAS/OpenMP pool held to
one thread) and on all cores. Beside the times stands the machine's limit for one EM
iteration: max(FLOPs ÷ measured dgemm rate, bytes ÷ measured memory bandwidth), both
measured here with the same number of threads (``machine_limits``). The FLOPs and bytes are
the least any implementation needs (``least_work``), not what gmm does, so "gmm / limit" says
how far the kernel is from what this machine could do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024


# -- data and starts ------------------------------------------------------------------------
def blobs(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """Stretched blobs: per cluster a random rotation and axis scales 0.5–5, centres ~N(0, 8²).

    Written block by block into one array, so making the data costs no more than the data.
    """
    rng = np.random.default_rng(seed)
    x = np.empty((n, d))
    bounds = np.linspace(0, n, k + 1).astype(int)
    for c in range(k):
        rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
        scales = rng.uniform(0.5, 5.0, d)
        centre = rng.normal(size=d) * 8.0
        for start in range(bounds[c], bounds[c + 1], 65536):
            stop = min(start + 65536, bounds[c + 1])
            block = rng.normal(size=(stop - start, d)) * scales
            x[start:stop] = block @ rotation + centre
    return x


def common_start(x: np.ndarray, k: int, covariance: str):
    from gmmcli import GaussianMixture

    start = GaussianMixture(k, covariance_type=covariance, max_iter=0, seed=1).fit(x)
    return start.weights_, start.means_, start.covariances_


def precisions(covariances: np.ndarray, covariance: str) -> np.ndarray:
    if covariance in ("full", "tied"):
        return np.linalg.inv(covariances)
    return 1.0 / covariances


# -- one timed fit per tool -----------------------------------------------------------------
# -- what the machine can do ----------------------------------------------------------------
def _median_seconds(work, repeats: int = 5) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def machine_limits(threads: int) -> tuple[float, float]:
    """(dgemm FLOP/s, memory bandwidth in bytes/s) on ``threads`` threads, measured.

    dgemm: a 2048 × 2048 product in BLAS held to ``threads`` threads. Bandwidth: copying a
    512 MiB array (read + write counted) in ``threads`` equal parts side by side (numpy
    releases the GIL while it copies).
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    size = 2048
    a = np.random.default_rng(0).normal(size=(size, size))
    with threadpool_limits(threads):
        a @ a  # warm up
        flops = 2 * size**3 / _median_seconds(lambda: a @ a)
    source = np.ones(64 * MiB)  # 512 MiB of float64
    target = np.empty_like(source)
    parts = np.array_split(np.arange(source.size), threads)
    spans = [slice(p[0], p[-1] + 1) for p in parts]
    with ThreadPoolExecutor(threads) as pool:

        def copy() -> None:
            list(pool.map(lambda s: np.copyto(target[s], source[s]), spans))

        copy()
        bandwidth = 2 * source.nbytes / _median_seconds(copy)
    return flops, bandwidth


def least_work(n: int, d: int, k: int, covariance: str) -> tuple[float, float]:
    """(FLOPs, bytes) one EM iteration cannot do without, in float64.

    Per row and component: the E-step's quadratic form and the M-step's weighted moments.
    full: a triangular solve z = L_kᵀ(x − μ_k) (d² FLOPs) and a symmetric rank-one update
    (d² FLOPs); tied: one solve per row (d²) and k shifts of it (2d each), the pooled scatter
    of the rows (d² per row; it does not change between iterations, but it is counted) and
    k weighted means; diag: (x − μ)² · λ (4d) and Σ r x, Σ r x² (4d); spherical: ‖x‖² once
    per row, then x·μ_k (2d) and Σ r x (2d). Plus an exp and a log per row and component
    (counted as 10 FLOPs each). Bytes: the rows read once (a fused pass keeps nothing else
    per row in memory).
    """
    per_pair = {
        "full": 2 * d * d,
        "tied": 4 * d,
        "diag": 8 * d,
        "spherical": 4 * d,
    }[covariance]
    per_row = {"tied": 2 * d * d, "spherical": 2 * d}.get(covariance, 0)
    flops = n * k * (per_pair + 20) + n * per_row
    return float(flops), float(n * d * 8)


def limit_seconds(n, d, k, covariance, rates: tuple[float, float]) -> float:
    flops, moved = least_work(n, d, k, covariance)
    peak, bandwidth = rates
    return max(flops / peak, moved / bandwidth)


def fit_gmm(x, k, covariance, start, n_iter, dtype="float64", threads=None):
    import inspect

    from gmmcli import GaussianMixture

    weights, means, covariances = start
    # plain EM, one pass per iteration (where the checkout has acceleration at all)
    plain = (
        {"accelerate": False}
        if "accelerate" in inspect.signature(GaussianMixture).parameters
        else {}
    )
    model = GaussianMixture(
        k,
        covariance_type=covariance,
        tol=0.0,
        max_iter=n_iter,
        weights_init=weights,
        means_init=means,
        covariances_init=covariances,
        dtype=dtype,
        threads=threads,
        **plain,
    )
    t0 = time.perf_counter()
    model.fit(x)
    seconds = time.perf_counter() - t0
    # history[t] is after t M-steps; scikit-learn's lower_bound_ is history[n_iter - 1]
    return seconds, model.log_likelihood_history_[n_iter - 1]


def fit_sklearn(x, k, covariance, start, n_iter):
    from sklearn.mixture import GaussianMixture

    weights, means, covariances = start
    model = GaussianMixture(
        k,
        covariance_type=covariance,
        tol=0.0,
        max_iter=n_iter,
        weights_init=weights,
        means_init=means,
        precisions_init=precisions(covariances, covariance),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        model.fit(x)
        seconds = time.perf_counter() - t0
    return seconds, model.lower_bound_


def mlpack_start(x, k, covariance):
    import mlpack

    out = mlpack.gmm_train(
        input_=x,
        gaussians=k,
        diagonal_covariance=covariance == "diag",
        max_iterations=1,
        kmeans_max_iterations=5,
        tolerance=1e-300,
        seed=1,
    )
    return out["output_model"]


def fit_mlpack(x, k, covariance, model, n_iter):
    import mlpack

    t0 = time.perf_counter()
    mlpack.gmm_train(
        input_=x,
        gaussians=k,
        diagonal_covariance=covariance == "diag",
        input_model=model,
        max_iterations=n_iter,
        tolerance=1e-300,
        seed=1,  # the same k-means start in every call, so t(2) − t(1) is one EM iteration
    )
    return time.perf_counter() - t0, float("nan")


def per_iteration(fit, n_iter: int, repeats: int) -> tuple[float, float]:
    """Median over repeats of (t(1 + N) − t(1)) / N, and the last log-likelihood."""
    samples, ll = [], float("nan")
    for _ in range(repeats):
        t_one, _ = fit(1)
        t_many, ll = fit(1 + n_iter)
        samples.append(max(t_many - t_one, 0.0) / n_iter)
    return statistics.median(samples), ll


def have_mlpack() -> bool:
    try:
        import mlpack  # noqa: F401
    except ImportError:
        return False
    return True


# -- peak memory, one fresh process per tool -------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def memory_child(tool: str, n: int, d: int, k: int, covariance: str, n_iter: int) -> None:
    """Run in a fresh process: make the data, reset the peak, fit, print the peak added."""
    x = blobs(n, d, k)
    start = common_start(x, k, covariance) if tool != "mlpack" else None
    model = mlpack_start(x[:2000], k, covariance) if tool == "mlpack" else None
    if tool == "sklearn":
        import sklearn.mixture  # noqa: F401  (imports before the baseline)
    baseline = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    if tool == "gmm":
        fit_gmm(x, k, covariance, start, n_iter)
    elif tool == "gmm-float32":
        fit_gmm(x, k, covariance, start, n_iter, dtype="float32")
    elif tool == "sklearn":
        fit_sklearn(x, k, covariance, start, n_iter)
    else:
        fit_mlpack(x, k, covariance, model, n_iter)
    print(json.dumps({"added": _status("VmHWM") - baseline, "data": x.nbytes}))


def peak_memory(tool: str, n: int, d: int, k: int, covariance: str) -> dict | None:
    command = [sys.executable, __file__, "--memory-child", tool, str(n), str(d), str(k), covariance]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if result.returncode != 0:
        print(f"  memory {tool}: failed: {result.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- the command line around the engine ------------------------------------------------------
def command_seconds(args: list[str], repeats: int = 5, stdin: str | None = None) -> float:
    gmm = str(Path(sys.executable).with_name("gmm"))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with open(stdin or os.devnull, "rb") as handle:
            subprocess.run(
                [gmm, *args],
                stdin=handle,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def cli_figures() -> list[tuple[str, float, str]]:
    """gmm --help, predict on 10 rows, predict of 1M rows × 8 columns with k = 8."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        x = blobs(1_000_000, 8, 8)
        big = folder / "big.csv"
        np.savetxt(
            big,
            x,
            delimiter=",",
            fmt="%.6f",
            header=",".join(f"c{i}" for i in range(8)),
            comments="",
        )
        small = folder / "small.csv"
        small.write_text("".join(big.open().readlines()[:11]))
        model = folder / "model.json"
        subprocess.run(
            [
                str(Path(sys.executable).with_name("gmm")),
                "fit",
                str(small),
                "-k",
                "1",
                "-q",
                "-o",
                str(model),
            ],
            check=True,
        )
        sample = x[::10]
        sample_csv = folder / "sample.csv"
        np.savetxt(
            sample_csv,
            sample,
            delimiter=",",
            fmt="%.6f",
            header=",".join(f"c{i}" for i in range(8)),
            comments="",
        )
        subprocess.run(
            [
                str(Path(sys.executable).with_name("gmm")),
                "fit",
                str(sample_csv),
                "-k",
                "8",
                "-q",
                "-o",
                str(model),
            ],
            check=True,
        )
        rows.append(("gmm --help", command_seconds(["--help"]), "target ≤ 0.3 s"))
        rows.append(
            (
                "gmm predict, 10 rows",
                command_seconds(["predict", str(model), str(small)]),
                "target ≤ 0.6 s",
            )
        )
        rows.append(
            (
                "gmm predict, 1M rows × 8 columns, k = 8 (CSV out)",
                command_seconds(["predict", str(model), str(big)], repeats=3),
                "target ≤ 2 s",
            )
        )
        rows.append(
            (
                "gmm loglik, 1M rows × 8 columns, k = 8",
                command_seconds(["loglik", str(model), str(big)], repeats=3),
                "",
            )
        )
    return rows


# -- the grid --------------------------------------------------------------------------------
def grid(quick: bool) -> list[tuple[int, int, int, str]]:
    if quick:
        return [(200_000, 16, 8, "full"), (200_000, 16, 8, "diag")]
    configs = [
        (200_000, d, k, c) for d in (2, 16, 64) for k in (4, 8, 32) for c in ("full", "diag")
    ]
    configs += [(200_000, 16, 8, "tied"), (200_000, 16, 8, "spherical")]
    configs += [(1_000_000, d, 8, c) for d in (2, 16, 64) for c in ("full", "diag")]
    return configs


def run_config(n, d, k, covariance, repeats, use_mlpack, mlpack_limit, threads, rates):
    """One configuration on ``threads`` threads (1, or None for all cores)."""
    from threadpoolctl import threadpool_limits

    x = blobs(n, d, k)
    start = common_start(x, k, covariance)
    n_iter = 5 if n * d * d * k <= 200_000 * 16 * 16 * 8 else 3
    row = {"n": n, "d": d, "k": k, "covariance": covariance, "n_iter": n_iter}
    row["threads"] = threads or os.cpu_count()
    row["limit"] = limit_seconds(n, d, k, covariance, rates)
    with threadpool_limits(threads):
        row["gmm"], ll_gmm = per_iteration(
            lambda it: fit_gmm(x, k, covariance, start, it, threads=threads), n_iter, repeats
        )
        row["gmm32"], ll_32 = per_iteration(
            lambda it: fit_gmm(x, k, covariance, start, it, "float32", threads), n_iter, repeats
        )
        row["sklearn"], ll_sk = per_iteration(
            lambda it: fit_sklearn(x, k, covariance, start, it), n_iter, repeats
        )
        row["ll_rel_sklearn"] = abs(ll_gmm - ll_sk) / abs(ll_sk)
        row["ll_rel_float32"] = abs(ll_32 - ll_gmm) / abs(ll_gmm)
        row["mlpack"] = None
        row["mlpack_note"] = ""
        if use_mlpack and covariance in ("full", "diag"):
            model = mlpack_start(x, k, covariance)  # loads mlpack's OpenMP and BLAS, so
            with threadpool_limits(threads):  # they are held to the thread count too
                t_one, _ = fit_mlpack(x, k, covariance, model, 1)
                if t_one > mlpack_limit:
                    row["mlpack_note"] = f"skipped: one iteration took {t_one:.0f} s"
                else:  # t(2) − t(1): mlpack stops once EM stands still (module's note)
                    row["mlpack"], _ = per_iteration(
                        lambda it: fit_mlpack(x, k, covariance, model, it), 1, repeats
                    )
        elif not use_mlpack:
            row["mlpack_note"] = "mlpack not installed"
        else:
            row["mlpack_note"] = "no such covariance type in mlpack"
    return row


def fmt_ms(seconds):
    return "–" if seconds is None else f"{seconds * 1000:.1f}"


def fmt_ratio(peer, ours):
    return "–" if peer is None or not ours else f"{peer / ours:.1f}×"


def machine() -> str:
    from threadpoolctl import threadpool_info

    blas = ", ".join(
        sorted(
            {
                f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)"
                for i in threadpool_info()
            }
        )
    )
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    cpu = next(iter(names), platform.processor())
    import numpy
    import sklearn

    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy "
        f"{numpy.__version__}, scikit-learn {sklearn.__version__}, BLAS: {blas}"
    )


def limits_text(limits: dict[int, tuple[float, float]]) -> str:
    return "; ".join(
        f"{threads} thread{'s' if threads > 1 else ''}: dgemm {flops / 1e9:.1f} GFLOP/s, "
        f"memory {bandwidth / 1e9:.1f} GB/s"
        for threads, (flops, bandwidth) in sorted(limits.items())
    )


def report(rows, memory, cli_rows, header: str) -> str:
    lines = [
        header,
        "",
        "### Time per EM iteration (ms; ratio = peer time / gmm time)",
        "",
        "limit: the least time this machine needs for one iteration, max(FLOPs ÷ dgemm rate, "
        "bytes ÷ memory bandwidth) with the least work any implementation must do "
        "(`least_work` in bench_em.py); gmm/limit: how far gmm is from it.",
        "",
        "| threads | n | d | k | cov | gmm | gmm f32 | sklearn | mlpack | limit | gmm/limit "
        "| sklearn/gmm | mlpack/gmm | f32 speed-up | LL vs sklearn (rel) | LL f32 vs f64 (rel) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mlpack = fmt_ms(r["mlpack"]) if r["mlpack"] is not None else (r["mlpack_note"] or "–")
        lines.append(
            f"| {r['threads']} | {r['n']:,} | {r['d']} | {r['k']} | {r['covariance']} | "
            f"{fmt_ms(r['gmm'])} | {fmt_ms(r['gmm32'])} | {fmt_ms(r['sklearn'])} | {mlpack} | "
            f"{fmt_ms(r['limit'])} | {r['gmm'] / r['limit']:.1f}× | "
            f"{fmt_ratio(r['sklearn'], r['gmm'])} | {fmt_ratio(r['mlpack'], r['gmm'])} | "
            f"{fmt_ratio(r['gmm'], r['gmm32'])} | {r['ll_rel_sklearn']:.1e} | "
            f"{r['ll_rel_float32']:.1e} |"
        )
    if memory:
        lines += [
            "",
            "### Peak memory a fit adds to the data (MiB)",
            "",
            "| n | d | k | cov | data | budget (n·k·8 + 100 MiB) | gmm | gmm f32 | sklearn "
            "| mlpack |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for (n, d, k, c), tools in memory.items():
            budget = (n * k * 8 + 100 * MiB) / MiB
            cells = [
                f"{tools[t]['added'] / MiB:.0f}" if tools.get(t) else "–"
                for t in ("gmm", "gmm-float32", "sklearn", "mlpack")
            ]
            data = next(v["data"] for v in tools.values() if v) / MiB
            lines.append(
                f"| {n:,} | {d} | {k} | {c} | {data:.0f} | {budget:.0f} | "
                + " | ".join(cells)
                + " |"
            )
    if cli_rows:
        lines += [
            "",
            "### The command line (median wall time)",
            "",
            "| what | seconds | |",
            "|---|---|---|",
        ]
        lines += [f"| {what} | {seconds:.2f} | {note} |" for what, seconds, note in cli_rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two configurations, no file")
    parser.add_argument("--only", help="one configuration: n,d,k,covariance")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--mlpack-limit",
        type=float,
        default=20.0,
        help="skip mlpack where one iteration takes longer (seconds)",
    )
    parser.add_argument(
        "--threads", default="1,all", help="1, all, or 1,all: the thread counts to run"
    )
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-cli", action="store_true")
    parser.add_argument("--cli-only", action="store_true", help="only the command-line figures")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        tool, n, d, k, covariance = args.memory_child
        n_iter = 3
        memory_child(tool, int(n), int(d), int(k), covariance, n_iter)
        return
    if args.cli_only:
        print(report([], {}, cli_figures(), f"## Command line ({time.strftime('%Y-%m-%d')})"))
        return
    configs = grid(args.quick)
    if args.only:
        n, d, k, c = args.only.split(",")
        configs = [(int(n), int(d), int(k), c)]
    use_mlpack = have_mlpack()
    modes = [None if t == "all" else int(t) for t in args.threads.split(",")]
    limits = {t or os.cpu_count(): machine_limits(t or os.cpu_count()) for t in modes}
    print(limits_text(limits), file=sys.stderr, flush=True)
    rows = []
    for (n, d, k, c), threads in [(config, t) for config in configs for t in modes]:
        rates = limits[threads or os.cpu_count()]
        row = run_config(n, d, k, c, args.repeats, use_mlpack, args.mlpack_limit, threads, rates)
        rows.append(row)
        print(
            f"threads={row['threads']} n={n} d={d} k={k} {c}: limit {fmt_ms(row['limit'])} ms, "
            f"gmm {fmt_ms(row['gmm'])} ms, f32 {fmt_ms(row['gmm32'])} "
            f"ms, sklearn {fmt_ms(row['sklearn'])} ms, mlpack {fmt_ms(row['mlpack'])} ms "
            f"{row['mlpack_note']}; LL rel {row['ll_rel_sklearn']:.1e}",
            file=sys.stderr,
            flush=True,
        )
    memory = {}
    if not args.no_memory:
        memory_configs = [(1_000_000, 16, 8, "full"), (1_000_000, 16, 8, "diag")]
        if args.quick or args.only:
            memory_configs = [(200_000, 16, 8, "full")]
        for config in memory_configs:
            tools = ["gmm", "gmm-float32", "sklearn"] + (["mlpack"] if use_mlpack else [])
            memory[config] = {tool: peak_memory(tool, *config) for tool in tools}
            print(f"memory {config}: {memory[config]}", file=sys.stderr, flush=True)
    cli_rows = [] if args.no_cli else cli_figures()
    header = (
        f"## Results ({time.strftime('%Y-%m-%d')})\n\nMachine: {machine()}.\n\n"
        f"Measured limits: {limits_text(limits)}.\n\n"
        f"Command: `python bench/bench_em.py{' --quick' if args.quick else ''}`; "
        f"medians of {args.repeats} repeats."
    )
    text = report(rows, memory, cli_rows, header)
    print(text)
    if not (args.quick or args.only):
        Path(args.out).write_text("# Benchmark results\n\n" + text, encoding="utf-8")


if __name__ == "__main__":
    main()
