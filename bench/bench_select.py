"""Benchmark: `gmm select` on a small table (iris, 150 rows × 4 columns), end to end.

    python bench/bench_select.py                # medians of 5 runs of each command
    python bench/bench_select.py --repeats 9 --mclust

Times the command line as a user runs it (a fresh process each time, start-up included):
the default grid (the fourteen covariance models × k = 1..9, the hierarchical start and five
k-means++ restarts per cell), the former default grid (full, tied, diag and spherical with
five k-means++ restarts) and `gmm --help`, as the median wall-clock and CPU seconds (the CPU
of gmm and its worker processes). Also prints the model each grid chose and its BIC, and
with ``--mclust`` the time and choice of R's ``Mclust`` on the same table (needs R with
mclust). The 2-core machine is shared: run it when it is quiet, and look at CPU seconds too.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GMM = str(Path(sys.executable).with_name("gmm"))
COMMANDS = {
    "default: 14 models × k 1-9, hc + 5 k-means++": [],
    "former default: 4 models × k 1-9, 5 k-means++": [
        "--covariance",
        "full,tied,diag,spherical",
        "--init",
        "kmeans++",
        "--n-init",
        "5",
    ],
}


def iris_csv(folder: Path) -> Path:
    """iris's four measurements as CSV (scikit-learn ships the table)."""
    from sklearn.datasets import load_iris

    path = folder / "iris.csv"
    load_iris(as_frame=True).frame.drop(columns="target").to_csv(path, index=False)
    return path


def timed(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the process and its children) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def medians(args: list[str], repeats: int) -> tuple[float, float]:
    runs = [timed(args) for _ in range(repeats)]
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def chosen(data: Path, extra: list[str], folder: Path) -> tuple[str, int, float]:
    model = folder / "model.json"
    subprocess.run([GMM, "select", str(data), *extra, "-q", "-o", str(model)], check=True)
    doc = json.loads(model.read_text())
    return doc["covariance_type"], doc["n_components"], doc["fit"]["bic"]


def mclust(data: Path, repeats: int) -> tuple[str, int, float, float] | None:
    script = (
        "suppressMessages(library(mclust)); x <- read.csv(commandArgs(TRUE)[1]); t <- c();"
        f"for (i in 1:{repeats}) t <- c(t, system.time(f <- Mclust(x, verbose = FALSE))[[3]]);"
        "cat(f$modelName, f$G, -f$bic, median(t), '\\n')"
    )
    try:
        out = subprocess.run(
            ["Rscript", "-e", script, str(data)], check=True, capture_output=True, text=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out[0], int(out[1]), float(out[2]), float(out[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mclust", action="store_true", help="also time R's Mclust")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-select-") as name:
        folder = Path(name)
        data = iris_csv(folder)
        print(
            f"`gmm select` on iris (150 × 4), {os.cpu_count()} cores, medians of "
            f"{args.repeats} runs\n"
        )
        print("| command | wall s | CPU s | chosen | BIC |")
        print("|---|---|---|---|---|")
        wall, cpu = medians([GMM, "--help"], args.repeats)
        print(f"| gmm --help | {wall:.2f} | {cpu:.2f} | | |")
        for label, extra in COMMANDS.items():
            wall, cpu = medians([GMM, "select", str(data), *extra, "-o", os.devnull], args.repeats)
            model, k, bic = chosen(data, extra, folder)
            print(f"| {label} | {wall:.2f} | {cpu:.2f} | {model}, {k} | {bic:.2f} |")
        if args.mclust:
            found = mclust(data, args.repeats)
            if found is None:
                print("| mclust: Rscript or mclust not found | | | | |")
            else:
                model, k, bic, seconds = found
                print(f"| R: Mclust(x), inside R | {seconds:.2f} | | {model}, {k} | {bic:.2f} |")


if __name__ == "__main__":
    main()
