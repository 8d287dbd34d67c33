"""Model-file tests: round trips, the shipped schema, every malformed file, atomic writes."""

from __future__ import annotations

import copy
import dataclasses
import errno
import importlib.resources
import io
import json
import os
import stat
import sys

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gmmcli import files, modelfile
from gmmcli.engine.covariance import covariance_names, get_strategy
from gmmcli.engine.params import MixtureParams, covariance_shape
from gmmcli.errors import GmmError
from gmmcli.files import check_output_path
from gmmcli.modelfile import (
    FORMAT_NAME,
    FORMAT_VERSION,
    dumps_model,
    load_model,
    model_from_dict,
    model_to_dict,
    save_model,
    schema,
)

COVARIANCE_TYPES = covariance_names()

FIT = {
    "n_samples": 500,
    "n_dropped": 2,
    "n_iter": 3,
    "converged": True,
    "log_likelihood": -1234.5678901234567,
    "mean_log_likelihood": -2.469135780246913,
    "log_likelihood_history": [-1500.25, -1300.125, -1234.5678901234567],
    "n_parameters": 17,
    "bic": 2574.3,
    "aic": 2503.1,
    "seed": 0,
    "options": {
        "n_components": 3,
        "covariance_type": "full",
        "tol": 1e-3,
        "reg_covar": 1e-6,
        "max_iter": 100,
        "n_init": 1,
        "init": "kmeans",
    },
    "best_restart": 0,
    "restarts": [{"restart": 0, "log_likelihood": -1234.5, "n_iter": 3, "converged": True}],
    "reseeds": [{"iteration": 2, "component": 1}],
    "collapsed": [{"component": 1, "column": None, "reason": "variance below reg_covar"}],
    "warnings": ["component 1 re-seeded"],
    "tool": {"name": "gmmcli", "version": "0.1.0"},
}


def make_params(cov_type: str, k: int = 3, d: int = 2, seed: int = 0) -> MixtureParams:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(scale=10.0, size=(k, d))
    if cov_type == "full":
        a = rng.normal(size=(k, d, d))
        covariances = a @ a.transpose(0, 2, 1) + np.eye(d)
    elif cov_type == "tied":
        a = rng.normal(size=(d, d))
        covariances = a @ a.T + np.eye(d)
    elif cov_type == "diag":
        covariances = rng.uniform(0.1, 3.0, size=(k, d))
    elif cov_type == "spherical":
        covariances = rng.uniform(0.1, 3.0, size=k)
    else:  # one of mclust's other models: (k, d, d) matrices within its constraint
        from gmmcli.engine.families import m_step

        a = rng.normal(size=(k, d, d))
        covariances = m_step(cov_type, a @ a.transpose(0, 2, 1) + np.eye(d), np.ones(k))
    return MixtureParams(cov_type, weights, means, covariances)


def names(d: int) -> list[str]:
    return [f"x{i}" for i in range(d)]


def valid_doc(cov_type: str = "full", fit: dict | None = FIT) -> dict:
    params = make_params(cov_type)
    return json.loads(json.dumps(model_to_dict(params, names(params.n_features), fit)))


def assert_same_params(a: MixtureParams, b: MixtureParams) -> None:
    assert a.covariance_type == b.covariance_type
    for name in ("weights", "means", "covariances"):
        x, y = getattr(a, name), getattr(b, name)
        assert y.dtype == np.float64
        assert y.flags.c_contiguous
        assert x.shape == y.shape
        assert np.array_equal(x, y), name


def load_error(path: os.PathLike | str) -> GmmError:
    with pytest.raises(GmmError) as info:
        load_model(str(path))
    error = info.value
    assert error.status == 2
    assert "\n" not in error.message
    assert error.message.startswith(f"{path}: ")
    return error


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("cov_type", COVARIANCE_TYPES)
def test_round_trip_is_exact(tmp_path, cov_type):
    params = make_params(cov_type, k=3, d=4, seed=7)
    path = tmp_path / "model.json"
    save_model(str(path), params, names(4), FIT)
    loaded, feature_names, fit = load_model(str(path))
    assert_same_params(params, loaded)
    assert loaded.covariances.shape == covariance_shape(cov_type, 3, 4)
    assert feature_names == names(4)
    assert fit == FIT


@pytest.mark.parametrize("cov_type", COVARIANCE_TYPES)
def test_saving_twice_gives_identical_bytes(tmp_path, cov_type):
    params = make_params(cov_type)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    save_model(str(first), params, names(2), FIT)
    save_model(str(second), params, names(2), FIT)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_text(encoding="utf-8") == dumps_model(params, names(2), FIT)


def test_resaving_a_loaded_model_gives_identical_bytes(tmp_path):
    path = tmp_path / "model.json"
    save_model(str(path), make_params("diag"), names(2), FIT)
    params, feature_names, fit = load_model(str(path))
    assert dumps_model(params, feature_names, fit).encode("utf-8") == path.read_bytes()


def test_dumps_layout():
    text = dumps_model(make_params("spherical", k=1, d=1), ["x"])
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text.startswith('{\n  "format": "gmmcli-model",\n  "version": 1,')
    assert "fit" not in json.loads(text)


def test_model_to_dict_is_plain_json():
    doc = model_to_dict(make_params("full"), names(2), FIT)
    assert doc["format"] == FORMAT_NAME and doc["version"] == FORMAT_VERSION
    assert list(doc)[:9] == [
        "format",
        "version",
        "covariance_type",
        "n_components",
        "n_features",
        "feature_names",
        "weights",
        "means",
        "covariances",
    ]
    assert json.loads(json.dumps(doc)) == doc


def test_numpy_values_in_fit_become_json(tmp_path):
    fit = {
        "n_iter": np.int64(4),
        "converged": np.bool_(False),
        "log_likelihood": np.float64(-3.25),
        "log_likelihood_history": np.array([-5.0, -3.25]),
        "restarts": ({"seed": np.int32(1)},),
    }
    path = tmp_path / "m.json"
    save_model(str(path), make_params("tied"), names(2), fit)
    _, _, loaded = load_model(str(path))
    assert loaded == {
        "n_iter": 4,
        "converged": False,
        "log_likelihood": -3.25,
        "log_likelihood_history": [-5.0, -3.25],
        "restarts": [{"seed": 1}],
    }
    assert type(loaded["n_iter"]) is int and type(loaded["converged"]) is bool


def test_fit_is_optional(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(valid_doc("diag", fit=None)), encoding="utf-8")
    _, _, fit = load_model(str(path))
    assert fit == {}


def test_fit_allows_unknown_keys():
    doc = valid_doc()
    doc["fit"] = {"note": "hand-written", "options": {"extra": [1, 2]}, "n_iter": 5}
    _, _, fit = model_from_dict(doc, "m.json")
    assert fit == doc["fit"]
    assert fit is not doc["fit"]


def test_unicode_feature_names_round_trip(tmp_path):
    params = make_params("diag")
    path = tmp_path / "m.json"
    save_model(str(path), params, ["température", "列"], None)
    assert "température" in path.read_text(encoding="utf-8")
    assert load_model(str(path))[1] == ["température", "列"]


def test_save_to_stdout_and_load_from_stdin(monkeypatch, capsysbinary):
    params = make_params("full")
    save_model("-", params, names(2), FIT)
    out = capsysbinary.readouterr().out
    assert out == dumps_model(params, names(2), FIT).encode("utf-8")

    class FakeStdin:
        buffer = io.BytesIO(out)

    monkeypatch.setattr(sys, "stdin", FakeStdin())
    loaded, _, fit = load_model("-")
    assert_same_params(params, loaded)
    assert fit == FIT


def test_stdin_errors_are_named_stdin(monkeypatch):
    class FakeStdin:
        buffer = io.BytesIO(b"[1, 2]")

    monkeypatch.setattr(sys, "stdin", FakeStdin())
    with pytest.raises(GmmError, match=r"^<stdin>: top level should be a JSON object"):
        load_model("-")


def test_weights_are_renormalised():
    doc = valid_doc("spherical")
    doc["weights"] = [0.2, 0.3, 0.5000005]
    params, _, _ = model_from_dict(doc, "m.json")
    assert abs(params.weights.sum() - 1.0) < 1e-15
    np.testing.assert_allclose(params.weights, np.array([0.2, 0.3, 0.5000005]) / 1.0000005)


def test_tiny_asymmetry_is_accepted_and_kept():
    doc = valid_doc("tied")
    doc["covariances"][0][1] *= 1 + 1e-12
    params, _, _ = model_from_dict(doc, "m.json")
    assert params.covariances[0, 1] == doc["covariances"][0][1]


def test_integers_and_bom_are_accepted(tmp_path):
    doc = valid_doc("diag", fit=None)
    doc["means"] = [[1, 2], [3, 4], [5, 6]]
    path = tmp_path / "m.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc).encode("utf-8"))
    params, _, _ = load_model(str(path))
    assert params.means.dtype == np.float64
    assert params.means.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


# --------------------------------------------------------------------------- the schema


def test_schema_is_valid_draft_2020_12():
    doc = schema()
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)


@pytest.mark.parametrize("cov_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("fit", [FIT, None])
def test_written_models_validate_against_schema(tmp_path, cov_type, fit):
    path = tmp_path / "m.json"
    save_model(str(path), make_params(cov_type, k=2, d=3), names(3), fit)
    doc = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema()).validate(doc)


def test_shipped_schema_is_the_generated_one():
    # regenerate with: python -c "from gmmcli import modelfile; print(modelfile.dumps_schema(),
    # end='')" > gmmcli/schema/model.schema.json
    resource = importlib.resources.files("gmmcli") / "schema" / "model.schema.json"
    assert resource.read_text(encoding="utf-8") == modelfile.dumps_schema()
    assert schema() == modelfile.model_schema()


def test_schema_names_every_covariance_model_once():
    doc = schema()
    assert doc["properties"]["covariance_type"]["enum"] == list(COVARIANCE_TYPES)
    branches = [b["if"]["properties"]["covariance_type"]["const"] for b in doc["allOf"]]
    assert branches == list(COVARIANCE_TYPES)


def test_loader_keys_come_from_the_schema():
    assert tuple(schema()["properties"]) == modelfile._TOP_LEVEL_KEYS
    # a file without "format" is not called a model file at all (tested below)
    required = [key for key in schema()["required"] if key != "format"]
    assert len(required) == 8
    doc = valid_doc("full")
    for key in required:
        broken = copy.deepcopy(doc)
        del broken[key]
        with pytest.raises(GmmError, match=f"missing key '{key}'"):
            model_from_dict(broken, "m.json")


def _schema_nodes(node: dict):
    yield node
    for child in node.get("properties", {}).values():
        yield from _schema_nodes(child)
    if "items" in node:
        yield from _schema_nodes(node["items"])


def test_fit_schema_uses_only_what_the_loader_interprets():
    fit = schema()["$defs"]["fit"]
    nodes = list(_schema_nodes(fit))
    assert len(nodes) > 20
    for node in nodes:
        assert set(node) <= set(modelfile.SCHEMA_KEYWORDS), node
        assert node.get("additionalProperties", True) is True


@pytest.mark.parametrize(
    ("fit", "valid"),
    [
        ({"options": {"reg_scale": "absolute", "dtype": "float32"}}, True),
        ({"options": {"reg_scale": "relative"}}, False),
        ({"options": {"dtype": 32}}, False),
        ({"collapsed": [{"column": None}, {"column": "x"}]}, True),
        ({"collapsed": [{"column": 3}]}, False),
        ({"tool": {"version": 1}}, False),
        ({"restarts": [{"anything": [1, "two"]}]}, True),
    ],
)
def test_loader_and_schema_agree_on_fit(fit, valid):
    doc = valid_doc("full")
    doc["fit"] = fit
    assert jsonschema.Draft202012Validator(schema()).is_valid(doc) == valid
    if valid:
        model_from_dict(doc, "m.json")
    else:
        with pytest.raises(GmmError, match=r"^m\.json: fit\."):
            model_from_dict(doc, "m.json")


def test_enum_in_fit_is_reported_with_the_allowed_values():
    doc = valid_doc("full")
    doc["fit"] = {"options": {"reg_scale": "relative"}}
    with pytest.raises(GmmError) as info:
        model_from_dict(doc, "m.json")
    assert str(info.value) == (
        "m.json: fit.options.reg_scale should be one of 'data', 'absolute', found 'relative'"
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(extra=1),
        lambda d: d.update(format="other"),
        lambda d: d.update(version=2),
        lambda d: d.update(covariance_type="fuller"),
        lambda d: d.update(n_components=0),
        lambda d: d.pop("weights"),
        lambda d: d.update(weights=[-0.5, 0.5, 1.0]),
        lambda d: d.update(feature_names=["a", "a"]),
        lambda d: d.update(feature_names=["a", ""]),
        lambda d: d.update(means=[["a", 1.0]]),
        lambda d: d.update(fit=[]),
        lambda d: d["fit"].update(converged="yes"),
        lambda d: d["fit"]["collapsed"][0].update(column=3),
        lambda d: d.update(covariances=[1.0, 2.0, 3.0]),
    ],
)
def test_schema_rejects_bad_documents(change):
    doc = valid_doc("full")
    change(doc)
    assert not jsonschema.Draft202012Validator(schema()).is_valid(doc)


def test_schema_rejects_non_positive_variances():
    doc = valid_doc("spherical")
    doc["covariances"][1] = 0.0
    assert not jsonschema.Draft202012Validator(schema()).is_valid(doc)
    doc = valid_doc("diag")
    doc["covariances"][1][0] = -1.0
    assert not jsonschema.Draft202012Validator(schema()).is_valid(doc)


# --------------------------------------------------------------------------- malformed files


HUGE = "<1e400>"  # written as the bare literal 1e400, which json reads as inf


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


def _fit(key, value):
    return lambda d: d["fit"].__setitem__(key, value)


def _without(key):
    return lambda d: d.pop(key)


DOC_ERRORS = [
    # (covariance type, change, expected part of the message)
    ("full", _without("format"), "not a gmm model file (no 'format' key"),
    (
        "full",
        _set("format", "xyz"),
        "not a gmm model file (format is 'xyz', expected 'gmmcli-model')",
    ),
    ("full", _set("format", 1), "not a gmm model file (format is 1,"),
    ("full", _without("version"), "missing key 'version'"),
    ("full", _set("version", "1"), "'version' should be an integer, found '1'"),
    ("full", _set("version", 1.0), "'version' should be an integer, found 1.0"),
    ("full", _set("version", True), "'version' should be an integer, found true"),
    (
        "full",
        _set("version", 2),
        "model format version 2 is newer than this gmm supports (1); upgrade gmmcli",
    ),
    ("full", _set("version", 0), "model format version 0 is not valid"),
    ("full", _set("weigths", []), "unknown key 'weigths' (did you mean 'weights'?)"),
    ("full", _without("covariance_type"), "missing key 'covariance_type'"),
    ("full", _set("covariance_type", "fuller"), "'covariance_type' should be one of 'full'"),
    ("full", _set("covariance_type", None), "'covariance_type' should be one of"),
    ("full", _set("n_components", True), "'n_components' should be a positive integer, found true"),
    ("full", _set("n_components", 0), "'n_components' should be a positive integer, found 0"),
    ("full", _set("n_components", 2.0), "'n_components' should be a positive integer, found 2.0"),
    ("full", _set("n_features", -2), "'n_features' should be a positive integer, found -2"),
    ("full", _without("n_features"), "missing key 'n_features'"),
    ("full", _set("feature_names", ["x0"]), "'feature_names' should be a list of 2 strings"),
    ("full", _set("feature_names", "x0,x1"), "'feature_names' should be a list of 2 strings"),
    ("full", _set("feature_names", ["x0", 1]), "feature_names[1] should be a non-empty string"),
    ("full", _set("feature_names", ["", "x"]), "feature_names[0] should be a non-empty string"),
    ("full", _set("feature_names", ["a", "a"]), "feature_names[1] 'a' duplicates feature_names[0]"),
    ("full", _without("weights"), "missing key 'weights'"),
    ("full", _set("weights", [0.5, 0.5]), "'weights' should be a list of 3 numbers, found a list"),
    ("full", _set("weights", [0.5, "0.3", 0.2]), "weights[1] should be a number, found '0.3'"),
    ("full", _set("weights", [0.5, True, 0.2]), "weights[1] should be a number, found true"),
    ("full", _set("weights", [0.5, -0.3, 0.8]), "weights[1] should be > 0, found -0.3"),
    ("full", _set("weights", [0.5, 0, 0.5]), "weights[1] should be > 0, found 0"),
    (
        "full",
        _set("weights", [0.5, 0.3, 0.1]),
        "'weights' should sum to 1 (within 1e-06), found sum 0.9",
    ),
    ("full", _set("weights", [0.5, 0.3, HUGE]), "weights[2] should be a finite number, found inf"),
    ("full", _set("means", [[0, 0], [0, 0]]), "'means' should be 3 x 2 numbers, found 2 x 2"),
    ("full", _set("means", [[0, 0, 0]] * 3), "'means' should be 3 x 2 numbers, found 3 x 3"),
    (
        "full",
        _set("means", [[0, 0], [0], [0, 0]]),
        "means[1] should be a list of 2 numbers, found a",
    ),
    (
        "full",
        _set("means", [[0, 0], [0, [0]], [0, 0]]),
        "means[1][1] should be a number, found a list",
    ),
    ("full", _set("means", [0, 0, 0]), "'means' should be 3 x 2 numbers, found a list of 3"),
    ("full", _set("means", {"a": 1}), "'means' should be 3 x 2 numbers, found an object"),
    (
        "full",
        _set("means", [[0, 0], [0, None], [0, 0]]),
        "means[1][1] should be a number, found null",
    ),
    (
        "full",
        _set("means", [[0, 0], [0, 10**400], [0, 0]]),
        "means[1][1] should be a finite number",
    ),
    (
        "full",
        _set("covariances", [[[1, 0], [0, 1]]] * 2),
        "'covariances' should be 3 x 2 x 2 numbers (full: one d x d matrix per component), "
        "found 2 x 2 x 2",
    ),
    (
        "full",
        _set("covariances", [[[1, 0], [0, 1]], [[1, 0.5], [0.4, 1]], [[1, 0], [0, 1]]]),
        "covariances[1] is not symmetric: entry [0][1] is 0.5 but entry [1][0] is 0.4",
    ),
    (
        "full",
        _set("covariances", [[[1, 0], [0, 1]], [[1, 0], [0, 1]], [[1, 2], [2, 1]]]),
        "covariances[2] is not positive definite",
    ),
    (
        "full",
        _set("covariances", [[[1, 0], [0, 1]], [[1, 0], [0, 1]], [[0, 0], [0, 0]]]),
        "covariances[2] is not positive definite",
    ),
    (
        "full",
        _set("covariances", [[[1, 0], [0, 1]], [[1, 0], [0, 1]], [[-1, 0], [0, 1]]]),
        "covariances[2] is not positive definite",
    ),
    ("tied", _set("covariances", [[1, 2], [2, 1]]), "'covariances' is not positive definite"),
    ("tied", _set("covariances", [[1, 0.1], [0, 1]]), "'covariances' is not symmetric"),
    (
        "tied",
        _set("covariances", [[[1, 0], [0, 1]]]),
        "'covariances' should be 2 x 2 numbers (tied: one d x d matrix shared by all components)",
    ),
    (
        "diag",
        _set("covariances", [[1, 1], [1, 0], [1, 1]]),
        "covariances[1][1] should be > 0, found 0",
    ),
    ("diag", _set("covariances", [1, 1, 1]), "'covariances' should be 3 x 2 numbers (diag"),
    ("spherical", _set("covariances", [1, -2.5, 1]), "covariances[1] should be > 0, found -2.5"),
    (
        "EEI",
        _set("covariances", [[[1, 0], [0, 2]], [[1, 0], [0, 2]], [[1, 0.25], [0.25, 2]]]),
        "covariances[2] should be diagonal, as EEI's matrices are: entry [0][1] is 0.25",
    ),
    (
        "EII",
        _set("covariances", [[[1, 1e-300], [1e-300, 1]]] * 3),
        "covariances[0] should be diagonal, as EII's matrices are: entry [0][1] is 1e-300",
    ),
    (
        "spherical",
        _set("covariances", [1, 1]),
        "'covariances' should be a list of 3 numbers (spherical: one variance per component)",
    ),
    ("spherical", _set("covariances", [1, "1", 1]), "covariances[1] should be a number, found '1'"),
    ("full", _set("fit", []), "'fit' should be an object, found a list of 0"),
    ("full", _set("fit", None), "'fit' should be an object, found null"),
    ("full", _fit("n_iter", 2.5), "fit.n_iter should be an integer, found 2.5"),
    ("full", _fit("n_samples", True), "fit.n_samples should be an integer, found true"),
    ("full", _fit("converged", 1), "fit.converged should be a boolean, found 1"),
    ("full", _fit("log_likelihood", "high"), "fit.log_likelihood should be a finite number"),
    ("full", _fit("bic", HUGE), "fit.bic should be a finite number, found inf"),
    (
        "full",
        _fit("log_likelihood_history", [1.0, None]),
        "fit.log_likelihood_history[1] should be",
    ),
    ("full", _fit("options", {"tol": "small"}), "fit.options.tol should be a finite number"),
    ("full", _fit("options", {"init": 3}), "fit.options.init should be a string, found 3"),
    ("full", _fit("restarts", [1]), "fit.restarts[0] should be an object, found 1"),
    (
        "full",
        _fit("collapsed", [{"column": 3}]),
        "fit.collapsed[0].column should be a string or null",
    ),
    ("full", _fit("warnings", "one"), "fit.warnings should be a list, found 'one'"),
    ("full", _fit("tool", {"version": 1}), "fit.tool.version should be a string, found 1"),
]


@pytest.mark.parametrize(
    ("cov_type", "change", "expected"), DOC_ERRORS, ids=[e[2][:50] for e in DOC_ERRORS]
)
def test_malformed_model_is_reported(tmp_path, cov_type, change, expected):
    doc = valid_doc(cov_type)
    change(doc)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(doc).replace(f'"{HUGE}"', "1e400"), encoding="utf-8")
    error = load_error(path)
    assert expected in error.message


def test_model_from_dict_uses_the_source_name():
    doc = valid_doc()
    doc["weights"] = [1.0, 1.0, 1.0]
    with pytest.raises(GmmError, match=r"^some name: 'weights' should sum to 1"):
        model_from_dict(doc, "some name")


def test_model_from_dict_rejects_non_finite_python_values():
    doc = valid_doc("diag")
    doc["means"][2][1] = float("nan")
    with pytest.raises(GmmError, match=r"means\[2\]\[1\] should be a finite number, found nan"):
        model_from_dict(doc, "m.json")


def _standardized(center: list, scale: list, **changes: object):
    def change(doc: dict) -> None:
        doc["standardize"] = {"center": center, "scale": scale}
        doc.update(changes)

    return change


RANGE_ERRORS = [
    # parameters outside the range gmm works in (data beyond ±1e150 are refused too)
    ("full", lambda d: d["means"][1].__setitem__(0, 1e160), "means[1][0] should be within ±1e+150"),
    ("diag", lambda d: d["means"][0].__setitem__(1, -1e308), "means[0][1] should be within"),
    ("full", _standardized([1e200, 0.0], [1.0, 1.0]), "standardize.center[0] should be within"),
    ("full", _standardized([0.0, 0.0], [1.0, 1e151]), "standardize.scale[1] should be within"),
    (
        "tied",
        _standardized([0.0, 0.0], [1e149, 1.0], means=[[0.0, 0.0], [20.0, 0.0], [0.0, 0.0]]),
        "means[1][0] in the data's units (times standardize.scale, plus standardize.center) "
        "should be within ±1e+150 (the range of data gmm reads), found 2e+150",
    ),
    (
        "full",
        lambda d: d["covariances"].__setitem__(2, [[1e301, 0.0], [0.0, 1.0]]),
        "covariances[2][0][0] should be at most 1e+300 (the largest variance of data gmm reads)",
    ),
    (
        "spherical",
        _standardized([0.0, 0.0], [1.0, 1e150], means=[[0.0] * 2] * 3, covariances=[0.5, 2.0, 0.5]),
        "covariances[1] times standardize.scale[1] squared should be at most 1e+300",
    ),
    (
        "diag",
        lambda d: d["covariances"][1].__setitem__(0, 1e-310),
        "covariances[1][0] is too small: its inverse (the precision) overflows float64",
    ),
    (
        "tied",
        _set("covariances", [[1.0, 0.0], [0.0, 1e-310]]),
        "'covariances' is too close to singular",
    ),
    (
        "full",
        lambda d: d["covariances"].__setitem__(0, [[1e-309, 1e-310], [1e-310, 1.0]]),
        "covariances[0] is too close to singular: its inverse (the precision) overflows",
    ),
]


@pytest.mark.parametrize(
    ("cov_type", "change", "expected"), RANGE_ERRORS, ids=[e[2][:50] for e in RANGE_ERRORS]
)
def test_parameters_out_of_range_are_reported(cov_type, change, expected):
    doc = valid_doc(cov_type)
    change(doc)
    with pytest.raises(GmmError) as info:
        model_from_dict(doc, "m.json")
    assert info.value.message.startswith("m.json: ")
    assert expected in info.value.message


def test_parameters_at_the_edge_of_the_range_load():
    """The limits themselves, tiny variances whose precision is finite, and tiny scales
    (fit --standardize writes the standard deviation of data as small as 1e-300) load."""
    doc = valid_doc("full")
    doc["means"][0] = [1e150, -1e150]
    doc["covariances"][0] = [[1e300, 0.0], [0.0, 1e-200]]
    params, _, _ = model_from_dict(doc, "m.json")
    assert params.means[0, 0] == 1e150 and params.covariances[0, 1, 1] == 1e-200
    doc = valid_doc("diag")
    doc["standardize"] = {"center": [-1e150, 0.0], "scale": [1e-300, 1e150]}
    doc["means"] = [[0.5, 0.0], [-0.5, 0.0], [0.0, 1.0]]
    doc["covariances"] = [[1.0, 1.0]] * 3
    params, _, _ = model_from_dict(doc, "m.json")
    assert params.scale.tolist() == [1e-300, 1e150]


def test_the_first_problem_is_reported():
    doc = valid_doc()
    doc["weights"] = [0.1, 0.1, 0.1]
    doc["means"] = "nonsense"
    doc["covariances"] = None
    with pytest.raises(GmmError, match="'weights' should sum to 1"):
        model_from_dict(doc, "m.json")


RAW_ERRORS = [
    (b"", "is empty"),
    (b"  \n\t ", "is empty"),
    (b'{"format": "gmmcli-model", \xff}', "not valid UTF-8 (byte 0xff at offset 27)"),
    (b"format: gmmcli-model\n", "not valid JSON: Expecting value (line 1, column 1)"),
    (b'{\n  "format": "gmmcli-model",\n  "version": 1', "not valid JSON:"),
    (b'{"format": "gmmcli-model", "weights": [NaN]}', "not valid JSON: NaN is not allowed"),
    (b'{"weights": [Infinity]}', "not valid JSON: Infinity is not allowed"),
    (b'{"weights": [-Infinity]}', "not valid JSON: -Infinity is not allowed"),
    (b"[1, 2, 3]", "top level should be a JSON object, found a list of 3"),
    (b'"gmmcli-model"', "top level should be a JSON object, found 'gmmcli-model'"),
    (b"null", "top level should be a JSON object, found null"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
]


@pytest.mark.parametrize(("data", "expected"), RAW_ERRORS, ids=[e[1] for e in RAW_ERRORS])
def test_unreadable_model_text_is_reported(tmp_path, data, expected):
    path = tmp_path / "model.json"
    path.write_bytes(data)
    assert expected in load_error(path).message


def test_truncated_json_is_reported_with_position(tmp_path):
    text = dumps_model(make_params("full"), names(2), FIT)
    path = tmp_path / "model.json"
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    message = load_error(path).message
    assert "not valid JSON: " in message
    assert "(line " in message and ", column " in message


def test_missing_file(tmp_path):
    assert "no such file" in load_error(tmp_path / "absent.json").message


def test_directory_is_not_a_model(tmp_path):
    assert "is a directory" in load_error(tmp_path).message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unreadable_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("{}", encoding="utf-8")
    path.chmod(0)
    assert "permission denied" in load_error(path).message


def test_other_format_json_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('{"rows": [1, 2]}', encoding="utf-8")
    assert "not a gmm model file" in load_error(path).message


# --------------------------------------------------------------------------- writing errors


def test_non_finite_parameters_are_never_written():
    for name in ("weights", "means", "covariances"):
        params = make_params("full")
        bad = getattr(params, name).copy()
        bad.flat[0] = np.nan
        params = dataclasses.replace(params, **{name: bad})
        with pytest.raises(ValueError, match="non-finite"):
            dumps_model(params, names(2))
    with pytest.raises(ValueError, match="not finite"):
        dumps_model(make_params("diag"), names(2), {"log_likelihood": float("-inf")})


def test_inconsistent_parameters_are_internal_errors():
    params = make_params("full")
    with pytest.raises(ValueError, match="feature names"):
        dumps_model(params, ["only one"])
    with pytest.raises(ValueError, match="covariances should have shape"):
        dumps_model(
            MixtureParams("diag", params.weights, params.means, params.covariances), names(2)
        )
    with pytest.raises(ValueError, match="refusing to write an invalid model"):
        dumps_model(params, ["a", "a"])
    with pytest.raises(ValueError, match="JSON cannot hold"):
        dumps_model(params, names(2), {"when": object()})


def test_save_to_missing_folder_creates_nothing(tmp_path):
    target = tmp_path / "missing" / "model.json"
    with pytest.raises(GmmError) as info:
        save_model(str(target), make_params("full"), names(2), FIT)
    assert info.value.message.startswith(f"{target}: cannot write: folder ")
    assert "does not exist" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_save_to_a_directory(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(GmmError, match="is a directory"):
        save_model(str(tmp_path / "sub"), make_params("full"), names(2))
    assert list((tmp_path / "sub").iterdir()) == []


def test_save_under_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    with pytest.raises(GmmError, match="is not a folder"):
        save_model(str(tmp_path / "file.txt" / "m.json"), make_params("full"), names(2))


def _existing_model(tmp_path):
    path = tmp_path / "model.json"
    save_model(str(path), make_params("diag", seed=1), names(2), FIT)
    return path, path.read_bytes()


def test_dumps_failure_leaves_existing_file_untouched(tmp_path):
    path, before = _existing_model(tmp_path)
    params = make_params("full")
    bad = MixtureParams("full", params.weights, params.means * np.inf, params.covariances)
    with pytest.raises(ValueError):
        save_model(str(path), bad, names(2), FIT)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


@pytest.mark.parametrize("step", ["fsync", "replace", "write"])
def test_failure_while_writing_leaves_existing_file_untouched(tmp_path, monkeypatch, step):
    path, before = _existing_model(tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if step == "write":
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, handle):
                self.handle = handle

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

            def close(self):
                self.handle.close()

            def flush(self):
                self.handle.flush()

            def fileno(self):
                return self.handle.fileno()

            def write(self, data):
                self.handle.write(data[: len(data) // 2])
                self.handle.flush()
                disk_full()

        monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(os, step, disk_full)
    with pytest.raises(GmmError, match=r"cannot write: No space left on device$") as info:
        save_model(str(path), make_params("full"), names(2), FIT)
    assert info.value.message.startswith(f"{path}: ")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_interrupt_while_writing_removes_the_temp_file(tmp_path, monkeypatch):
    path, before = _existing_model(tmp_path)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model(str(path), make_params("full"), names(2), FIT)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_permission_denied_is_reported(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", denied)
    target = str(tmp_path / "m.json")
    with pytest.raises(GmmError, match=r": cannot write: permission denied$"):
        save_model(target, make_params("full"), names(2))
    with pytest.raises(GmmError, match=r": cannot write: permission denied$"):
        check_output_path(target)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(GmmError, match="permission denied"):
            check_output_path(str(folder / "m.json"))
        with pytest.raises(GmmError, match="permission denied"):
            save_model(str(folder / "m.json"), make_params("full"), names(2))
    finally:
        folder.chmod(0o700)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_new_file_gets_ordinary_permissions_and_existing_keep_theirs(tmp_path):
    umask = os.umask(0o022)
    try:
        path = tmp_path / "m.json"
        save_model(str(path), make_params("full"), names(2))
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o640)
        save_model(str(path), make_params("diag"), names(2))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(umask)


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_saving_through_a_symlink_replaces_its_target(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old", encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    params = make_params("tied")
    save_model(str(link), params, names(2))
    assert link.is_symlink()
    assert_same_params(params, load_model(str(real))[0])


# --------------------------------------------------------------------------- check_output_path


def test_check_output_path_accepts_good_paths(tmp_path, monkeypatch):
    check_output_path("-")
    check_output_path(str(tmp_path / "new.json"))
    existing = tmp_path / "old.json"
    existing.write_text("keep", encoding="utf-8")
    check_output_path(str(existing))
    assert existing.read_text(encoding="utf-8") == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]
    monkeypatch.chdir(tmp_path)
    check_output_path("model.json")


def test_check_output_path_missing_folder(tmp_path):
    target = str(tmp_path / "nope" / "m.json")
    with pytest.raises(GmmError) as info:
        check_output_path(target)
    assert (
        info.value.message == f"{target}: cannot write: folder '{tmp_path / 'nope'}' does not exist"
    )
    assert info.value.status == 2


def test_check_output_path_directory(tmp_path):
    with pytest.raises(GmmError, match=r"cannot write: it is a directory$"):
        check_output_path(str(tmp_path))


def test_check_output_path_under_a_file(tmp_path):
    (tmp_path / "f").write_text("", encoding="utf-8")
    with pytest.raises(GmmError, match="is not a folder"):
        check_output_path(str(tmp_path / "f" / "m.json"))


# --------------------------------------------------------------------------- property


@st.composite
def models(draw):
    k = draw(st.integers(1, 4))
    d = draw(st.integers(1, 4))
    cov_type = draw(st.sampled_from(COVARIANCE_TYPES))
    floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    small = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
    positive = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)

    def array(elements, shape):
        return np.array(
            draw(st.lists(elements, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        ).reshape(shape)

    raw = array(st.floats(0.01, 1.0), (k,))
    weights = raw / raw.sum()
    means = array(floats, (k, d))
    stored = covariance_shape(cov_type, k, d)
    if len(stored) == 1 or (stored == (k, d) and cov_type == "diag"):
        covariances = array(positive, stored)
    else:  # matrices: any symmetric positive definite ones (a model file does not check the
        a = array(small, (k, d, d))  # constraints of mclust's models, only the matrices)
        covariances = a @ a.transpose(0, 2, 1) + np.eye(d)
        if stored == (d, d):
            covariances = covariances[0]
        if get_strategy(cov_type).is_diagonal:  # EII, EEI, VEI, EVI: diagonal matrices
            covariances = covariances * np.eye(d)
    feature_names = draw(
        st.lists(st.text(min_size=1, max_size=8), min_size=d, max_size=d, unique=True)
    )
    return MixtureParams(cov_type, weights, means, covariances), feature_names


@settings(max_examples=60, deadline=None)
@given(model=models())
def test_round_trip_property(tmp_path_factory, model):
    params, feature_names = model
    path = tmp_path_factory.mktemp("prop") / "model.json"
    save_model(str(path), params, feature_names, FIT)
    loaded, loaded_names, fit = load_model(str(path))
    assert_same_params(params, loaded)
    assert loaded_names == feature_names
    assert fit == FIT
    save_model(str(path.with_name("again.json")), loaded, loaded_names, fit)
    assert path.with_name("again.json").read_bytes() == path.read_bytes()
    jsonschema.Draft202012Validator(schema()).validate(json.loads(path.read_text(encoding="utf-8")))
