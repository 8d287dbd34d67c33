"""gmm select as mclust users read it: BIC, AIC or ICL, the table by k × model with the top
three, and degenerate cells never chosen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gmmcli import GaussianMixture
from gmmcli.engine.select import fit_cell

ROOT = Path(__file__).resolve().parent.parent
BLOBS = ROOT / "sample_data" / "blobs_2d.csv"


def test_icl_is_bic_plus_the_classification_entropy():
    x = pd.read_csv(BLOBS).to_numpy()
    cell = fit_cell(x, 3, "VEV", {"seed": 0})
    mixture = GaussianMixture(3, covariance_type="VEV", seed=0).fit(x)
    resp = mixture.predict_proba(x)
    n, ll, p = len(x), mixture.log_likelihood_, mixture.n_parameters()
    bic = -2 * ll + p * np.log(n)
    assert cell.bic == pytest.approx(bic, rel=1e-12)
    # mclust's icl(): BIC (higher-is-better sign) + 2 Σ log max z; here in the lower sign
    assert cell.icl == pytest.approx(bic - 2 * np.log(resp.max(axis=1)).sum(), rel=1e-12)
    assert cell.icl > cell.bic  # overlapping blobs: some rows are not certain


@pytest.mark.parametrize("criterion", ["bic", "aic", "icl"])
def test_select_chooses_the_lowest_healthy_cell_and_names_the_top_three(tmp_path, criterion):
    grid = tmp_path / "grid.csv"
    done = subprocess.run(
        [sys.executable, "-m", "gmmcli", "select", str(BLOBS), "-k", "2-5",
         "--covariance", "full,EEV,VEI", "--criterion", criterion, "--n-init", "2",
         "-o", str(tmp_path / "m.json"), "--table", str(grid)],
        capture_output=True, check=False, env={"COLUMNS": "200", "PATH": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    table = pd.read_csv(grid)
    healthy = table[~table.degenerate].sort_values([criterion, "n_parameters"])
    best = healthy.iloc[:3]
    lines = done.stderr.decode().splitlines()
    assert lines[0].startswith(f"model selection by {criterion.upper()} (lower is better")
    top = "top three by {}: {}".format(
        criterion.upper(),
        ", ".join(
            f"{r.covariance_type},{r.n_components} ({r[criterion]:.8g})" for _, r in best.iterrows()
        ),
    )
    assert top in lines
    header = next(line for line in lines if line.startswith("┃ k"))
    assert [w for w in header.replace("┃", " ").split()] == ["k", "full", "EEV", "VEI"]
    first = best.iloc[0]
    assert f"chosen: k = {first.n_components}, {first.covariance_type} covariance" in lines[-1]


def test_select_draws_the_criterion_against_k(tmp_path):
    picture = tmp_path / "bic.png"
    args = [sys.executable, "-m", "gmmcli", "select", str(BLOBS), "-k", "1-3"]
    args += ["--covariance", "full,VEI", "--n-init", "1", "-q", "-o", str(tmp_path / "m.json")]
    done = subprocess.run([*args, "--plot", str(picture)], capture_output=True, check=False)
    assert (done.returncode, done.stderr) == (0, b"")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([*args, "--plot", str(tmp_path / "bic.gif")], capture_output=True)
    assert bad.returncode == 2
    assert bad.stderr.decode().startswith(f"gmm: error: {tmp_path / 'bic.gif'}: cannot draw")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bic.png", "m.json"]  # nothing else


@pytest.mark.parametrize("engine", ["memory", "stream"])
def test_predict_uncertainty_is_one_minus_the_largest_probability(tmp_path, engine):
    model = tmp_path / "m.json"
    subprocess.run([sys.executable, "-m", "gmmcli", "fit", str(BLOBS), "-k", "4", "-q", "-o",
                    str(model)], check=True)  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "gmmcli", "predict", str(model), str(BLOBS), "--uncertainty",
         "--engine", engine],
        capture_output=True, check=True,
    )  # fmt: skip
    import io

    frame = pd.read_csv(io.StringIO(done.stdout.decode()))
    assert list(frame.columns) == ["label", "prob_0", "prob_1", "prob_2", "prob_3", "uncertainty"]
    probs = frame[[f"prob_{c}" for c in range(4)]].to_numpy()
    np.testing.assert_allclose(frame["uncertainty"], 1 - probs.max(axis=1), rtol=0, atol=1e-15)
    assert frame["uncertainty"].max() > 1e-3  # the blobs overlap: some rows are uncertain
