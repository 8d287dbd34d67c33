"""Benchmark the CSV readers and writers gmm could use, on a ~300 MB table.

    python bench/bench_io.py            # 3.3M rows x 8 columns (about 300 MB)
    python bench/bench_io.py --rows 1000000

Compares, in one run: pandas' C reader (what gmm falls back to, for exact error messages),
pyarrow's reader (what gmm tries first on clean tables), and gmm's read_table as a whole;
then pandas' and pyarrow's CSV writers on a predict-shaped result (label + 8 probabilities).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def seconds(action, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        action()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_300_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from gmmcli import data

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, 8)) * 10
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.csv"
        frame = pd.DataFrame(x, columns=[f"c{i}" for i in range(8)])
        path.write_bytes(data.csv_bytes(frame))
        size = path.stat().st_size / 1e6
        rows = [
            (
                "pandas read_csv (C engine)",
                seconds(lambda: pd.read_csv(path, engine="c"), args.repeats),
            ),
            (
                "pyarrow.csv.read_csv",
                seconds(lambda: pa_csv.read_csv(path).to_pandas(), args.repeats),
            ),
            (
                "gmm read_table (pyarrow first)",
                seconds(lambda: data.read_table(str(path)), args.repeats),
            ),
        ]
        original = data._parse_fast
        data._parse_fast = lambda *a: None
        rows.append(
            (
                "gmm read_table (exact reader only)",
                seconds(lambda: data.read_table(str(path)), args.repeats),
            )
        )
        data._parse_fast = original
    probabilities = rng.dirichlet(np.ones(8), size=1_000_000)
    result = pd.DataFrame({"label": probabilities.argmax(axis=1)})
    for c in range(8):
        result[f"prob_{c}"] = probabilities[:, c]
    rows.append(
        (
            "pandas to_csv, 1M x 9 (predict output)",
            seconds(lambda: result.to_csv(index=False), args.repeats),
        )
    )
    rows.append(
        (
            "pyarrow write_csv, 1M x 9, one thread",
            seconds(
                lambda: pa_csv.write_csv(pa.Table.from_pandas(result), io.BytesIO()), args.repeats
            ),
        )
    )
    rows.append(
        ("gmm write_csv bytes, 1M x 9", seconds(lambda: data.csv_bytes(result), args.repeats))
    )
    print(f"table: {args.rows:,} rows x 8 columns, {size:.0f} MB\n")
    print("| what | seconds |\n|---|---|")
    for what, value in rows:
        print(f"| {what} | {value:.2f} |")


if __name__ == "__main__":
    main()
