"""Benchmark: gmm against scikit-learn, mlpack and mclust; all of bench/RESULTS.md in one run.

The README's Performance figures come from the same run.

    python bench/bench_em.py                 # everything: bench/RESULTS.md and README.md
    python bench/bench_em.py --quick         # the same pipeline on small data, ~2-3 minutes;
                                             # writes into a temporary folder (says where)
    python bench/bench_em.py --only 200000,16,8,full   # one per-iteration row, prints only
    python bench/bench_em.py --cli-only      # only the command-line figures, prints only

The full run takes about 30 minutes on a quiet 2-core machine (time per iteration ~12, time
to a converged answer ~12, memory and the command line ~3); the header of RESULTS.md records
what each part took. To shorten it: ``--threads all`` (or ``1``) halves the first two parts,
``--repeats 1``, ``--cap 60`` (mlpack's fits to convergence are the longest), and
``--no-iterations``, ``--no-converged``, ``--no-memory``, ``--no-cli`` leave a part out (its
section is then missing from the file: run the whole for the record).

What it writes: bench/RESULTS.md above the line ``OTHER`` (below it, the other benchmarks'
dated sections are kept as they are), and the README's figures between ``README_BEGIN`` and
``README_END``. Never part of the test suite.

1. Time per EM iteration (``grid``): stretched Gaussian blobs generated in memory; one common
start (gmm's k-means++) given to gmm and to scikit-learn; tol = 0 and a fixed number of
iterations; time per iteration = (time(1 + N iterations) − time(1 iteration)) / N, so set-up
and initialisation cancel; the median over repeats. mlpack's gmm_train cannot take given
parameters (``fit_mlpack``): each call starts afresh from its own k-means (5 steps, seed 1, the
same in every call) and stops once EM stands still (the diagonal model is Armadillo's
gmm_diag, which stops when the mean log-likelihood changes by at most eps, whatever the
tolerance; on most of these blobs after its second iteration), so it is timed as t(2
iterations) − t(1 iteration), the one iteration it always runs (its (t(1 + N) − t(1)) / N
was that iteration divided by N). gmm's log-likelihood after N iterations is checked
against scikit-learn's from the same start (gmm with scikit-learn's absolute reg_covar). Each
configuration runs on one thread (gmm's ``threads=1`` and every BLAS/OpenMP pool, mlpack's
included, held to one thread) and on all cores. Beside the times stands the machine's limit
for one EM iteration: max(FLOPs ÷ measured dgemm rate, bytes ÷ measured memory bandwidth),
both measured here with the same number of threads (``machine_limits``). The FLOPs and bytes
are the least any implementation needs (``least_work``), not what gmm does, so "gmm / limit"
says how far the kernel is from what this machine could do.

2. Time to a converged answer against scikit-learn, mclust and mlpack: bench/converged.py
(its docstring has the procedure).

3. Peak memory, measured in a fresh process per tool (VmHWM after resetting it once the data
exists), so it is what the fit itself adds to the data, against the budget n·k·8 bytes +
100 MiB.

4. The command line: ``gmm --help``, ``gmm predict`` on 10 rows and on 1M rows, ``gmm loglik``.
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
import textwrap
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
    # plain EM, one pass per iteration, and scikit-learn's reg_covar (an absolute one), where
    # the checkout has these options at all
    parameters = inspect.signature(GaussianMixture).parameters
    plain = {"accelerate": False} if "accelerate" in parameters else {}
    if "reg_scale" in parameters:
        plain["reg_scale"] = "absolute"
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


def sklearn_fit(x, k, covariance, start, tol, max_iter):
    """scikit-learn's GaussianMixture from ``start`` (weights, means, covariances): the
    fitted model and the seconds its fit took."""
    from sklearn.mixture import GaussianMixture

    weights, means, covariances = start
    model = GaussianMixture(
        k,
        covariance_type=covariance,
        tol=tol,
        max_iter=max_iter,
        weights_init=weights,
        means_init=means,
        precisions_init=precisions(covariances, covariance),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        model.fit(x)
        return model, time.perf_counter() - t0


def fit_sklearn(x, k, covariance, start, n_iter):
    model, seconds = sklearn_fit(x, k, covariance, start, 0.0, n_iter)
    return seconds, model.lower_bound_


def fit_mlpack(x, k, covariance, n_iter):
    """gmm_train with ``n_iter`` − 1 EM iterations (its loop stops when the count reaches
    max_iterations) after a k-means of 5 steps, seed 1. It cannot take a start: an
    ``input_model`` only fixes the shape, and it runs its k-means again (its verbose log
    shows it), so every call pays the same k-means, which t(1 + N) − t(1) cancels."""
    import mlpack

    t0 = time.perf_counter()
    mlpack.gmm_train(
        input_=x,
        gaussians=k,
        diagonal_covariance=covariance == "diag",
        max_iterations=n_iter,
        kmeans_max_iterations=5,
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
        fit_mlpack(x, k, covariance, n_iter)
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


def cli_figures(n: int = 1_000_000) -> list[tuple[str, float, str]]:
    """gmm --help, predict on 10 rows, predict and loglik of ``n`` rows × 8 columns, k = 8."""
    rows = []
    size = f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        x = blobs(n, 8, 8)
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
                f"gmm predict, {size} rows × 8 columns, k = 8 (CSV out)",
                command_seconds(["predict", str(model), str(big)], repeats=3),
                "target ≤ 2 s",
            )
        )
        rows.append(
            (
                f"gmm loglik, {size} rows × 8 columns, k = 8",
                command_seconds(["loglik", str(model), str(big)], repeats=3),
                "",
            )
        )
    return rows


# -- the grid --------------------------------------------------------------------------------
def grid(quick: bool) -> list[tuple[int, int, int, str]]:
    """The per-iteration grid, sized so the whole run takes ~30 minutes on 2 cores.

    Left out of the former grid (their figures are in git history): d = 64 with k = 4 and
    32, d = 16 with k = 32, and 1,000,000 rows at d = 2 and 64 — scikit-learn and mlpack
    take 2–15 s per full iteration at d = 64 and k = 32, which alone would take the run
    past the half hour, and the rows kept show the same trends.
    """
    if quick:
        return [(20_000, 16, 8, "full"), (20_000, 2, 4, "diag")]
    configs = [(200_000, 2, k, c) for k in (8, 32) for c in ("full", "diag")]
    configs += [(200_000, 16, k, c) for k in (4, 8) for c in ("full", "diag")]
    configs += [(200_000, 64, 8, c) for c in ("full", "diag")]
    configs += [(200_000, 16, 8, "tied"), (200_000, 16, 8, "spherical")]
    configs += [(1_000_000, 16, 8, c) for c in ("full", "diag")]
    return configs


# the rows of the README's table, where the grid has them
README_CONFIGS = [
    (200_000, 16, 8, "full"),
    (200_000, 16, 8, "diag"),
    (1_000_000, 16, 8, "full"),
    (1_000_000, 16, 8, "diag"),
    (200_000, 2, 32, "full"),
    (200_000, 64, 8, "full"),
    (200_000, 64, 8, "diag"),
]


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
            fit_mlpack(x, k, covariance, 1)  # loads mlpack's OpenMP and BLAS (not timed),
            with threadpool_limits(threads):  # so that they are held to the count too
                t_one, _ = fit_mlpack(x, k, covariance, 2)  # its k-means and one iteration
                if t_one > mlpack_limit:
                    row["mlpack_note"] = f"skipped: k-means and one iteration took {t_one:.0f} s"
                else:  # t(2) − t(1): mlpack stops once EM stands still (module's note)
                    row["mlpack"], _ = per_iteration(
                        lambda it: fit_mlpack(x, k, covariance, it), 1, repeats
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

    try:
        import mlpack

        peers = f", mlpack {getattr(mlpack, '__version__', '?')}"
    except ImportError:
        peers = ""
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy "
        f"{numpy.__version__}, scikit-learn {sklearn.__version__}{peers}, BLAS: {blas}"
    )


def limits_text(limits: dict[int, tuple[float, float]]) -> str:
    return "; ".join(
        f"{threads} thread{'s' if threads > 1 else ''}: dgemm {flops / 1e9:.1f} GFLOP/s, "
        f"memory {bandwidth / 1e9:.1f} GB/s"
        for threads, (flops, bandwidth) in sorted(limits.items())
    )


def budget_mib(n: int, k: int) -> float:
    """What a fit may add to the data: the responsibilities (n·k·8 bytes) and 100 MiB."""
    return (n * k * 8 + 100 * MiB) / MiB


def iteration_table(rows) -> list[str]:
    lines = [
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
    return lines


def memory_table(memory) -> list[str]:
    lines = [
        "| n | d | k | cov | data | budget (n·k·8 + 100 MiB) | gmm | gmm f32 | sklearn "
        "| mlpack | gmm within budget |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (n, d, k, c), tools in memory.items():
        cells = [
            f"{tools[t]['added'] / MiB:.0f}" if tools.get(t) else "–"
            for t in ("gmm", "gmm-float32", "sklearn", "mlpack")
        ]
        data = next((v["data"] for v in tools.values() if v), 0) / MiB
        ours = tools.get("gmm")
        within = "–" if not ours else "yes" if ours["added"] / MiB <= budget_mib(n, k) else "**no**"
        lines.append(
            f"| {n:,} | {d} | {k} | {c} | {data:.0f} | {budget_mib(n, k):.0f} | "
            + " | ".join(cells)
            + f" | {within} |"
        )
    return lines


def report(rows, memory, cli_rows, converged_text: str, header: str) -> str:
    lines = [header, ""]
    if rows:
        lines += [
            "## Time per EM iteration (ms; ratio = peer time / gmm time)",
            "",
            "From one common start (gmm's k-means++); time per iteration = (t(1 + N) − t(1)) / "
            "N, so set-up cancels; mlpack from its own k-means (5 steps, seed 1: it takes no "
            "start), timed the same way. limit: the least time this machine needs for one "
            "iteration, max(FLOPs ÷ dgemm rate, bytes ÷ memory bandwidth) with the least work "
            "any implementation must do (`least_work` in bench_em.py); gmm/limit: how far gmm "
            "is from it. 'LL vs sklearn': gmm's log-likelihood after the same iterations from "
            "the same start against scikit-learn's.",
            "",
            *iteration_table(rows),
            "",
        ]
    if converged_text:
        lines += [converged_text, ""]
    if memory:
        lines += [
            "## Peak memory a fit adds to the data (MiB)",
            "",
            "Each tool in a fresh process: the data made, the peak reset, 3 iterations fitted "
            "(VmHWM − VmRSS before). Budget: what a fit may add to the data, n·k·8 bytes (the "
            "responsibilities) + 100 MiB.",
            "",
            *memory_table(memory),
            "",
        ]
    if cli_rows:
        lines += [
            "## The command line (median wall time)",
            "",
            "| what | seconds | |",
            "|---|---|---|",
        ]
        lines += [f"| {what} | {seconds:.2f} | {note} |" for what, seconds, note in cli_rows]
        lines.append("")
    return "\n".join(lines)


# -- the files this run writes ---------------------------------------------------------------
OTHER = "<!-- other benchmarks: bench_em.py keeps everything below this line as it is -->"
README_BEGIN = "<!-- bench_em:begin (made by python bench/bench_em.py; edits here are lost) -->"
README_END = "<!-- bench_em:end -->"


def write_results(path: Path, text: str) -> None:
    """``text`` in place of everything above the OTHER line; what is below it is kept."""
    kept = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if OTHER in old:
            kept = old[old.index(OTHER) :]
    path.write_text(text.rstrip("\n") + "\n\n" + (kept or OTHER + "\n"), encoding="utf-8")


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between README_BEGIN and README_END replaced by ``block``."""
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise SystemExit(f"README: expected one {README_BEGIN!r} and one {README_END!r}")
    start = text.index(README_BEGIN) + len(README_BEGIN)
    return text[:start] + "\n" + block.strip("\n") + "\n" + text[text.index(README_END) :]


def span(values) -> str:
    values = sorted(values)
    return f"{values[0]:.1f}×" if len(values) == 1 else f"{values[0]:.1f}× to {values[-1]:.1f}×"


def readme_block(rows, memory, cli_rows, converged, when: str) -> str:
    """The README's Performance figures, from this run."""
    cores = os.cpu_count()
    lines = [
        f"Measured with `python bench/bench_em.py` ({when}; {cores} cores), all of it in one "
        "run; the whole of it, with one thread and all cores, the machine's limit per "
        "iteration and the data, is in [bench/RESULTS.md](bench/RESULTS.md).",
        "",
    ]
    by_config = {(r["n"], r["d"], r["k"], r["covariance"], r["threads"]): r for r in rows}
    shown = [c for c in README_CONFIGS if (*c, cores) in by_config] or [
        (r["n"], r["d"], r["k"], r["covariance"]) for r in rows if r["threads"] == cores
    ]
    if shown:
        lines += [
            f"Time per EM iteration from the same start, {cores} threads (all cores), "
            "in milliseconds:",
            "",
            "| n | d | k | covariance | gmm | gmm, 1 thread | scikit-learn | mlpack "
            "| sklearn / gmm | mlpack / gmm | gmm float32 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n, d, k, c in shown:
            r = by_config[(n, d, k, c, cores)]
            one = by_config.get((n, d, k, c, 1))
            lines.append(
                f"| {n:,} | {d} | {k} | {c} | {fmt_ms(r['gmm'])} | "
                f"{fmt_ms(one['gmm']) if one else '–'} | {fmt_ms(r['sklearn'])} | "
                f"{fmt_ms(r['mlpack'])} | {fmt_ratio(r['sklearn'], r['gmm'])} | "
                f"{fmt_ratio(r['mlpack'], r['gmm'])} | {fmt_ms(r['gmm32'])} |"
            )
        lines.append("")
    sentences = []
    for threads in sorted({r["threads"] for r in rows}):
        mine = [r for r in rows if r["threads"] == threads]
        sk = [r["sklearn"] / r["gmm"] for r in mine]
        ml = [r["mlpack"] / r["gmm"] for r in mine if r["mlpack"] is not None]
        where = "one thread" if threads == 1 else f"{threads} threads (all cores)"
        text = (
            f"On {where} gmm is faster than scikit-learn in {sum(v > 1 for v in sk)} of "
            f"{len(sk)} configurations ({span(sk)})"
        )
        if ml:
            text += f" and faster than mlpack in {sum(v > 1 for v in ml)} of {len(ml)} ({span(ml)})"
        sentences.append(text + ".")
    if rows:
        worst = max(r["ll_rel_sklearn"] for r in rows)
        f32 = [r["gmm"] / r["gmm32"] for r in rows]
        slower = sum(v < 1 for v in f32)
        caveat = (
            f" ({slower} of {len(f32)} slower: the compiled pass in pieces, which large "
            "float64 tables take, has no float32 form)"
            if slower
            else ""
        )
        sentences.append(
            f"Every row checks gmm's log-likelihood against scikit-learn's after the same "
            f"iterations (agreement ≤ {worst:.0e} relative); float32 iterations run at "
            f"{span(f32)} float64's speed{caveat}."
        )
    for (n, d, k, c), tools in memory.items():
        if not tools.get("gmm"):
            continue
        size = f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"
        peers = ", ".join(
            f"{name} {tools[t]['added'] / MiB:.0f}"
            for name, t in [("float32", "gmm-float32"), ("scikit-learn", "sklearn"),
                            ("mlpack", "mlpack")]
            if tools.get(t)
        )  # fmt: skip
        added = tools["gmm"]["added"] / MiB
        sentences.append(
            f"A {c} fit with k = {k} adds {added:.0f} MiB to {size} × {d} data ({peers}; "
            f"budget n·k·8 bytes + 100 MiB = {budget_mib(n, k):.0f}: "
            f"{'within' if added <= budget_mib(n, k) else 'over'})."
        )
    if sentences:
        lines += [" ".join(sentences), ""]
    if converged:
        lines += converged_readme(converged)
    if cli_rows:
        lines.append(
            "The command line (median wall time): "
            + "; ".join(f"{what}: {seconds:.2f} s" for what, seconds, _ in cli_rows)
            + "."
        )
    return "\n".join(wrap(line) for line in lines)


def wrap(line: str, width: int = 95) -> str:
    """A prose line wrapped as the README's prose is; table rows as they are."""
    return (
        line
        if line.startswith("|")
        else textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
    )


def converged_readme(results) -> list[str]:
    """One row per case: every tool's seconds to within 1e-6 of ℓ*, on one thread."""
    lines = [
        "Time to a converged answer (within 1e-6 of ℓ*, the fixed point from one common start; "
        "seconds on one thread, iterations in brackets; gmm with its defaults, scikit-learn "
        "timed to its first iteration within 1e-6, mclust's `me()` and mlpack with the "
        "loosest tolerance that gets there, mlpack from its own k-means; the procedure, and "
        "all cores, in bench/RESULTS.md):",
        "",
        "| data | gmm | scikit-learn | mclust | mlpack | gmm, all cores |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| {result['case'].label} | {converged_cell(result, 'gmm')} | "
            f"{converged_cell(result, 'scikit-learn')} | {converged_cell(result, 'mclust')} | "
            f"{converged_cell(result, 'mlpack')} | "
            f"{converged_cell(result, 'gmm', os.cpu_count())} |"
        )
    lines.append("")
    return lines


def converged_cell(result, tool: str, threads: int = 1) -> str:
    """Seconds (iterations), and how far below ℓ* the answer ends when it is not within 1e-6."""
    limit = result["limit"]
    for r in result["runs"]:
        if r.tool.split()[0] == tool and r.threads == threads:
            if not r.seconds:
                return "not run"
            it = f" ({r.iterations})" if r.iterations is not None else ""
            gap = (limit - r.final) / abs(limit)
            far = f", ends {gap:.0e} below ℓ*" if gap > 1e-6 else ""
            return f"{r.median:.2f}{it}{far}"
    return "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the whole pipeline on small configurations, in a couple of minutes; writes "
        "RESULTS.md and README.md into a temporary folder (or --out / --readme)",
    )
    parser.add_argument("--only", help="one configuration: n,d,k,covariance (prints only)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--mlpack-limit",
        type=float,
        default=20.0,
        help="skip mlpack where its k-means and one iteration take longer (seconds)",
    )
    parser.add_argument(
        "--threads", default="1,all", help="1, all, or 1,all: the thread counts to run"
    )
    parser.add_argument("--budget", type=float, default=20.0,
                        help="time to converged: seconds of repeats per tool and case")  # fmt: skip
    parser.add_argument("--cap", type=float, default=None,
                        help="time to converged: skip mlpack where its fit is forecast to "
                        "take longer (seconds)")  # fmt: skip
    parser.add_argument("--no-iterations", action="store_true")
    parser.add_argument("--no-converged", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-cli", action="store_true")
    parser.add_argument("--cli-only", action="store_true", help="only the command-line figures")
    parser.add_argument("--out", help="the results file (default bench/RESULTS.md)")
    parser.add_argument("--readme", help="the README to update (default README.md)")
    parser.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        tool, n, d, k, covariance = args.memory_child
        n_iter = 3
        memory_child(tool, int(n), int(d), int(k), covariance, n_iter)
        return
    if args.cli_only:
        print(report([], {}, cli_figures(), "", f"## Command line ({time.strftime('%Y-%m-%d')})"))
        return
    began, stages, load = time.perf_counter(), [], os.getloadavg()[0]

    def stage(name: str, since: float) -> None:
        stages.append((name, time.perf_counter() - since))
        print(f"-- {name}: {stages[-1][1]:.0f} s", file=sys.stderr, flush=True)

    configs = grid(args.quick)
    if args.only:
        n, d, k, c = args.only.split(",")
        configs = [(int(n), int(d), int(k), c)]
    use_mlpack = have_mlpack()
    modes = [None if t == "all" else int(t) for t in args.threads.split(",")]
    t0 = time.perf_counter()
    limits = {t or os.cpu_count(): machine_limits(t or os.cpu_count()) for t in modes}
    print(limits_text(limits), file=sys.stderr, flush=True)
    stage("machine limits", t0)
    rows = []
    t0 = time.perf_counter()
    for (n, d, k, c), threads in [(config, t) for config in configs for t in modes]:
        if args.no_iterations:
            break
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
    stage("time per iteration", t0)
    if args.only:
        print(report(rows, {}, [], "", "## One configuration"))
        return
    converged_results, converged_text = [], ""
    if not args.no_converged:
        import converged

        t0 = time.perf_counter()
        cap = converged.CAP if args.cap is None else args.cap
        converged_results = converged.run_all(args.quick, modes, args.repeats, args.budget, cap)
        converged_text = converged.report(converged_results, args.repeats, args.budget)
        stage("time to a converged answer", t0)
    memory = {}
    if not args.no_memory:
        t0 = time.perf_counter()
        memory_configs = [(1_000_000, 16, 8, "full"), (1_000_000, 16, 8, "diag")]
        if args.quick:
            memory_configs = [(100_000, 16, 8, "full")]
        for config in memory_configs:
            tools = ["gmm", "gmm-float32", "sklearn"] + (["mlpack"] if use_mlpack else [])
            memory[config] = {tool: peak_memory(tool, *config) for tool in tools}
            print(f"memory {config}: {memory[config]}", file=sys.stderr, flush=True)
        stage("peak memory", t0)
    cli_rows = []
    if not args.no_cli:
        t0 = time.perf_counter()
        cli_rows = cli_figures(100_000 if args.quick else 1_000_000)
        stage("command line", t0)
    stage("whole run", began)
    when = time.strftime("%Y-%m-%d")
    command = "python bench/bench_em.py" + (" --quick" if args.quick else "")
    header = (
        f"# Benchmark results\n\nMade by `{command}` on {when}, in one run of "
        f"{stages[-1][1] / 60:.0f} minutes (in minutes: "
        + ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in stages[:-1])
        + f"); medians of {args.repeats} repeats; load average {load:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores."
        f"\n\nMachine: {machine()}.\n\n"
        f"Measured limits: {limits_text(limits)}."
    )
    text = report(rows, memory, cli_rows, converged_text, header)
    print(text)
    if args.quick and not (args.out and args.readme):
        scratch = Path(tempfile.mkdtemp(prefix="bench-em-quick-"))
        for name in ("RESULTS.md", "README.md"):
            source = HERE / name if name == "RESULTS.md" else HERE.parent / name
            (scratch / name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    out = Path(args.out) if args.out else (scratch if args.quick else HERE) / "RESULTS.md"
    readme = (
        Path(args.readme) if args.readme else (scratch if args.quick else HERE.parent) / "README.md"
    )
    write_results(out, text)
    block = readme_block(rows, memory, cli_rows, converged_results, when)
    readme.write_text(replace_block(readme.read_text(encoding="utf-8"), block), encoding="utf-8")
    print(f"wrote {out} and {readme}", file=sys.stderr)


if __name__ == "__main__":
    main()
