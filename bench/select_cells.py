"""Check: the default select grid cell by cell, to compare two versions of the engine.

    PYTHONPATH=OLD python bench/select_cells.py old.json a.csv b.csv ...
    PYTHONPATH=NEW python bench/select_cells.py new.json a.csv b.csv ... --compare old.json

Runs ``engine.select.run_grid`` in this process's ``gmmcli`` (the fourteen models × k = 1..9,
select's defaults: hc + 5 k-means++ restarts, emEM, the default stopping rule) on each CSV
(every column numeric, a header line), writes every cell's record to the JSON file, and with
``--compare`` prints per table how many cells have the same log-likelihood and BIC to the
bit, how many are worse or better (by more than 1e-6 relative) and the cell each chooses.
A change meant to speed the engine up without changing its answers keeps every cell. (The
seven public sets of ``compare_mclust.py`` can be written by its R script.) Never part of
the test suite.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MODELS = ["EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV", "VEV"]
MODELS += ["EVV", "VVV"]
SETTINGS = {"tol": None, "reg_covar": 1e-6, "reg_scale": "data", "seed": 0}


def main() -> None:
    from gmmcli.engine.select import choose, run_grid

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("tables", nargs="+", type=Path)
    parser.add_argument("--compare", type=Path, help="a JSON file this script wrote before")
    parser.add_argument("--jobs", type=int, default=None)
    options = parser.parse_args()
    settings = {**SETTINGS, "max_iter": 1000, "n_init": 6, "init": "hc"}
    found = {}
    for path in options.tables:
        x = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        cells = run_grid(x, list(range(1, 10)), MODELS, settings, jobs=options.jobs)
        chosen = choose(cells)
        found[path.stem] = {
            "chosen": [chosen.covariance_type, chosen.n_components, chosen.bic],
            "cells": [cell.record() for cell in cells],
        }
    options.output.write_text(json.dumps(found))
    if options.compare is None:
        return
    before = json.loads(options.compare.read_text())
    for name, now in found.items():
        old = before[name]["cells"]
        new = now["cells"]
        same = sum(
            a["bic"] == b["bic"] and a["log_likelihood"] == b["log_likelihood"]
            for a, b in zip(new, old, strict=True)
        )
        worse = sum(
            a["bic"] > b["bic"] + 1e-6 * abs(b["bic"]) for a, b in zip(new, old, strict=True)
        )
        better = sum(
            a["bic"] < b["bic"] - 1e-6 * abs(b["bic"]) for a, b in zip(new, old, strict=True)
        )
        print(
            f"{name}: {same}/{len(new)} cells the same to the bit, {worse} worse, "
            f"{better} better; chosen {before[name]['chosen'][:2]} -> {now['chosen'][:2]}"
        )


if __name__ == "__main__":
    main()
