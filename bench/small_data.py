"""Benchmark: small data in a blink — the commands a user runs on small tables, end to end.

    python bench/small_data.py                      # medians of 5 runs of each command
    python bench/small_data.py --repeats 9 --against /work/main

Times each command as a user runs it (a fresh ``python -m gmmcli`` process, start-up
included): ``gmm --help``; ``gmm fit`` of 3 components to iris (150 × 4), with and without
``--quiet``; ``gmm select`` of iris with the default grid (the fourteen models × k = 1..9,
the two hierarchical starts and four k-means++ restarts per cell); ``gmm predict`` of 1,000,000
rows × 2 columns (three clusters; output to /dev/null). Prints a Markdown table of the
median wall-clock and CPU seconds (user + system, the command and its worker processes).
With ``--against ROOT`` the same commands also run with the ``gmmcli`` package of another
checkout (``PYTHONPATH=ROOT``), interleaved run by run so that both see the same load —
the 2-core machine is often shared: compare the columns of one run, and the CPU seconds.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IRIS = ROOT / "sample_data" / "iris.csv"


def commands(folder: Path) -> dict[str, list[str]]:
    """The label and arguments (after ``python -m gmmcli``) of every command timed."""
    model = folder / "iris-3.json"
    big_model = folder / "million-3.json"
    return {
        "gmm --help": ["--help"],
        "gmm fit iris -k 3": ["fit", str(IRIS), "-k", "3", "-o", str(model)],
        "gmm fit iris -k 3 -q": ["fit", str(IRIS), "-k", "3", "-q", "-o", str(model)],
        "gmm select iris (14 models × k 1-9)": ["select", str(IRIS), "-q", "-o", os.devnull],
        "gmm predict, 1M × 2 rows": [
            "predict",
            str(big_model),
            str(folder / "million.csv"),
            "-q",
            "-o",
            os.devnull,
        ],
    }


def prepare(folder: Path) -> None:
    """The 1M-row table (three 2-D clusters, fixed seed) and a model of it to predict with."""
    import numpy as np

    rng = np.random.default_rng(14)
    centres = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]])
    x = rng.normal(size=(1_000_000, 2)) + centres[rng.integers(0, 3, 1_000_000)]
    np.savetxt(folder / "million.csv", x, delimiter=",", header="a,b", comments="", fmt="%.6f")
    run(
        ROOT,
        ["fit", str(folder / "million.csv"), "-k", "3", "-q", "-o", str(folder / "million-3.json")],
    )


def run(root: Path, args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, with children) of ``python -m gmmcli ARGS`` with
    the package of ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gmmcli", *args],
        check=True,
        env=env,
        cwd=root,  # python -m puts the working directory first on the path
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another checkout's root, timed alike")
    parser.add_argument("--only", default="", help="run the commands whose label has this")
    options = parser.parse_args()
    roots = {"this": ROOT} | ({"against": options.against} if options.against else {})
    with tempfile.TemporaryDirectory(prefix="gmm-small-") as name:
        folder = Path(name)
        prepare(folder)
        rows = []
        for label, args in commands(folder).items():
            if options.only not in label:
                continue
            times: dict[str, list[tuple[float, float]]] = {key: [] for key in roots}
            for _ in range(options.repeats):
                for key, root in roots.items():
                    times[key].append(run(root, args))
            cells = []
            for key in roots:
                wall = statistics.median(w for w, _ in times[key])
                cpu = statistics.median(c for _, c in times[key])
                cells.append(f"{wall:.2f} s | {cpu:.2f} s")
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
            print(rows[-1], file=sys.stderr, flush=True)
    heads = " | ".join(f"{key}: wall | {key}: CPU" for key in roots)
    print(f"| command | {heads} |")
    print("|---|" + "---|---|" * len(roots))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
