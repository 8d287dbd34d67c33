"""describe() and print_description(): per-component numbers, the back-transform of standardized
parameters, the fit summary, JSON-ability, and the rendered summary on stderr."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

import gmmcli
from gmmcli import GaussianMixture, modelfile
from gmmcli.commands.fitting import fit_record
from gmmcli.describe import FIT_SUMMARY_KEYS, describe
from gmmcli.engine.covariance import covariance_names
from gmmcli.engine.params import MixtureParams
from gmmcli.report import print_description

COVARIANCE_TYPES = covariance_names()

SIGMA = np.array([[4.0, 1.2], [1.2, 1.0]])  # std (2, 1), correlation 1.2 / 2 = 0.6


def rotated(angle_degrees: float, major: float = 9.0, minor: float = 1.0) -> np.ndarray:
    """R diag(major, minor) Rᵀ: a covariance whose major axis is at the given angle."""
    t = math.radians(angle_degrees)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return r @ np.diag([major, minor]) @ r.T


def full_params(*covariances: np.ndarray, means: np.ndarray | None = None) -> MixtureParams:
    k, d = len(covariances), covariances[0].shape[0]
    return MixtureParams(
        "full",
        np.full(k, 1.0 / k),
        np.arange(k * d, dtype=float).reshape(k, d) if means is None else means,
        np.stack(covariances),
    )


def assert_plain_json(value: object) -> None:
    """Only dict, list, str, bool, int, finite float and None, with string keys."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain_json(item)
    elif isinstance(value, float):
        assert type(value) is float and math.isfinite(value)
    else:
        assert value is None or type(value) in (str, bool, int), repr(value)


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    """Two 2-D blobs; the first with covariance SIGMA."""
    rng = np.random.default_rng(7)
    a = rng.multivariate_normal([0.0, 0.0], SIGMA, size=4000)
    b = rng.multivariate_normal([20.0, -20.0], np.diag([0.25, 2.25]), size=2000)
    return np.vstack([a, b])


# ---------------------------------------------------------------------------------------------
# Per-component numbers


def test_full_std_correlation_and_ellipse():
    out = describe(full_params(SIGMA), ["x", "y"], {})
    (comp,) = out["components"]
    assert comp["component"] == 0
    assert comp["weight"] == 1.0
    assert comp["mean"] == [0.0, 1.0]
    assert comp["std"] == pytest.approx([2.0, 1.0])
    np.testing.assert_allclose(comp["correlation"], [[1.0, 0.6], [0.6, 1.0]])
    expected_axes = np.sqrt(np.linalg.eigvalsh(SIGMA))[::-1]
    assert comp["ellipse"]["semi_axes"] == pytest.approx(expected_axes.tolist())
    # the major eigenvector of SIGMA
    _, vecs = np.linalg.eigh(SIGMA)
    angle = math.degrees(math.atan(vecs[1, 1] / vecs[0, 1]))
    assert comp["ellipse"]["angle_degrees"] == pytest.approx(angle)
    assert 0 < angle < 45
    assert out["covariance_type"] == "full"
    assert out["n_components"] == 1 and out["n_features"] == 2
    assert out["feature_names"] == ["x", "y"]
    assert out["standardized"] is False


@pytest.mark.parametrize(
    ("rotation", "expected"),
    [(0, 0), (30, 30), (-45, -45), (60, 60), (89, 89), (90, 90), (120, -60), (150, -30), (-90, 90)],
)
def test_ellipse_angle_of_a_rotated_covariance(rotation, expected):
    out = describe(full_params(rotated(rotation)), ["x", "y"], {})
    ellipse = out["components"][0]["ellipse"]
    assert ellipse["semi_axes"] == pytest.approx([3.0, 1.0])
    assert ellipse["angle_degrees"] == pytest.approx(expected, abs=1e-9)
    assert -90 < ellipse["angle_degrees"] <= 90


def test_rotated_30_degrees_has_the_matching_correlation():
    cov = rotated(30)
    out = describe(full_params(cov), ["x", "y"], {})
    comp = out["components"][0]
    assert comp["std"] == pytest.approx(np.sqrt(np.diag(cov)).tolist())
    rho = cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1])
    assert comp["correlation"][0][1] == pytest.approx(rho)
    assert comp["correlation"][1][0] == pytest.approx(rho)


def test_tied_every_component_shares_std_and_correlation():
    params = MixtureParams(
        "tied", np.array([0.3, 0.7]), np.array([[0.0, 0.0], [5.0, 5.0]]), SIGMA.copy()
    )
    out = describe(params, ["a", "b"], {})
    for comp in out["components"]:
        assert comp["std"] == pytest.approx([2.0, 1.0])
        assert comp["correlation"][0][1] == pytest.approx(0.6)
        assert comp["ellipse"]["semi_axes"] == pytest.approx(
            np.sqrt(np.linalg.eigvalsh(SIGMA))[::-1].tolist()
        )
    assert [c["weight"] for c in out["components"]] == [0.3, 0.7]
    assert out["components"][1]["mean"] == [5.0, 5.0]


def test_diag_std_is_sqrt_of_variances_and_correlation_is_identity():
    variances = np.array([[4.0, 9.0, 0.25], [1.0, 16.0, 2.0]])
    params = MixtureParams("diag", np.array([0.5, 0.5]), np.zeros((2, 3)), variances)
    out = describe(params, ["a", "b", "c"], {})
    for comp, var in zip(out["components"], variances, strict=True):
        assert comp["std"] == pytest.approx(np.sqrt(var).tolist())
        assert comp["correlation"] == np.eye(3).tolist()
        assert "ellipse" not in comp  # only for d == 2


def test_diag_ellipse_axis_along_the_second_column():
    params = MixtureParams("diag", np.array([1.0]), np.zeros((1, 2)), np.array([[1.0, 4.0]]))
    ellipse = describe(params, ["x", "y"], {})["components"][0]["ellipse"]
    assert ellipse == {"semi_axes": [2.0, 1.0], "angle_degrees": 90.0}


def test_spherical_std_in_every_column_and_circle():
    params = MixtureParams(
        "spherical", np.array([0.25, 0.75]), np.zeros((2, 2)), np.array([4.0, 0.01])
    )
    out = describe(params, ["x", "y"], {})
    first, second = out["components"]
    assert first["std"] == pytest.approx([2.0, 2.0])
    assert second["std"] == pytest.approx([0.1, 0.1])
    assert first["correlation"] == [[1.0, 0.0], [0.0, 1.0]]
    assert first["ellipse"]["semi_axes"] == pytest.approx([2.0, 2.0])
    assert first["ellipse"]["angle_degrees"] == 0.0


def test_one_column_model():
    params = MixtureParams("full", np.array([1.0]), np.array([[3.0]]), np.array([[[2.25]]]))
    comp = describe(params, ["t"], {})["components"][0]
    assert comp["std"] == [1.5]
    assert comp["correlation"] == [[1.0]]
    assert "ellipse" not in comp


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fitted_model_values_match_its_parameters(blobs, covariance_type):
    model = GaussianMixture(2, covariance_type=covariance_type, seed=1).fit(blobs)
    params = model.params_
    out = describe(params, ["x", "y"], fit_record(model, ["x", "y"]))
    full = params.full_covariances()
    assert out["covariance_type"] == covariance_type
    assert sum(c["weight"] for c in out["components"]) == pytest.approx(1.0)
    for i, comp in enumerate(out["components"]):
        assert comp["weight"] == pytest.approx(params.weights[i])
        assert comp["mean"] == pytest.approx(params.means[i].tolist())
        assert comp["std"] == pytest.approx(np.sqrt(np.diag(full[i])).tolist())
        axes = np.sqrt(np.linalg.eigvalsh(full[i]))[::-1]
        assert comp["ellipse"]["semi_axes"] == pytest.approx(axes.tolist())
        if covariance_type in ("diag", "spherical"):
            assert comp["correlation"] == [[1.0, 0.0], [0.0, 1.0]]
        else:
            rho = full[i][0, 1] / math.sqrt(full[i][0, 0] * full[i][1, 1])
            assert comp["correlation"][0][1] == pytest.approx(rho)
    json.dumps(out, allow_nan=False)
    assert_plain_json(out)


def test_fitted_full_model_recovers_the_known_covariance(blobs):
    model = GaussianMixture(2, covariance_type="full", seed=0).fit(blobs)
    out = describe(model.params_, ["x", "y"], {})
    near_origin = min(out["components"], key=lambda c: abs(c["mean"][0]))
    assert near_origin["weight"] == pytest.approx(2 / 3, abs=0.01)
    assert near_origin["std"] == pytest.approx([2.0, 1.0], rel=0.05)
    assert near_origin["correlation"][0][1] == pytest.approx(0.6, abs=0.03)
    other = max(out["components"], key=lambda c: abs(c["mean"][0]))
    assert other["std"] == pytest.approx([0.5, 1.5], rel=0.05)
    assert other["ellipse"]["semi_axes"] == pytest.approx([1.5, 0.5], rel=0.05)
    assert abs(other["ellipse"]["angle_degrees"]) == pytest.approx(90.0, abs=3.0)


# ---------------------------------------------------------------------------------------------
# Standardized parameters


def scaled(params: MixtureParams, center: list[float], scale: list[float]) -> MixtureParams:
    """The same parameters, marked as fitted on (x − center) / scale."""
    return replace(params, center=np.array(center), scale=np.array(scale))


def test_standardize_back_transforms_means_std_and_ellipse():
    means = np.array([[0.0, 0.0], [1.0, -2.0]])
    params = full_params(SIGMA, rotated(30), means=means)
    center, scale = [10.0, -5.0], [3.0, 0.5]
    plain = describe(params, ["x", "y"], {})
    out = describe(scaled(params, center, scale), ["x", "y"], {})
    assert out["standardized"] is True
    for raw, comp, cov in zip(
        plain["components"], out["components"], [SIGMA, rotated(30)], strict=True
    ):
        expected_mean = (np.array(raw["mean"]) * scale + center).tolist()
        assert comp["mean"] == pytest.approx(expected_mean)
        assert comp["std"] == pytest.approx((np.array(raw["std"]) * scale).tolist())
        np.testing.assert_allclose(comp["correlation"], raw["correlation"])
        original = np.diag(scale) @ cov @ np.diag(scale)
        axes = np.sqrt(np.linalg.eigvalsh(original))[::-1]
        assert comp["ellipse"]["semi_axes"] == pytest.approx(axes.tolist())
        assert comp["weight"] == raw["weight"]
    assert out["components"][1]["mean"] == pytest.approx([13.0, -6.0])


def test_standardize_identity_covariance_gives_axes_equal_to_the_scale():
    params = full_params(np.eye(2), means=np.zeros((1, 2)))
    out = describe(scaled(params, [1.0, 2.0], [1.0, 4.0]), ["x", "y"], {})
    comp = out["components"][0]
    assert comp["mean"] == [1.0, 2.0]
    assert comp["std"] == [1.0, 4.0]
    assert comp["ellipse"] == {"semi_axes": [4.0, 1.0], "angle_degrees": 90.0}


def test_wrong_number_of_names_is_a_value_error():
    with pytest.raises(ValueError, match="feature names"):
        describe(full_params(SIGMA), ["x"], {})


# ---------------------------------------------------------------------------------------------
# The fit summary


def test_fit_summary_from_a_real_model_file(blobs, tmp_path):
    # three components for two blobs: EM creeps for thousands of iterations, so the fit
    # converges only by scikit-learn's rule
    model = GaussianMixture(3, covariance_type="full", n_init=2, seed=5, tol=1e-3).fit(blobs)
    path = str(tmp_path / "model.json")
    gmmcli.save_model(model, path, ["x", "y"])
    params, names, fit = modelfile.load_model(path)
    out = describe(params, names, fit)
    summary = out["fit"]
    assert list(summary) == list(FIT_SUMMARY_KEYS)
    assert summary["n_samples"] == len(blobs) == fit["n_samples"]
    assert summary["n_iter"] == model.n_iter_
    assert summary["converged"] is True
    assert summary["log_likelihood"] == pytest.approx(model.score(blobs) * len(blobs))
    assert summary["mean_log_likelihood"] == pytest.approx(model.score(blobs))
    assert summary["bic"] == pytest.approx(model.bic(blobs))
    assert summary["aic"] == pytest.approx(model.aic(blobs))
    assert summary["n_parameters"] == 3 - 1 + 3 * 2 + 3 * 3
    assert summary["seed"] == 5
    assert summary["init"] == "kmeans++"
    assert summary["n_init"] == 2
    assert summary["n_reseeds"] == len(fit["reseeds"])
    assert summary["collapsed"] == []
    assert summary["warnings"] == []
    assert summary["tool_version"] == gmmcli.__version__
    assert summary["n_dropped"] == fit.get("n_dropped")
    assert out["feature_names"] == ["x", "y"]
    assert sum(c["weight"] for c in out["components"]) == pytest.approx(1.0)
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text) == out
    assert_plain_json(out)


def test_empty_fit_gives_every_key_none_or_empty():
    for fit in ({}, None):
        summary = describe(full_params(SIGMA), ["x", "y"], fit)["fit"]
        assert list(summary) == list(FIT_SUMMARY_KEYS)
        for key, value in summary.items():
            assert value == ([] if key in ("collapsed", "warnings") else None), key


def test_partial_hand_written_fit():
    fit = {
        "n_samples": 10,
        "converged": False,
        "bic": float("inf"),  # not finite: reported as None
        "reseeds": [{"component": 0}, {"component": 1}],
        "collapsed": [
            {"component": 1, "column": "y", "reason": "repeated value", "description": "c1 flat"},
            {"component": 2, "column": None, "reason": "one point"},
        ],
        "warnings": ["something odd"],
        "options": {"init": "random"},
        "future_key": {"anything": 1},
    }
    out = describe(full_params(SIGMA), ["x", "y"], fit)
    summary = out["fit"]
    assert summary["n_samples"] == 10
    assert summary["converged"] is False
    assert summary["bic"] is None
    assert summary["aic"] is None
    assert summary["n_reseeds"] == 2
    assert summary["init"] == "random"
    assert summary["n_init"] is None
    assert summary["collapsed"] == ["c1 flat", "component 2: one point"]
    assert summary["warnings"] == ["something odd"]
    json.dumps(out, allow_nan=False)


def test_non_finite_parameters_are_a_value_error():
    bad = full_params(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        describe(bad, ["x", "y"], {})


# ---------------------------------------------------------------------------------------------
# print_description


def test_print_description_shows_weights_names_and_fit(blobs, tmp_path, capsys):
    model = GaussianMixture(2, covariance_type="full", seed=0).fit(blobs)
    path = str(tmp_path / "model.json")
    gmmcli.save_model(model, path, ["width", "height"])
    params, names, fit = modelfile.load_model(path)
    out = describe(params, names, fit)
    print_description(out)
    captured = capsys.readouterr()
    assert captured.err == ""  # the description is data: stdout
    err = captured.out
    assert "2 components, full covariance, 2 columns" in err
    assert "width" in err and "height" in err
    for comp in out["components"]:
        assert f"{comp['weight']:.4g}" in err
        assert f"{comp['mean'][0]:.4g}" in err
        assert f"{comp['std'][1]:.4g}" in err
        assert f"{comp['ellipse']['angle_degrees']:.1f}°" in err
    assert "converged after" in err
    assert f"{fit['bic']:.10g}" in err
    assert f"{len(blobs)} rows" in err


def test_describe_writes_to_stdout_even_with_quiet(blobs, tmp_path):
    """What `gmm describe` prints is the data someone asked for: stdout, --quiet or not."""
    import subprocess
    import sys

    model = GaussianMixture(2, covariance_type="full", seed=0).fit(blobs)
    path = str(tmp_path / "model.json")
    gmmcli.save_model(model, path, ["width", "height"])
    command = [sys.executable, "-m", "gmmcli", "describe", path]
    loud = subprocess.run(command, capture_output=True, check=True)
    quiet = subprocess.run([*command, "-q"], capture_output=True, check=True)
    assert loud.stderr == b"" and quiet.stderr == b""
    assert loud.stdout == quiet.stdout
    assert loud.stdout.startswith(b"2 components, full covariance, 2 columns")


def test_print_description_many_columns_collapses_and_warnings(capsys):
    d = 8
    params = MixtureParams("diag", np.array([0.4, 0.6]), np.zeros((2, d)), np.ones((2, d)))
    names = [f"c{j}" for j in range(d)]
    fit = {
        "n_samples": 50,
        "n_dropped": 3,
        "collapsed": [{"component": 1, "column": "c2", "reason": "x", "description": "flat c2"}],
        "warnings": ["the model is degenerate"],
    }
    print_description(describe(params, names, fit))
    err = capsys.readouterr().out
    assert "c0" in err and "c5" in err
    assert "c6" not in err and "c7" not in err
    assert "2 more" in err
    assert "0.4" in err and "0.6" in err
    assert "50 rows (3 dropped" in err
    assert "flat c2" in err
    assert "gmm: warning: the model is degenerate" in err


def test_print_description_correlation_matrix_and_standardized(capsys):
    cov = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, -0.25], [0.0, -0.25, 1.0]])
    params = MixtureParams("tied", np.array([1.0]), np.zeros((1, 3)), cov)
    print_description(
        describe(scaled(params, [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]), ["a", "[b]", "c"], {})
    )
    err = capsys.readouterr().out
    assert "original units" in err
    assert "correlation" in err
    assert "+0.50" in err and "-0.25" in err
    assert "[b]" in err  # names are shown literally, not as rich markup
    assert "no record of how this model was fitted" in err
