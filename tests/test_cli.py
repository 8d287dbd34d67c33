"""CLI tests: the three commands end to end, every bad input, and real `gmm` subprocesses."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from engine_checks import gmm_captured as gmm
from typer.testing import CliRunner

from gmmcli import load_model
from gmmcli.cli import app, run

ROOT = Path(__file__).resolve().parent.parent
BLOBS = ROOT / "sample_data" / "blobs_2d.csv"
ONE_D = ROOT / "sample_data" / "tutorial_1d.csv"
WITH_ID = ROOT / "sample_data" / "points_with_id.csv"


def assert_user_error(status: int, out: str, err: str, *fragments: str) -> None:
    """Exit 2, nothing on stdout, exactly one line on stderr naming what is wrong."""
    assert status == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gmm: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def blobs_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "blobs.json"
    assert run(["fit", str(BLOBS), "-k", "4", "-o", str(path), "--quiet"]) == 0
    return path


# -- happy paths -----------------------------------------------------------------------------
def test_fit_writes_a_model_and_reports_on_stderr(tmp_path, capsys):
    out_path = tmp_path / "m.json"
    status, out, err = gmm(capsys, "fit", BLOBS, "-k", "4", "-o", out_path, "--n-init", "2")
    assert status == 0 and out == ""
    assert "log-likelihood" in err and "BIC" in err and "converged" in err
    model = json.loads(out_path.read_text())
    assert model["n_components"] == 4 and model["feature_names"] == ["x", "y"]
    fit = model["fit"]
    assert fit["n_samples"] == 1000 and fit["converged"] is True
    assert fit["options"]["n_init"] == 2 and fit["seed"] == 0
    assert len(fit["restarts"]) == 2
    history = fit["log_likelihood_history"]
    assert history[-1] == pytest.approx(fit["mean_log_likelihood"])
    assert fit["bic"] == pytest.approx(-2 * fit["log_likelihood"] + 23 * np.log(1000))


def test_fit_to_stdout_is_json_only(capsys):
    status, out, err = gmm(capsys, "fit", ONE_D, "-k", "3")
    assert status == 0
    model = json.loads(out)
    assert sorted(np.round(np.ravel(model["means"]))) == [-5.0, 0.0, 4.0]
    assert "iter" in err


def test_same_seed_gives_byte_identical_models(tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    for path, seed in [(a, "5"), (b, "5"), (c, "6")]:
        assert (
            gmm(
                capsys,
                "fit",
                BLOBS,
                "-k",
                "5",
                "--init",
                "random",
                "--seed",
                seed,
                "--max-iter",
                "3",
                "-o",
                path,
            )[0]
            == 0
        )
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("covariance", ["full", "tied", "diag", "spherical"])
def test_every_covariance_type_round_trips_through_predict(covariance, tmp_path, capsys):
    path = tmp_path / "m.json"
    assert gmm(capsys, "fit", BLOBS, "-k", "4", "--covariance", covariance, "-o", path)[0] == 0
    status, out, _ = gmm(capsys, "predict", path, BLOBS)
    assert status == 0
    frame = pd.read_csv(io.StringIO(out))
    assert list(frame.columns) == ["label"] + [f"prob_{c}" for c in range(4)]
    model = load_model(str(path))
    x = pd.read_csv(BLOBS).to_numpy()
    assert np.array_equal(frame["label"].to_numpy(), model.predict(x))
    np.testing.assert_allclose(frame.iloc[:, 1:].to_numpy(), model.predict_proba(x), rtol=1e-12)


def test_predict_options(blobs_model, capsys):
    status, out, _ = gmm(capsys, "predict", blobs_model, WITH_ID, "--no-proba", "--keep-input")
    assert status == 0
    frame = pd.read_csv(io.StringIO(out))
    assert list(frame.columns) == ["id", "x", "y", "label"]
    assert frame["id"].iloc[0] == "p0000" and len(frame) == 200


def test_predict_matches_columns_by_name(blobs_model, tmp_path, capsys):
    swapped = tmp_path / "swapped.csv"
    pd.read_csv(BLOBS)[["y", "x"]].to_csv(swapped, index=False)
    _, straight, _ = gmm(capsys, "predict", blobs_model, BLOBS)
    _, reordered, _ = gmm(capsys, "predict", blobs_model, swapped)
    assert straight == reordered


def test_predict_by_position_without_header(blobs_model, tmp_path, capsys):
    bare = tmp_path / "bare.tsv"
    pd.read_csv(BLOBS).to_csv(bare, index=False, header=False, sep="\t")
    _, expected, _ = gmm(capsys, "predict", blobs_model, BLOBS)
    status, out, _ = gmm(capsys, "predict", blobs_model, bare, "--no-header", "-d", "\t")
    assert status == 0 and out == expected


def test_loglik_text_json_and_per_sample(blobs_model, capsys):
    model = load_model(str(blobs_model))
    x = pd.read_csv(BLOBS).to_numpy()
    expected = model.score_samples(x)
    status, out, _ = gmm(capsys, "loglik", blobs_model, BLOBS, "--json")
    result = json.loads(out)
    assert status == 0
    assert result["log_likelihood"] == pytest.approx(expected.sum(), rel=1e-12)
    assert result["n_rows"] == 1000
    assert result["bic"] == pytest.approx(-2 * expected.sum() + 23 * np.log(1000), rel=1e-12)
    status, out, _ = gmm(capsys, "loglik", blobs_model, BLOBS)
    text = dict(line.split("\t") for line in out.strip().splitlines())
    assert float(text["mean_log_likelihood"]) == pytest.approx(expected.mean(), rel=1e-12)
    status, out, _ = gmm(capsys, "loglik", blobs_model, BLOBS, "--per-sample")
    per_row = pd.read_csv(io.StringIO(out))["log_density"].to_numpy()
    np.testing.assert_allclose(per_row, expected, rtol=1e-12)


def test_drop_missing_reports_how_many(tmp_path, capsys):
    data = tmp_path / "holes.csv"
    frame = pd.read_csv(BLOBS)
    frame.loc[[3, 10, 20], "y"] = np.nan
    frame.to_csv(data, index=False)
    status, out, err = gmm(capsys, "fit", data, "-k", "4", "--missing", "drop")
    assert status == 0
    assert "dropped 3 row" in err
    assert json.loads(out)["fit"]["n_samples"] == 997


def test_warm_start_from_a_model_file(blobs_model, tmp_path, capsys):
    out_path = tmp_path / "warm.json"
    status, _, _ = gmm(capsys, "fit", BLOBS, "--init", blobs_model, "-o", out_path)
    assert status == 0
    warm = json.loads(out_path.read_text())["fit"]
    cold = json.loads(blobs_model.read_text())["fit"]
    assert warm["log_likelihood_history"][0] == pytest.approx(cold["mean_log_likelihood"])
    assert warm["n_iter"] <= 4  # the default rule needs two estimates of the limit: 4 values


def test_not_converging_is_a_warning_not_an_error(capsys):
    status, out, err = gmm(capsys, "fit", BLOBS, "-k", "4", "--max-iter", "1")
    assert status == 0 and json.loads(out)["fit"]["converged"] is False
    assert "warning: did not converge in 1 iterations" in err


def test_collapse_is_reported(tmp_path, capsys):
    data = tmp_path / "spike.csv"
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 40), rng.normal(8, 1, 40), [40.0]])
    pd.DataFrame({"v": values}).to_csv(data, index=False)
    status, out, err = gmm(capsys, "fit", data, "-k", "3", "--init", "random-from-data")
    assert status == 0
    fit = json.loads(out)["fit"]
    assert fit["reseeds"] and "re-seeded" in err
    # the point at 40 holds a component from any start: the model ends collapsed onto it
    (collapse,) = fit["collapsed"]
    component = collapse["component"]
    assert collapse["reason"] == "few-points"
    assert json.loads(out)["means"][component] == [pytest.approx(40.0, abs=1e-9)]
    assert json.loads(out)["weights"][component] == pytest.approx(1 / len(values), rel=1e-9)
    assert (
        "gmm: warning: every restart ended with a collapsed component: "
        f"component {component} holds only 1 effective row (collapsed onto a point)"
    ) in " ".join(err.split())


def test_typer_runner_and_help_has_an_example():
    runner = CliRunner()
    for command in ["fit", "predict", "loglik"]:
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "Example: gmm " + command in result.output
    result = runner.invoke(app, ["loglik", str(ROOT / "missing.json"), str(BLOBS)])
    assert result.exit_code == 2


# -- bad input: one line, exit 2, nothing written --------------------------------------------
@pytest.fixture
def write(tmp_path):
    def _write(name: str, text: str | bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    return _write


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("empty.csv", "", ["empty.csv", "empty"]),
        ("blank.csv", "x,y\n1,2\nNA,\n5,6\n", ["blank.csv", "line 3", "no value"]),
        ("header.csv", "x,y\n", ["header.csv", "no data rows"]),
        ("bad.csv", "x,y\n1,2\n3,abc\n5,6\n", ["bad.csv", "line 3", "'y'", "abc"]),
        ("nan.csv", "x,y\n1,2\n3,nan\n5,6\n", ["nan.csv", "line 3", "'y'", "missing"]),
        ("inf.csv", "x,y\n1,2\n3,4\n5,inf\n", ["inf.csv", "line 4", "'y'", "finite"]),
        ("ragged.csv", "x,y\n1,2\n3,4,5\n", ["ragged.csv", "line 3"]),
        ("two.csv", "x,y\n1,2\n3,4\n", ["two.csv", "2 rows", "3 components"]),
    ],
)
def test_bad_data_for_fit(name, content, fragments, write, tmp_path, capsys):
    data = write(name, content)
    out_path = tmp_path / "never.json"
    missing = ["--missing", "error"] if name == "nan.csv" else []  # em (the default) fits it
    status, out, err = gmm(capsys, "fit", data, "-k", "3", "-o", out_path, *missing)
    assert_user_error(status, out, err, *fragments)
    assert not out_path.exists()


def test_missing_and_unreadable_files(tmp_path, capsys):
    assert_user_error(*gmm(capsys, "fit", tmp_path / "nope.csv", "-k", "2"), "nope.csv")
    locked = tmp_path / "locked.csv"
    locked.write_text("x\n1\n2\n")
    locked.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        assert_user_error(*gmm(capsys, "fit", locked, "-k", "1"), "locked.csv")
    assert_user_error(*gmm(capsys, "fit", tmp_path, "-k", "1"), str(tmp_path))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["-k", "0"], ["-k", ">= 1"]),
        (["-k", "-2"], ["-k"]),
        (["-k", "two"], ["-k", "two", "valid int"]),
        ([], ["-k"]),
        (["-k", "2", "--covariance", "round"], ["--covariance", "round"]),
        (["-k", "2", "--init", "magic"], ["--init", "magic"]),
        (["-k", "2", "--tol", "-1"], ["--tol"]),
        (["-k", "2", "--reg-covar", "-1e-6"], ["--reg-covar"]),
        (["-k", "2", "--n-init", "0"], ["--n-init"]),
        (["-k", "2", "--missing", "maybe"], ["--missing", "maybe"]),
        (["-k", "2", "--columns", "x,z"], ["blobs_2d.csv", "'z'"]),
        (["-k", "2", "--columns", "5"], ["blobs_2d.csv", "5"]),
        (["-k", "2", "--frobnicate"], ["--frobnicate"]),
    ],
)
def test_bad_arguments_for_fit(args, fragments, capsys):
    assert_user_error(*gmm(capsys, "fit", BLOBS, *args), *fragments)


# Option abuse on every command: each case ends in exit 2 with one line naming the option.
# MODEL is a model file fitted to BLOBS, DATA a copy of BLOBS, OUT a new file in tmp_path.
OPTION_ABUSE = [
    ("fit", ["-k", "2", "--tol", "inf"], ["--tol inf: must be a finite number >= 0"]),
    ("fit", ["-k", "2", "--tol", "1e400"], ["--tol inf: must be a finite number >= 0"]),
    ("fit", ["-k", "2", "--tol", "nan"], ["--tol nan: must be a finite number >= 0"]),
    ("fit", ["-k", "2", "--reg-covar", "-inf"], ["--reg-covar -inf: must be a finite"]),
    ("fit", ["-k", "2", "--reg-covar", "1e301"], ["--reg-covar 1e+301: must be at most 1e+300"]),
    ("fit", ["-k", "2", "--reg-covar", "1e299"], ["--reg-covar 1e+299: times the variance of"]),
    ("fit", ["-k", "2", "--seed", "-1"], ["--seed -1: must be >= 0"]),
    ("fit", ["-k", "2", "--max-iter", "-1"], ["--max-iter -1: must be >= 0"]),
    ("fit", ["-k", "2.5"], ["'-k'", "valid int"]),
    ("fit", ["-k", "1001"], ["DATA: 1000 rows are fewer than the 1001 components"]),
    ("fit", ["-k", "2", "--threads", "-1"], ["--threads -1: must be >= 1"]),
    ("fit", ["-k", "2", "--dtype", "float16"], ["--dtype 'float16'"]),
    ("fit", ["--init", "MODEL", "-k", "3"], ["MODEL: the model has 4 components but -k is 3"]),
    ("fit", ["--init", "MODEL", "--covariance", "diag"], ["full covariances but --covariance"]),
    ("fit", ["--init", "MODEL", "--standardize"], ["MODEL: --standardize needs a standardized"]),
    ("fit", ["--init", "MODEL", "-o", "MODEL"], ["MODEL: refusing to overwrite an input"]),
    ("fit", ["-k", "2", "-o", "DATA"], ["DATA: refusing to overwrite an input"]),
    ("select", ["-k", "0-2"], ["-k/--components '0-2'", "must be >= 1"]),
    ("select", ["-k", "3-1"], ["-k/--components '3-1'", "empty range"]),
    ("select", ["-k", "2.5"], ["-k/--components '2.5'"]),
    ("select", ["-k", "1-1001"], ["DATA: 1000 rows are fewer than the 1001 components"]),
    ("select", ["--covariance", "full,round"], ["--covariance 'round'"]),
    ("select", ["--criterion", "cp"], ["--criterion 'cp': use one of bic, aic"]),
    ("select", ["--jobs", "0"], ["--jobs 0: must be >= 1"]),
    ("select", ["--n-init", "0"], ["--n-init 0: must be >= 1"]),
    ("select", ["--tol", "-1"], ["--tol -1.0: must be a finite number >= 0"]),
    ("select", ["--reg-covar", "inf"], ["--reg-covar inf: must be a finite number >= 0"]),
    ("select", ["--seed", "-3"], ["--seed -3: must be >= 0"]),
    ("select", ["-o", "OUT", "--table", "OUT"], ["--table OUT: -o writes the model to that"]),
    ("select", ["--table", "-"], ["--table -: -o writes the model to stdout too"]),
    ("select", ["--table", "DATA"], ["DATA: refusing to overwrite an input"]),
    ("sample", ["-n", "0"], ["-n/--n-samples 0: must be >= 1"]),
    ("sample", ["-n", "2.5"], ["'-n' / '--n-samples'", "valid int"]),
    ("sample", ["--seed", "-1"], ["--seed -1: must be >= 0"]),
    ("sample", ["-o", "MODEL"], ["MODEL: refusing to overwrite an input"]),
    ("predict", ["-o", "DATA"], ["DATA: refusing to overwrite an input"]),
    ("predict", ["-o", "MODEL"], ["MODEL: refusing to overwrite an input"]),
    ("predict", ["--missing", "maybe"], ["--missing 'maybe'"]),
    ("predict", ["-d", "ab"], ["DATA: the delimiter must be one character"]),
    ("predict", ["--columns", "x,z"], ["DATA: no column 'z'"]),
    ("loglik", ["--json", "--per-sample"], ["--json and --per-sample cannot be used together"]),
    ("loglik", ["-o", "MODEL"], ["MODEL: refusing to overwrite an input"]),
    ("loglik", ["-o", "DATA", "--per-sample"], ["DATA: refusing to overwrite an input"]),
]


@pytest.mark.parametrize(("command", "options", "fragments"), OPTION_ABUSE)
def test_option_abuse_on_every_command(command, options, fragments, blobs_model, tmp_path, capsys):
    places = {"DATA": tmp_path / "data.csv", "MODEL": tmp_path / "model.json"}
    places["OUT"] = tmp_path / "out.json"
    places["DATA"].write_bytes(BLOBS.read_bytes())
    places["MODEL"].write_bytes(blobs_model.read_bytes())
    positional = {"fit": ["DATA"], "select": ["DATA", "-k", "1-2"], "sample": ["MODEL"]}
    args = [command, *positional.get(command, ["MODEL", "DATA"]), *options]
    status, out, err = gmm(capsys, *[str(places.get(a, a)) for a in args])
    for name, place in places.items():
        fragments = [re.sub(rf"\b{name}\b", str(place), f) for f in fragments]
    assert_user_error(status, out, err, *fragments)
    assert places["DATA"].read_bytes() == BLOBS.read_bytes()
    assert places["MODEL"].read_bytes() == blobs_model.read_bytes()
    assert not places["OUT"].exists()


def test_numerical_range_errors_are_user_errors_naming_the_data(capsys, tmp_path, monkeypatch):
    """The engine's NumericalRangeError (values beyond the working precision) is exit 2 with
    one line naming the data file (and the model, when scoring), never an internal error."""
    from gmmcli.engine.mixture import GaussianMixture
    from gmmcli.engine.params import NumericalRangeError

    def overflow(self, x, sample_weight=None):
        raise NumericalRangeError("component 0's covariance is not finite")

    monkeypatch.setattr(GaussianMixture, "fit", overflow)
    status, out, err = gmm(capsys, "fit", BLOBS, "-k", "2", "--dtype", "float32", "-q")
    assert_user_error(status, out, err)
    assert err == (
        f"gmm: error: {BLOBS}: component 0's covariance is not finite "
        "(try --dtype float64 or --standardize)\n"
    )
    status, out, err = gmm(capsys, "fit", BLOBS, "-k", "2", "--standardize", "-q")
    assert err == f"gmm: error: {BLOBS}: component 0's covariance is not finite\n"
    monkeypatch.undo()
    # a row 1e5 from components of variance 1e-300: its log density is below -1e309
    model = tmp_path / "tight.json"
    doc = {
        "format": "gmmcli-model",
        "version": 1,
        "covariance_type": "diag",
        "n_components": 2,
        "n_features": 2,
        "feature_names": ["x", "y"],
        "weights": [0.5, 0.5],
        "means": [[0.0, 0.0], [1.0, 1.0]],
        "covariances": [[1e-300, 1e-300], [1e-300, 1e-300]],
    }
    model.write_text(json.dumps(doc))
    points = tmp_path / "points.csv"
    points.write_text("x,y\n0,0\n100000,0\n")
    for command in (["predict"], ["loglik", "--per-sample"]):
        status, out, err = gmm(capsys, command[0], model, points, *command[1:])
        assert_user_error(
            status,
            out,
            err,
            f"{points}: row 2 lies too far from every component for its log density to be "
            f"represented in float64 (model {model})",
        )


def test_max_iter_0_writes_the_starting_model_with_its_log_likelihood(capsys, tmp_path):
    """--max-iter 0 is allowed: no EM step, the initial model (k-means++ start), marked not
    converged, and its recorded log-likelihood is that of the parameters written."""
    status, out, err = gmm(capsys, "fit", BLOBS, "-k", "4", "--max-iter", "0", "-q")
    assert status == 0, err
    model = json.loads(out)
    fit = model["fit"]
    assert fit["n_iter"] == 0 and fit["converged"] is False
    assert len(fit["log_likelihood_history"]) == 1
    path = tmp_path / "start.json"
    path.write_text(out)
    status, out, err = gmm(capsys, "loglik", path, BLOBS, "--json")
    assert status == 0, err
    assert json.loads(out)["log_likelihood"] == pytest.approx(fit["log_likelihood"], rel=1e-9)
    # one EM step from the same start moves away from it and raises the log-likelihood
    _, out, _ = gmm(capsys, "fit", BLOBS, "-k", "4", "--max-iter", "1", "-q")
    assert json.loads(out)["fit"]["log_likelihood"] > fit["log_likelihood"]


def test_output_in_a_missing_folder_fails_before_fitting(tmp_path, capsys):
    target = tmp_path / "no" / "such" / "m.json"
    status, out, err = gmm(capsys, "fit", BLOBS, "-k", "2", "-o", target)
    assert_user_error(status, out, err, "m.json", "does not exist")
    assert "iter" not in err


def test_output_never_overwrites_an_input(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_bytes(BLOBS.read_bytes())
    assert_user_error(*gmm(capsys, "fit", data, "-k", "2", "-o", data), "d.csv", "input")
    assert data.read_bytes() == BLOBS.read_bytes()


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("this is not json", ["not valid JSON"]),
        ('{"format": "gmmcli-model", "version": 1, "covariance_type": "full"', ["not valid JSON"]),
        ('{"format": "sklearn", "version": 1}', ["not a gmm model file"]),
        ("[1, 2, 3]", []),
    ],
)
def test_bad_model_files(content, fragments, write, capsys):
    model = write("model.json", content)
    status, out, err = gmm(capsys, "predict", model, BLOBS)
    assert_user_error(status, out, err, "model.json", *fragments)


def test_future_version_and_inconsistent_models(blobs_model, write, capsys):
    doc = json.loads(blobs_model.read_text())
    future = write("future.json", json.dumps({**doc, "version": 2}))
    assert_user_error(*gmm(capsys, "loglik", future, BLOBS), "future.json", "version 2")
    bad_weights = write("weights.json", json.dumps({**doc, "weights": [0.5, 0.5, 0.5, 0.5]}))
    assert_user_error(*gmm(capsys, "predict", bad_weights, BLOBS), "weights.json", "sum")
    cov = doc["covariances"]
    cov[1][0][1] += 1.0
    asym = write("asym.json", json.dumps({**doc, "covariances": cov}))
    assert_user_error(*gmm(capsys, "predict", asym, BLOBS), "asym.json", "symmetric")


def test_data_that_does_not_match_the_model(blobs_model, write, capsys):
    other = write("other.csv", "x,z\n1,2\n3,4\n")
    assert_user_error(*gmm(capsys, "predict", blobs_model, other), "other.csv", "'y'")
    semis = write("semis.csv", "x;y\n1;2\n3;4\n")
    status, out, err = gmm(capsys, "predict", blobs_model, semis)
    assert_user_error(status, out, err, "semis.csv", "delimiter")
    narrow = write("narrow.csv", "1\n2\n")
    assert_user_error(*gmm(capsys, "loglik", blobs_model, narrow, "--no-header"), "narrow.csv")
    assert_user_error(
        *gmm(capsys, "loglik", blobs_model, BLOBS, "--json", "--per-sample"), "--per-sample"
    )


# -- real processes: stdout stays data ---------------------------------------------------------
def _gmm_process(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gmmcli", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_subprocess_fit_predict_loglik_pipeline(tmp_path):
    fitted = _gmm_process("fit", BLOBS, "-k", "4")
    assert fitted.returncode == 0, fitted.stderr
    model = json.loads(fitted.stdout)  # stdout is the model and nothing else
    model_path = tmp_path / "m.json"
    model_path.write_bytes(fitted.stdout)
    assert model["fit"]["converged"]
    predicted = _gmm_process("predict", model_path, "-", stdin=BLOBS.read_bytes())
    assert predicted.returncode == 0, predicted.stderr
    labels = pd.read_csv(io.BytesIO(predicted.stdout))["label"].to_numpy()
    truth = pd.read_csv(ROOT / "sample_data" / "blobs_2d_labels.csv")["label"].to_numpy()
    # the four blobs are recovered: each true cluster is exactly one predicted label
    pairs = set(zip(truth.tolist(), labels.tolist(), strict=True))
    assert len(pairs) == 4 and len({p for _, p in pairs}) == 4, sorted(pairs)
    loglik = _gmm_process("loglik", model_path, BLOBS, "--json")
    assert json.loads(loglik.stdout)["n_rows"] == 1000


def test_subprocess_error_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,x\n")
    result = _gmm_process("fit", bad, "-k", "1")
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode().strip().count("\n") == 0
    assert result.stderr.startswith(b"gmm: error: ")


def test_subprocess_shell_pipeline(tmp_path):
    model_path = tmp_path / "m.json"
    assert _gmm_process("fit", BLOBS, "-k", "4", "-o", model_path, "-q").returncode == 0
    command = (
        f"cat {BLOBS} | {sys.executable} -m gmmcli predict {model_path} - "
        "| cut -d, -f1 | sort | uniq -c"
    )
    result = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120, check=False)
    counts = [line.split() for line in result.stdout.decode().strip().splitlines()]
    assert [label for _, label in counts] == ["0", "1", "2", "3", "label"]
    assert sum(int(n) for n, label in counts if label != "label") == 1000


def test_subprocess_broken_pipe_is_quiet(tmp_path):
    model_path = tmp_path / "m.json"
    assert _gmm_process("fit", BLOBS, "-k", "4", "-o", model_path, "-q").returncode == 0
    command = f"{sys.executable} -m gmmcli predict {model_path} {BLOBS} | head -1"
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, timeout=120, check=False
    )
    assert result.stdout.decode().startswith("label")
    assert b"Traceback" not in result.stderr and b"Error" not in result.stderr


@pytest.mark.parametrize("covariance", ["full", "tied", "diag", "spherical"])
def test_every_model_written_validates_against_the_shipped_schema(covariance, capsys):
    import jsonschema

    from gmmcli.modelfile import schema

    for data, k in [(BLOBS, "3"), (ONE_D, "3")]:
        status, out, _ = gmm(
            capsys, "fit", data, "-k", k, "--covariance", covariance, "--n-init", "2"
        )
        assert status == 0
        jsonschema.validate(json.loads(out), schema())


def test_model_from_stdin_and_warm_start_mismatch(blobs_model, capsys, monkeypatch):
    class FakeStdin:
        buffer = io.BytesIO(blobs_model.read_bytes())

    monkeypatch.setattr(sys, "stdin", FakeStdin())
    status, out, _ = gmm(capsys, "loglik", "-", BLOBS, "--json")
    assert status == 0 and json.loads(out)["n_rows"] == 1000
    assert_user_error(
        *gmm(capsys, "fit", BLOBS, "--init", blobs_model, "-k", "3"), "4 components", "-k is 3"
    )
    assert_user_error(*gmm(capsys, "predict", "-", "-"), "stdin")


def test_float32_fit_and_its_options(capsys):
    status, out, _ = gmm(capsys, "fit", BLOBS, "-k", "4", "--dtype", "float32", "--threads", "2")
    assert status == 0
    single = json.loads(out)["fit"]
    _, out, _ = gmm(capsys, "fit", BLOBS, "-k", "4")
    double = json.loads(out)["fit"]
    assert single["options"]["dtype"] == "float32"
    assert single["log_likelihood"] == pytest.approx(double["log_likelihood"], rel=1e-4)
    assert_user_error(*gmm(capsys, "fit", BLOBS, "-k", "4", "--dtype", "float16"), "--dtype")
    assert_user_error(*gmm(capsys, "fit", BLOBS, "-k", "4", "--threads", "0"), "--threads")


@pytest.mark.parametrize(("shape", "k"), [((5, 10), 1), ((5, 10), 2), ((3, 2), 3), ((4, 1), 4)])
def test_too_few_rows_for_the_model_warn_and_still_write_a_finite_model(shape, k, tmp_path, capsys):
    """d > n and n = k: the fit completes, says the result is degenerate, and writes no NaN."""
    data = tmp_path / "few.csv"
    values = np.random.default_rng(1).normal(size=shape)
    pd.DataFrame(values, columns=[f"c{j}" for j in range(shape[1])]).to_csv(data, index=False)
    status, out, err = gmm(capsys, "fit", data, "-k", str(k))
    assert status == 0
    assert "warning" in err and "degenerate" in err
    model = json.loads(out)  # json.loads accepts NaN, so check it explicitly
    assert "NaN" not in out and "Infinity" not in out
    assert model["fit"]["collapsed"]


@pytest.mark.parametrize("factor", [1e-6, 1e6])
def test_data_in_other_units_gets_the_same_labels(tmp_path, capsys, factor):
    """reg_covar is relative to each column's variance, so the sample blobs in other units
    get the same labels; with --reg-scale absolute (scikit-learn's way) 1e-6 units do not
    (every covariance then is mostly the 1e-6 added to it)."""
    x = pd.read_csv(BLOBS)
    scaled = tmp_path / "scaled.csv"
    (x * factor).to_csv(scaled, index=False, float_format="%.17g")

    def labels(path: Path, *extra: str) -> np.ndarray:
        model = tmp_path / "model.json"
        status, _, err = gmm(capsys, "fit", str(path), "-k", "4", "-q", "-o", str(model), *extra)
        assert status == 0, err
        status, out, err = gmm(capsys, "predict", str(model), str(path))
        assert status == 0, err
        return pd.read_csv(io.StringIO(out))["label"].to_numpy()

    base = labels(BLOBS)
    assert np.array_equal(labels(scaled), base)
    if factor < 1:
        assert not np.array_equal(labels(scaled, "--reg-scale", "absolute"), base)
