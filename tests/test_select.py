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
from gmmcli.engine.em import SCREEN_TOL
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


# -- the default grid and its shared starts ----------------------------------------------------
IRIS = Path(__file__).parent / "fixtures" / "mclust" / "iris.json"


def iris() -> np.ndarray:
    import json

    return np.array(json.loads(IRIS.read_text())["data"], dtype=float)


def test_the_default_grid_is_mclusts_and_chooses_its_iris_model(tmp_path):
    """No options: k = 1..9 × the fourteen models from the hc start and five k-means++
    restarts, and on iris mclust's Mclust choice, VEV with 2 components (561.73)."""
    data = tmp_path / "iris.csv"
    np.savetxt(data, iris(), delimiter=",", header="a,b,c,d", comments="", fmt="%.17g")
    grid = tmp_path / "grid.csv"
    done = subprocess.run(
        [sys.executable, "-m", "gmmcli", "select", str(data), "-q", "-o", str(tmp_path / "m.json"),
         "--table", str(grid)],
        capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    table = pd.read_csv(grid)
    from gmmcli.engine.covariance import covariance_names

    assert list(dict.fromkeys(table.covariance_type)) == list(covariance_names())
    assert sorted(set(table.n_components)) == list(range(1, 10))
    best = table[~table.degenerate].sort_values("bic").iloc[0]
    assert (best.covariance_type, best.n_components) == ("VEV", 2)
    assert best.bic == pytest.approx(561.7258, abs=0.05)
    import json

    model = json.loads((tmp_path / "m.json").read_text())
    assert model["fit"]["options"]["init"] == "hc" and model["fit"]["options"]["n_init"] == 6


def test_hc_adds_the_two_trees_starts_to_the_kmeans_restarts():
    """--init hc --n-init 6: mclust's tree's start, then Ward's tree's, then exactly the four
    k-means++ starts of --init kmeans++ --n-init 4 (the trees have a seed of their own); each
    tree's restart is the fit from that tree alone."""
    x = iris()
    with_trees = GaussianMixture(4, covariance_type="VVV", init="hc", n_init=6).fit(x)
    without = GaussianMixture(4, covariance_type="VVV", init="kmeans++", n_init=4).fit(x)
    ours = [r.log_likelihood for r in with_trees.result_.restarts]
    assert ours[2:] == [r.log_likelihood for r in without.result_.restarts]
    for restart, init in enumerate(["hc", "hc-ward"]):
        alone = GaussianMixture(4, covariance_type="VVV", init=init, n_init=1, tol=SCREEN_TOL)
        assert alone.fit(x).log_likelihood_ == pytest.approx(ours[restart], rel=1e-12, abs=0)
    assert ours[0] != ours[1]  # two trees, two partitions at k = 4 on iris
    assert with_trees.log_likelihood_ >= max(ours) - 1e-9 * abs(max(ours))
    ward = GaussianMixture(4, covariance_type="VVV", init="hc-ward", n_init=3).fit(x)
    kmeans = GaussianMixture(4, covariance_type="VVV", init="kmeans++", n_init=2).fit(x)
    assert [r.log_likelihood for r in ward.result_.restarts[1:]] == [
        r.log_likelihood for r in kmeans.result_.restarts
    ]


def test_a_restart_from_an_earlier_restarts_partition_is_not_run_again():
    x = iris()
    events = []
    fitted = GaussianMixture(2, covariance_type="VEV", n_init=5, callback=events.append).fit(x)
    restarts = fitted.result_.restarts
    repeated = [r for r in restarts if r.same_start_as is not None]
    assert repeated  # k = 2 on iris: k-means++ from five seeds finds fewer partitions
    for r in repeated:
        original = restarts[r.same_start_as]
        assert original.same_start_as is None and original.restart < r.restart
        assert (r.log_likelihood, r.n_iter) == (original.log_likelihood, original.n_iter)
    from gmmcli.engine.em import IterationEvent, RestartEvent

    ran = {e.restart for e in events if isinstance(e, IterationEvent)}
    assert ran.isdisjoint(r.restart for r in repeated)  # no iterations were run for them
    said = [e for e in events if isinstance(e, RestartEvent) and e.same_start_as is not None]
    assert [e.restart for e in said] == [r.restart for r in repeated]


def test_cells_sharing_a_start_cache_fit_as_cells_without_one():
    from gmmcli.engine.init import StartCache

    x = iris()
    cache = StartCache()
    settings = {"init": "hc", "n_init": 3}
    for model in ("full", "EVE", "diag"):
        for k in (1, 3):
            shared = fit_cell(x, k, model, settings, cache)
            alone = fit_cell(x, k, model, settings)
            assert shared.log_likelihood == alone.log_likelihood
            np.testing.assert_array_equal(shared.model.means_, alone.model.means_)
    # each tree (mclust's and Ward's) built once, and cut for every k and model
    assert sorted(key[0] for key in cache.trees) == ["EII", "VVV"]


def test_the_grid_in_workers_is_the_grid_in_this_process():
    from gmmcli.engine.select import run_grid

    x = iris()
    settings = {"init": "hc", "n_init": 3}
    here = run_grid(x, [1, 2, 3], ["full", "VVE"], settings, jobs=1)
    there = run_grid(x, [1, 2, 3], ["full", "VVE"], settings, jobs=2)
    assert [c.record() for c in here] == [c.record() for c in there]


def test_select_words_all_and_a_bad_init(tmp_path):
    def select(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gmmcli", "select", str(BLOBS), "-k", "1", *args,
             "-o", str(tmp_path / "m.json"), "--table", str(tmp_path / "t.csv"), "-q"],
            capture_output=True, check=False,
        )  # fmt: skip

    done = select("--covariance", "ALL,full,vev", "--n-init", "1")
    assert done.returncode == 0, done.stderr.decode()
    from gmmcli.engine.covariance import covariance_names

    assert list(pd.read_csv(tmp_path / "t.csv").covariance_type) == list(covariance_names())
    bad = select("--init", "tree")
    assert bad.returncode == 2
    assert bad.stderr.decode() == (
        "gmm: error: --init 'tree': use one of hc, hc-ward, kmeans++, random, random-from-data\n"
    )


# -- the search in two stages ------------------------------------------------------------------
def test_a_cell_fitted_in_two_stages_is_the_cell_fitted_in_one():
    """The first stage is the hc restart alone, stopped at the first-stage rule; the rest
    (that run carried on to emEM's screening rule, five k-means++ restarts, the best run on)
    gives the one-stage cell: the same optimum, the same criteria."""
    from gmmcli.engine.convergence import LIMIT_TOL
    from gmmcli.engine.em import FIRST_STAGE_TOL

    x = iris()
    settings = {"init": "hc", "n_init": 6}
    # Each stops where Aitken's estimate puts it within LIMIT_TOL per row of the fixed
    # point, and the carried-on path's last bits differ: so they agree to twice that (EII
    # with 6 components: 1.1e-9 relative apart, 3.2e-7 of the 3e-6 allowed).
    close = 2 * LIMIT_TOL * len(x)
    for model, k in [("VEV", 2), ("VVE", 4), ("EII", 6), ("full", 3), ("VEE", 7)]:
        whole = fit_cell(x, k, model, settings)
        first = fit_cell(x, k, model, settings, stage="first")
        rest = fit_cell(x, k, model, settings, stage="rest", first=first)
        assert rest.log_likelihood == pytest.approx(whole.log_likelihood, rel=0, abs=close)
        assert rest.bic == pytest.approx(whole.bic, rel=0, abs=2 * close)
        # two restarts may end at one optimum with the components in another order; where
        # the likelihood is flat, stopping within the rule leaves the means up to ~1e-4 apart
        # (EII with 6 components: 5e-5); other optima of these cells lie ≥ 0.4 away (measured)
        np.testing.assert_allclose(
            np.sort(rest.model.means_, axis=0), np.sort(whole.model.means_, axis=0), atol=1e-3
        )
        alone = GaussianMixture(k, covariance_type=model, init="hc", tol=FIRST_STAGE_TOL).fit(x)
        assert first.log_likelihood == alone.log_likelihood_
        assert (first.refined, rest.refined, whole.refined) == (False, True, True)


def test_a_refined_cell_of_one_restart_is_run_to_the_stopping_rule():
    """With one restart the first stage is the whole search, but it stopped at the screening
    rule: the second stage carries it on to the default rule, as a fit of that cell does."""
    x = iris()
    settings = {"init": "hc", "n_init": 1}
    for model, k in [("VEV", 3), ("EEE", 2)]:
        first = fit_cell(x, k, model, settings, stage="first")
        rest = fit_cell(x, k, model, settings, stage="rest", first=first)
        fitted = GaussianMixture(k, covariance_type=model, init="hc", n_init=1).fit(x)
        assert rest.model.n_iter_ > first.model.n_iter_
        assert rest.log_likelihood == pytest.approx(fitted.log_likelihood_, rel=1e-9, abs=0)
        assert rest.log_likelihood > first.log_likelihood


def test_only_the_cells_near_the_best_get_every_restart():
    from gmmcli.engine.constraints import REFINE_MARGIN
    from gmmcli.engine.select import choose, run_grid

    x = iris()
    settings = {"init": "hc", "n_init": 4}
    ks, models = [1, 2, 3, 4], ["EII", "VVV", "VEV", "EEE"]
    every = run_grid(x, ks, models, settings, jobs=1, margin=float("inf"))
    staged = run_grid(x, ks, models, settings, jobs=2)
    firsts = [
        fit_cell(x, c.n_components, c.covariance_type, settings, stage="first") for c in every
    ]
    bar = min(f.bic for f in firsts if not f.degenerate) + REFINE_MARGIN * len(x)
    near = [f.bic <= bar for f in firsts]
    assert 0 < sum(near) < len(near)  # both kinds in this grid
    for s, e, f, close in zip(staged, every, firsts, near, strict=True):
        if not close:
            assert s.record() == f.record()
            continue
        # refined: the hc run carried on from its first stage's stop, so the last bits
        # may differ from one fit with every restart
        numbers = ("log_likelihood", "bic", "aic", "icl")
        got, want = s.record(), e.record()
        assert {a: got[a] for a in got if a not in numbers} == {
            a: want[a] for a in want if a not in numbers
        }
        assert [got[a] for a in numbers] == pytest.approx([want[a] for a in numbers], rel=1e-7)
    assert all(e.refined for e in every)
    assert (choose(staged).n_components, choose(staged).covariance_type) == (
        choose(every).n_components,
        choose(every).covariance_type,
    )
    icl = run_grid(x, ks, models, settings, jobs=1, criterion="icl", margin=0.0)
    best_icl = min(f.icl for f in firsts if not f.degenerate)
    assert [c.refined for c in icl] == [f.icl <= best_icl for f in firsts]


def test_select_says_which_cells_were_refined(tmp_path):
    def select(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gmmcli", "select", str(BLOBS), "-k", "1-4",
             "--covariance", "EII,VVV", "-o", str(tmp_path / "m.json"),
             "--table", str(tmp_path / "t.csv"), *args],
            capture_output=True, check=False, env={"COLUMNS": "200", "PATH": ""},
        )  # fmt: skip

    done = select()
    assert done.returncode == 0, done.stderr.decode()
    table = pd.read_csv(tmp_path / "t.csv")
    rough = int((~table.refined).sum())
    assert rough > 0  # EII with one or two components is far from the best on the blobs
    line = f"{rough} of 8 cells lie beyond --refine-margin of the best"
    assert line in done.stderr.decode()
    assert select("--refine-margin", "inf").returncode == 0
    assert pd.read_csv(tmp_path / "t.csv").refined.all()
    assert line not in select("--refine-margin", "inf").stderr.decode()
    bad = select("--refine-margin", "-1")
    assert (bad.returncode, bad.stderr.decode()) == (
        2,
        "gmm: error: --refine-margin -1.0: must be a number >= 0 (or inf)\n",
    )
