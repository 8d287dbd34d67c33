"""The model file: a fitted mixture as versioned JSON, validated on load and written atomically.

Version 1 is a plain JSON object (see ``schema/model.schema.json``). Loading checks every field
and reports the first problem as one ``GmmError`` line naming the file and the JSON path.
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import json
import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from gmmcli import files
from gmmcli.engine.covariance import CovarianceStrategy, covariance_names, get_strategy
from gmmcli.engine.params import MixtureParams, Noise
from gmmcli.errors import GmmError
from gmmcli.limits import MAX_MAGNITUDE, MAX_VARIANCE, ROUNDING_SLACK

if TYPE_CHECKING:
    from gmmcli.engine.em import Collapse
    from gmmcli.engine.mixture import FitSummary

FORMAT_NAME = "gmmcli-model"
FORMAT_VERSION = 1

WEIGHTS_SUM_TOLERANCE = 1e-6
SYMMETRY_RTOL = 1e-8
# Weights whose sum is off by less than this are float rounding noise: they are kept as stored,
# so that save -> load gives back exactly the same numbers.
_RENORMALISE_ABOVE = 1e-12

# -- the one spec of the file's structure ----------------------------------------------------
# ``model_schema()`` builds the JSON Schema from these pieces and the covariance registry; the
# shipped schema/model.schema.json is its output (a test keeps them equal), and the loader
# takes the top-level keys and the checks of "fit" from it. Checks that JSON Schema cannot
# state (lengths tied to k and d, symmetry, definiteness, ranges, weights summing to 1) are
# written by hand below.

_NUMBER = {"type": "number"}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}

_FIT_SCHEMA: dict = {
    "description": "How the model was fitted. Optional; unknown keys are allowed.",
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "n_samples": {"type": "integer", "description": "Rows used for fitting."},
        "weight_total": {
            "type": "number",
            "description": "Sum of the row weights of a weighted fit (--weights, "
            "sample_weight), the n of its BIC and of its mean log-likelihood; absent when the "
            "rows were not weighted.",
        },
        "n_dropped": {"type": "integer", "description": "Rows dropped (e.g. missing values)."},
        "n_missing_rows": {
            "type": "integer",
            "description": "Rows fitted with missing cells (--missing em), if any.",
        },
        "n_missing_cells": {
            "type": "integer",
            "description": "Missing cells of those rows, fitted by EM as missing at random.",
        },
        "n_iter": {"type": "integer", "description": "EM iterations of the best restart."},
        "converged": {"type": "boolean"},
        "log_likelihood": {"type": "number", "description": "Total log-likelihood of the data."},
        "mean_log_likelihood": {"type": "number", "description": "Per-sample log-likelihood."},
        "log_likelihood_history": {
            "description": "Log-likelihood after each iteration of the best restart.",
            "type": "array",
            "items": _NUMBER,
        },
        "n_parameters": {"type": "integer", "description": "Free parameters of the model."},
        "bic": _NUMBER,
        "aic": _NUMBER,
        "seed": {"type": "integer"},
        "options": {
            "type": "object",
            "additionalProperties": True,
            "properties": {
                "n_components": {"type": "integer"},
                "covariance_type": {"type": "string"},
                "convergence": {
                    "description": "The stopping rule: 'limit' (the mean log-likelihood per "
                    "row within limit_tol of its limit by Aitken's estimate) or 'change' "
                    "(scikit-learn's: it changed by less than tol in the last iteration). "
                    "Files without it used 'change'.",
                    "type": "string",
                    "enum": ["limit", "change"],
                },
                "limit_tol": _NUMBER,
                "tol": _NUMBER,
                "reg_covar": _NUMBER,
                "reg_scale": {"type": "string", "enum": ["data", "absolute"]},
                "max_iter": {"type": "integer"},
                "n_init": {"type": "integer"},
                "init": {"type": "string"},
                "dtype": {"type": "string", "enum": ["float64", "float32"]},
                "accelerate": {
                    "description": "SQUAREM acceleration (files without it used plain EM).",
                    "type": "boolean",
                },
            },
        },
        "best_restart": {"type": "integer"},
        "restarts": {"type": "array", "items": {"type": "object"}},
        "reseeds": {"type": "array", "items": {"type": "object"}},
        "collapsed": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": True,
                "properties": {
                    "component": {"type": "integer"},
                    "column": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                },
            },
        },
        "warnings": {"type": "array", "items": {"type": "string"}},
        "tool": {
            "type": "object",
            "additionalProperties": True,
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
        },
    },
}


def _covariances_schema(strategy: CovarianceStrategy) -> dict:
    """The covariances of one model: a matrix, vector or number per component (one in all
    if shared), from the rank of ``strategy.shape``; diagonal models store variances > 0."""
    rank = len(strategy.shape(1, 1)) - (0 if strategy.shared else 1)
    block = {"$ref": "#/$defs/" + ("positive_number", "positive_vector", "matrix")[rank]}
    if strategy.shared:
        return block
    return {"type": "array", "items": block}


def _shape_text(strategy: CovarianceStrategy) -> str:
    """E.g. "full: k x d x d" or "diag: k x d (each > 0)"."""
    shape = " x ".join({2: "k", 3: "d"}[n] for n in strategy.shape(2, 3))
    return f"{strategy.name}: {shape}" + (" (each > 0)" if strategy.stores_variances else "")


def model_schema() -> dict:
    """The JSON Schema (draft 2020-12) of the model file, built from the one spec above."""
    strategies = [get_strategy(name) for name in covariance_names()]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:gmmcli:model-file:{FORMAT_VERSION}",
        "title": f"gmmcli model file, format version {FORMAT_VERSION}",
        "description": "A Gaussian mixture fitted by `gmm fit`. Lengths that depend on "
        "n_components (k) and n_features (d) cannot be tied to those values in JSON Schema; "
        "gmm checks them when loading, together with: weights > 0 summing to 1 (within "
        "1e-6), finite numbers, symmetric positive definite "
        + "/".join(s.name for s in strategies if not s.stores_variances)
        + " covariances.",
        "type": "object",
        "required": [
            "format",
            "version",
            "covariance_type",
            "n_components",
            "n_features",
            "feature_names",
            "weights",
            "means",
            "covariances",
        ],
        "additionalProperties": False,
        "properties": {
            "format": {"description": f"Always '{FORMAT_NAME}'.", "const": FORMAT_NAME},
            "version": {
                "description": f"Format version; this schema describes version {FORMAT_VERSION}.",
                "const": FORMAT_VERSION,
            },
            "covariance_type": {"enum": list(covariance_names())},
            "n_components": {
                "description": "k, the number of mixture components.",
                "type": "integer",
                "minimum": 1,
            },
            "n_features": {
                "description": "d, the number of features (columns).",
                "type": "integer",
                "minimum": 1,
            },
            "feature_names": {
                "description": "d distinct, non-empty column names, in the order of the means' "
                "entries.",
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"type": "string", "minLength": 1},
            },
            "weights": {
                "description": "k mixing weights, each > 0, summing to 1.",
                "type": "array",
                "minItems": 1,
                "items": _POSITIVE,
            },
            "means": {
                "description": "k x d: one mean vector per component.",
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/vector"},
            },
            "covariances": {
                "description": "; ".join(_shape_text(s) for s in strategies) + ".",
                "type": "array",
                "minItems": 1,
            },
            "standardize": {
                "description": "Present when the model was fitted with --standardize: the "
                "parameters describe (x - center) / scale, column by column.",
                "type": "object",
                "required": ["center", "scale"],
                "additionalProperties": False,
                "properties": {
                    "center": {"type": "array", "items": _NUMBER, "minItems": 1},
                    "scale": {"type": "array", "items": _POSITIVE, "minItems": 1},
                },
            },
            "noise": {
                "description": "Present when the model has a noise component (--noise): a "
                "uniform density over the box [lower, upper] (in the units the means are in) "
                "with mixing weight 'weight'; the Gaussians' weights then sum to 1 - weight. "
                "'log_volume': the log of the box's volume (the sum of log(upper - lower)); "
                "'volume': the volume itself, when float64 holds it. 'volume_given': the "
                "volume was given (--noise-volume), not taken from the data's box.",
                "type": "object",
                "required": ["weight", "log_volume", "lower", "upper"],
                "additionalProperties": False,
                "properties": {
                    "weight": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                    "log_volume": _NUMBER,
                    "volume": _POSITIVE,
                    "volume_given": {"type": "boolean"},
                    "lower": {"type": "array", "items": _NUMBER, "minItems": 1},
                    "upper": {"type": "array", "items": _NUMBER, "minItems": 1},
                },
            },
            "fit": {"$ref": "#/$defs/fit"},
        },
        "allOf": [
            {
                "if": {
                    "properties": {"covariance_type": {"const": s.name}},
                    "required": ["covariance_type"],
                },
                "then": {"properties": {"covariances": _covariances_schema(s)}},
            }
            for s in strategies
        ],
        "$defs": {
            "vector": {"type": "array", "minItems": 1, "items": _NUMBER},
            "positive_number": _POSITIVE,
            "positive_vector": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/positive_number"},
            },
            "matrix": {
                "description": "A square symmetric positive definite matrix, row by row.",
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/vector"},
            },
            "fit": _FIT_SCHEMA,
        },
    }


def dumps_schema() -> str:
    """The text of the shipped schema/model.schema.json."""
    return json.dumps(model_schema(), indent=2, ensure_ascii=False) + "\n"


_SCHEMA = model_schema()
_TOP_LEVEL_KEYS = tuple(_SCHEMA["properties"])


# ---------------------------------------------------------------------------------------------
# Writing


def model_to_dict(params: MixtureParams, feature_names: list[str], fit: dict | None = None) -> dict:
    """The model as a JSON-ready dict (plain lists, ints, floats and strings).

    Raises ValueError (an internal bug, not a user error) if the parameters are inconsistent,
    non-finite, or would not load back.
    """
    cov_type = params.covariance_type
    if cov_type not in covariance_names():
        raise ValueError(f"unknown covariance type {cov_type!r}")
    strategy = get_strategy(cov_type)
    means = np.asarray(params.means, dtype=np.float64)
    if means.ndim != 2:
        raise ValueError(f"means should be 2-dimensional, got shape {means.shape}")
    k, d = means.shape
    arrays = {
        "weights": (np.asarray(params.weights, dtype=np.float64), (k,)),
        "means": (means, (k, d)),
        "covariances": (
            np.asarray(params.covariances, dtype=np.float64),
            strategy.shape(k, d),
        ),
    }
    for name, (array, shape) in arrays.items():
        if array.shape != shape:
            raise ValueError(f"{name} should have shape {shape}, got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains non-finite values; refusing to write the model")
    names = list(feature_names)
    if len(names) != d:
        raise ValueError(f"{len(names)} feature names for {d} features")
    doc: dict = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "covariance_type": cov_type,
        "n_components": int(k),
        "n_features": int(d),
        "feature_names": [str(name) for name in names],
        "weights": arrays["weights"][0].tolist(),
        "means": arrays["means"][0].tolist(),
        "covariances": arrays["covariances"][0].tolist(),
    }
    if params.scale is not None and params.center is not None:
        doc["standardize"] = {
            "center": np.asarray(params.center, dtype=np.float64).tolist(),
            "scale": np.asarray(params.scale, dtype=np.float64).tolist(),
        }
    if params.noise is not None:
        noise = params.noise
        doc["noise"] = {"weight": float(noise.weight), "log_volume": noise.log_volume}
        if 0 < noise.volume < math.inf:
            doc["noise"]["volume"] = noise.volume
        doc["noise"] |= {
            "volume_given": bool(noise.volume_given),
            "lower": np.asarray(noise.lower, dtype=np.float64).tolist(),
            "upper": np.asarray(noise.upper, dtype=np.float64).tolist(),
        }
    if fit is not None:
        doc["fit"] = _jsonable(fit, "fit")
    try:
        model_from_dict(doc, "<model being written>")
    except GmmError as exc:
        raise ValueError(f"internal error: refusing to write an invalid model: {exc}") from exc
    return doc


def fit_record(
    summary: FitSummary,
    feature_names: list[str],
    warnings: list[str],
    **extra: object,
) -> dict:
    """The model file's ``fit`` section for a fit's summary: plain JSON values, collapses
    and re-seeds named by column; ``warnings`` as people read them (``report.notice_text``);
    ``extra`` (n_dropped, tool, selection) appended in the order given."""
    options = summary.options

    def collapse(c: Collapse) -> dict:
        column = None if c.column is None else feature_names[c.column]
        description = c.describe(feature_names)
        return {
            "component": c.component,
            "column": column,
            "reason": c.reason,
            "description": description,
        }

    record: dict = {"n_samples": summary.n_samples}
    if summary.weight_total is not None:
        record["weight_total"] = float(summary.weight_total)
    record |= {
        "n_iter": summary.n_iter,
        "converged": summary.converged,
        "log_likelihood": summary.log_likelihood,
        "mean_log_likelihood": summary.mean_log_likelihood,
        "log_likelihood_history": list(summary.log_likelihood_history),
        "n_parameters": summary.n_parameters,
        "bic": summary.bic,
        "aic": summary.aic,
        "seed": int(options.seed),
        "options": {
            "n_components": int(options.n_components),
            "covariance_type": options.covariance_type,
            **_stopping_record(options.tol),
            "reg_covar": float(options.reg_covar),
            "reg_scale": options.reg_scale,
            "max_iter": int(options.max_iter),
            "n_init": int(options.n_init),
            "init": "warm-start" if summary.warm_start else options.init,
            "dtype": options.dtype,
            "accelerate": bool(options.accelerate),
        },
        "best_restart": summary.best_restart,
        "restarts": [
            {
                "restart": r.restart,
                "n_iter": r.n_iter,
                "converged": r.converged,
                "log_likelihood": float(r.log_likelihood),
                "collapsed": [collapse(c) for c in r.collapsed],
            }
            for r in summary.restarts
        ],
        "reseeds": [
            {
                "restart": e.restart,
                "iteration": e.iteration,
                "component": e.collapse.component,
                "reason": e.collapse.describe(feature_names),
                "new_mean": [float(v) for v in e.new_mean],
            }
            for r in summary.restarts
            for e in r.reseeds
        ],
        "collapsed": [collapse(c) for c in summary.collapsed],
        "warnings": list(warnings),
    }
    record.update(extra)
    return record


def _stopping_record(tol: float | None) -> dict:
    """The stopping rule as the model file records it (see "convergence" in the schema)."""
    if tol is None:
        from gmmcli.engine.convergence import LIMIT_TOL

        return {"convergence": "limit", "limit_tol": LIMIT_TOL}
    return {"convergence": "change", "tol": float(tol)}


def dumps_model(params: MixtureParams, feature_names: list[str], fit: dict | None = None) -> str:
    """The model file's text: JSON with indent 2 and a trailing newline.

    Deterministic (same input, same text); floats are written with ``repr`` so they load back
    exactly. Raises ValueError if anything is non-finite.
    """
    doc = model_to_dict(params, feature_names, fit)
    return json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def save_model(
    path: str, params: MixtureParams, feature_names: list[str], fit: dict | None = None
) -> None:
    """Write the model to ``path`` ("-" is stdout) (see ``files.Output``)."""
    files.write_output(path, dumps_model(params, feature_names, fit).encode("utf-8"))


def _jsonable(value: object, path: str) -> object:
    """A deep copy of ``value`` with numpy scalars and arrays turned into plain JSON values."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is not finite ({value}); refusing to write the model")
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path} has a non-string key {key!r}")
            out[key] = _jsonable(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise ValueError(f"{path} has a value of type {type(value).__name__} that JSON cannot hold")


# ---------------------------------------------------------------------------------------------
# Reading


def load_model(path: str) -> tuple[MixtureParams, list[str], dict]:
    """Read and validate a model file ("-" is stdin): parameters, feature names and fit info."""
    name = files.display_name(path)
    data = files.read_bytes(path)
    doc = _parse_json(data, name)
    return model_from_dict(doc, name)


def model_from_dict(doc: object, source: str) -> tuple[MixtureParams, list[str], dict]:
    """Validate a parsed model document; ``source`` (the file's display name) starts messages.

    Returns float64 C-contiguous arrays, the feature names and the fit object ({} if absent).
    Weights are renormalised to sum to 1.
    """
    if not isinstance(doc, dict):
        raise _error(source, f"top level should be a JSON object, found {_show(doc)}")
    _check_format(doc, source)
    _check_version(doc, source)
    for key in doc:
        if key not in _TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(str(key), _TOP_LEVEL_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _error(source, f"unknown key {_show(key)}{hint}")

    cov_type = _require(doc, "covariance_type", source)
    if not isinstance(cov_type, str) or cov_type not in covariance_names():
        allowed = ", ".join(f"'{t}'" for t in covariance_names())
        raise _error(
            source, f"'covariance_type' should be one of {allowed}, found {_show(cov_type)}"
        )
    strategy = get_strategy(cov_type)
    k = _positive_int(doc, "n_components", source)
    d = _positive_int(doc, "n_features", source)
    feature_names = _feature_names(_require(doc, "feature_names", source), d, source)

    weights = _numbers(_require(doc, "weights", source), (k,), "weights", source)
    for i, w in enumerate(weights):
        if not w > 0:
            raise _error(source, f"weights[{i}] should be > 0, found {_num(w)}")
    noise = _noise(doc, d, source)
    total = float(weights.sum()) + (0.0 if noise is None else noise.weight)
    if abs(total - 1.0) > WEIGHTS_SUM_TOLERANCE:
        which = "'weights'" if noise is None else "'weights' and noise.weight"
        raise _error(
            source,
            f"{which} should sum to 1 (within {WEIGHTS_SUM_TOLERANCE:g}), found sum {total:.12g}",
        )
    if abs(total - 1.0) > _RENORMALISE_ABOVE:
        weights = weights / total
        if noise is not None:
            noise = noise.with_weight(noise.weight / total)

    means = _numbers(_require(doc, "means", source), (k, d), "means", source)
    covariances = _numbers(
        _require(doc, "covariances", source),
        strategy.shape(k, d),
        "covariances",
        source,
        hint=f"{strategy.name}: {strategy.description}",
    )
    _check_covariances(covariances, strategy, source)

    fit: dict = {}
    if "fit" in doc:
        raw_fit = doc["fit"]
        if not isinstance(raw_fit, dict):
            raise _error(source, f"'fit' should be an object, found {_show(raw_fit)}")
        _check_schema(raw_fit, _SCHEMA["$defs"]["fit"], "fit", source)
        fit = copy.deepcopy(raw_fit)

    center, scale = _standardize(doc, d, source)
    params = MixtureParams(
        covariance_type=cov_type,
        weights=np.ascontiguousarray(weights, dtype=np.float64),
        means=np.ascontiguousarray(means, dtype=np.float64),
        covariances=np.ascontiguousarray(covariances, dtype=np.float64),
        center=center,
        scale=scale,
        noise=noise,
    )
    check_range(params, source)
    return params, feature_names, fit


def check_range(params: MixtureParams, source: str) -> None:
    """Refuse parameters that gmm cannot use in float64 (``source`` starts the message).

    In the data's units (means × scale + center, variances × scale²) no mean lies beyond
    ±MAX_MAGNITUDE, where no data gmm reads can be, and no variance exceeds MAX_VARIANCE, the
    largest that such data can have; ``standardize`` holds numbers in the same range. In the
    model's own units (the units it scores in) every precision (inverse covariance) is finite.
    Tiny variances are allowed where their precision is finite.
    """
    _check_within(params.means, MAX_MAGNITUDE, "means", "", source)
    standardized = params.center is not None and params.scale is not None
    if standardized:
        _check_within(params.center, MAX_MAGNITUDE, "standardize.center", "", source)
        _check_within(params.scale, MAX_MAGNITUDE, "standardize.scale", "", source)
        with np.errstate(all="ignore"):
            means = params.means * params.scale + params.center
        units = " in the data's units (times standardize.scale, plus standardize.center)"
        _check_within(means, MAX_MAGNITUDE, "means", units, source)
    strategy = get_strategy(params.covariance_type)
    _check_precisions(params.covariances, strategy, source)
    with np.errstate(all="ignore"):
        scale = params.scale if standardized else np.ones(params.n_features)
        k, d = params.n_components, params.n_features  # (k, d) without the (k, d, d) matrices
        variances = strategy.component_variances(params.covariances, k, d) * scale**2
    too_large = _first_true(~(variances <= MAX_VARIANCE * ROUNDING_SLACK))
    if too_large is not None:
        i, j = too_large
        where = _where("covariances", strategy.variance_index(i, j))
        units = f" times standardize.scale[{j}] squared" if standardized else ""
        raise _error(
            source,
            f"{where}{units} should be at most {MAX_VARIANCE:.0e} (the largest variance of "
            f"data gmm reads), found {_num(float(variances[i, j]))}",
        )


def _first_true(mask: np.ndarray) -> tuple[int, ...] | None:
    """The index of the first True entry of ``mask`` in row-major order, or None."""
    found = np.argwhere(mask)
    return tuple(int(v) for v in found[0]) if found.size else None


def _check_within(values: np.ndarray, limit: float, key: str, units: str, source: str) -> None:
    idx = _first_true(~(np.abs(values) <= limit * ROUNDING_SLACK))
    if idx is not None:
        raise _error(
            source,
            f"{_where(key, idx)}{units} should be within ±{limit:.0e} (the range of data gmm "
            f"reads), found {_num(float(values[idx]))}",
        )


def _check_precisions(cov: np.ndarray, strategy: CovarianceStrategy, source: str) -> None:
    """Every covariance (positive definite by now) has a finite inverse."""
    if strategy.stores_variances:
        with np.errstate(all="ignore"):
            idx = _first_true(~np.isfinite(1.0 / cov))
        if idx is not None:
            raise _error(
                source,
                f"{_where('covariances', idx)} is too small: its inverse (the precision) "
                f"overflows float64, found {_num(float(cov[idx]))}",
            )
        return
    identity = np.eye(cov.shape[-1])
    for j, matrix in enumerate(strategy.matrices(cov)):
        with np.errstate(all="ignore"):
            try:
                inverse = np.linalg.solve(np.linalg.cholesky(matrix), identity)
                finite = bool(np.isfinite(inverse.T @ inverse).all())
            except np.linalg.LinAlgError:
                finite = False
        if not finite:
            name = strategy.matrix_name(j)
            raise _error(
                source,
                f"{name} is too close to singular: its inverse (the precision) overflows float64",
            )


def _standardize(doc: dict, d: int, source: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The optional column scaling: {"center": [d numbers], "scale": [d numbers > 0]}."""
    if "standardize" not in doc:
        return None, None
    value = doc["standardize"]
    if not isinstance(value, dict) or set(value) != {"center", "scale"}:
        raise _error(source, "'standardize' should be an object with 'center' and 'scale'")
    center = _numbers(value["center"], (d,), "standardize.center", source)
    scale = _numbers(value["scale"], (d,), "standardize.scale", source)
    for j, v in enumerate(scale):
        if not v > 0:
            raise _error(source, f"standardize.scale[{j}] should be > 0, found {_num(v)}")
    return np.ascontiguousarray(center), np.ascontiguousarray(scale)


def _noise(doc: dict, d: int, source: str) -> Noise | None:
    """The optional noise component: {"weight": in [0, 1), "log_volume", "lower" and
    "upper": d numbers each, lower < upper, whose box has that log volume (to 1e-6),
    optionally "volume" (its exponential, to 1e-6 relative) and "volume_given"}."""
    if "noise" not in doc:
        return None
    value = doc["noise"]
    keys = {"weight", "log_volume", "lower", "upper"}
    optional = {"volume", "volume_given"}
    if not isinstance(value, dict) or not keys <= set(value) <= keys | optional:
        raise _error(
            source,
            "'noise' should be an object with 'weight', 'log_volume', 'lower' and 'upper' "
            "(and optionally 'volume' and 'volume_given')",
        )
    weight = _numbers(value["weight"], (), "noise.weight", source)
    if not 0 <= float(weight) < 1:
        raise _error(source, f"noise.weight should be in [0, 1), found {_num(float(weight))}")
    log_volume = float(_numbers(value["log_volume"], (), "noise.log_volume", source))
    lower = _numbers(value["lower"], (d,), "noise.lower", source)
    upper = _numbers(value["upper"], (d,), "noise.upper", source)
    _check_within(lower, MAX_MAGNITUDE, "noise.lower", "", source)
    _check_within(upper, MAX_MAGNITUDE, "noise.upper", "", source)
    for j in range(d):
        if not upper[j] > lower[j]:
            raise _error(
                source,
                f"noise.upper[{j}] should be above noise.lower[{j}], found "
                f"{_num(float(upper[j]))} <= {_num(float(lower[j]))}",
            )
    given = value.get("volume_given", False)
    if not isinstance(given, bool):
        raise _error(source, f"noise.volume_given should be true or false, found {_show(given)}")
    noise = Noise(float(weight), np.ascontiguousarray(lower), np.ascontiguousarray(upper), given)
    if not abs(log_volume - noise.log_volume) <= 1e-6:
        raise _error(
            source,
            "noise.log_volume should be the log volume of the box from noise.lower to "
            f"noise.upper ({_num(noise.log_volume)}), found {_num(log_volume)}",
        )
    if "volume" in value:
        volume = float(_numbers(value["volume"], (), "noise.volume", source))
        if not (volume > 0 and abs(np.log(volume) - log_volume) <= 1e-6):
            raise _error(
                source,
                f"noise.volume should be exp(noise.log_volume) ({_num(noise.volume)}), found "
                f"{_num(volume)}",
            )
    return noise


def schema() -> dict:
    """The JSON Schema (draft 2020-12) of the model file, as shipped in the package."""
    resource = importlib.resources.files("gmmcli") / "schema" / "model.schema.json"
    return json.loads(resource.read_text(encoding="utf-8"))


class _NonFiniteLiteral(ValueError):
    pass


def _reject_constant(literal: str) -> object:
    raise _NonFiniteLiteral(literal)


def _parse_json(data: bytes, name: str) -> object:
    if not data.strip():
        raise _error(name, "is empty, expected a JSON model file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _error(
            name, f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from exc
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except _NonFiniteLiteral as exc:
        raise _error(
            name, f"not valid JSON: {exc} is not allowed (model files hold finite numbers only)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise _error(
            name, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError:
        raise _error(name, "not valid JSON: nested too deeply") from None


def _error(source: str, message: str) -> GmmError:
    return GmmError(f"{source}: {message}")


def _require(doc: dict, key: str, source: str) -> object:
    if key not in doc:
        raise _error(source, f"missing key '{key}'")
    return doc[key]


def _check_format(doc: dict, source: str) -> None:
    if "format" not in doc:
        raise _error(source, f"not a gmm model file (no 'format' key, expected '{FORMAT_NAME}')")
    if not isinstance(doc["format"], str) or doc["format"] != FORMAT_NAME:
        raise _error(
            source,
            f"not a gmm model file (format is {_show(doc['format'])}, expected '{FORMAT_NAME}')",
        )


def _check_version(doc: dict, source: str) -> None:
    version = _require(doc, "version", source)
    if not _is_int(version):
        raise _error(source, f"'version' should be an integer, found {_show(version)}")
    if version > FORMAT_VERSION:
        raise _error(
            source,
            f"model format version {version} is newer than this gmm supports "
            f"({FORMAT_VERSION}); upgrade gmmcli",
        )
    if version < 1:
        raise _error(
            source, f"model format version {version} is not valid (expected {FORMAT_VERSION})"
        )


def _positive_int(doc: dict, key: str, source: str) -> int:
    value = _require(doc, key, source)
    if not _is_int(value) or value < 1:
        raise _error(source, f"'{key}' should be a positive integer, found {_show(value)}")
    return int(value)


def _feature_names(value: object, d: int, source: str) -> list[str]:
    if not isinstance(value, list) or len(value) != d:
        raise _error(
            source, f"'feature_names' should be a list of {d} strings, found {_show(value)}"
        )
    seen: dict[str, int] = {}
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name:
            raise _error(
                source, f"feature_names[{i}] should be a non-empty string, found {_show(name)}"
            )
        if name in seen:
            raise _error(
                source, f"feature_names[{i}] {_show(name)} duplicates feature_names[{seen[name]}]"
            )
        seen[name] = i
    return list(value)


def _numbers(
    value: object, shape: tuple[int, ...], key: str, source: str, hint: str = ""
) -> np.ndarray:
    """Nested lists of finite numbers in exactly ``shape``, as a float64 array."""
    flat = _flatten(value, shape)
    if flat is None or any(isinstance(item, list) for item in flat):
        raise _error(source, _shape_complaint(value, shape, key, hint))
    for i, item in enumerate(flat):
        if not _is_number(item):
            where = _where(key, np.unravel_index(i, shape))
            raise _error(source, f"{where} should be a number, found {_show(item)}")
    try:
        array = np.array(flat, dtype=np.float64)
    except OverflowError:
        array = np.array([_to_float(item) for item in flat], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        i = int(bad[0])
        where = _where(key, np.unravel_index(i, shape))
        raise _error(source, f"{where} should be a finite number, found {_num(flat[i])}")
    return array.reshape(shape)


def _flatten(value: object, shape: tuple[int, ...]) -> list | None:
    """The leaves of ``value`` if it is nested lists of exactly ``shape``, else None."""
    level = [value]
    for n in shape:
        nxt: list = []
        for item in level:
            if not isinstance(item, list) or len(item) != n:
                return None
            nxt.extend(item)
        level = nxt
    return level


def _shape_complaint(value: object, shape: tuple[int, ...], key: str, hint: str) -> str:
    suffix = f" ({hint})" if hint else ""
    found = _regular_shape(value)
    mismatch = _first_mismatch(value, shape, ())
    if found is not None or mismatch is None:
        found_text = _describe_found(found, value) if found is not None else "ragged lists"
        return f"'{key}' should be {_describe(shape)}{suffix}, found {found_text}"
    idx, rest, item = mismatch
    return f"{_where(key, idx)} should be {_describe(rest)}{suffix}, found {_show(item)}"


def _regular_shape(value: object) -> tuple[int, ...] | None:
    """The shape of rectangular nested lists (() for a non-list), or None if ragged."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    shapes = {_regular_shape(item) for item in value}
    if len(shapes) != 1 or None in shapes:
        return None
    return (len(value), *shapes.pop())


def _first_mismatch(
    value: object, shape: tuple[int, ...], idx: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], object] | None:
    """Depth first, where ``value`` first departs from ``shape``: (index, shape wanted, found)."""
    if not shape:
        return (idx, shape, value) if isinstance(value, list) else None
    if not isinstance(value, list) or len(value) != shape[0]:
        return idx, shape, value
    for i, item in enumerate(value):
        found = _first_mismatch(item, shape[1:], (*idx, i))
        if found is not None:
            return found
    return None


def _describe(shape: tuple[int, ...]) -> str:
    if not shape:
        return "a number"
    if len(shape) == 1:
        return f"a list of {shape[0]} number{'s' if shape[0] != 1 else ''}"
    return " x ".join(map(str, shape)) + " numbers"


def _describe_found(shape: tuple[int, ...], value: object) -> str:
    if not shape:
        return _show(value)
    if len(shape) == 1:
        return f"a list of {shape[0]}"
    return " x ".join(map(str, shape))


def _where(key: str, idx: tuple) -> str:
    if not len(idx):
        return f"'{key}'"
    return key + "".join(f"[{int(i)}]" for i in idx)


def _check_covariances(cov: np.ndarray, strategy: CovarianceStrategy, source: str) -> None:
    """Models stored as variances: every variance > 0; others: each matrix symmetric,
    positive definite, and diagonal for a model whose matrices are (its kernel reads only
    their diagonals, so anything off it would be silently ignored)."""
    if strategy.stores_variances:
        idx = _first_true(~(cov > 0))
        if idx is not None:
            raise _error(
                source, f"{_where('covariances', idx)} should be > 0, found {_num(cov[idx])}"
            )
        return
    for j, matrix in enumerate(strategy.matrices(cov)):
        name = strategy.matrix_name(j)
        _check_symmetric(matrix, name, source)
        if strategy.is_diagonal:
            _check_diagonal(matrix, name, strategy.name, source)
        try:
            np.linalg.cholesky(matrix)
        except np.linalg.LinAlgError as exc:
            raise _error(source, f"{name} is not positive definite") from exc


def _check_diagonal(matrix: np.ndarray, name: str, model: str, source: str) -> None:
    """Every entry off the diagonal is 0 (gmm writes exact zeros there)."""
    off = np.argwhere((matrix != 0) & ~np.eye(matrix.shape[0], dtype=bool))
    if off.size:
        a, b = (int(i) for i in off[0])
        raise _error(
            source,
            f"{name} should be diagonal, as {model}'s matrices are: entry [{a}][{b}] is "
            f"{_num(matrix[a, b])}",
        )


def _check_symmetric(matrix: np.ndarray, name: str, source: str) -> None:
    """|C_ab - C_ba| <= rtol * max(|C_ab|, |C_ba|, sqrt(|C_aa C_bb|)) for every a < b."""
    diag = np.abs(np.diag(matrix))
    root = np.sqrt(diag)  # √C_aa √C_bb, which cannot overflow where C_aa C_bb would
    scale = np.maximum(np.maximum(np.abs(matrix), np.abs(matrix.T)), np.outer(root, root))
    bad = np.triu(np.abs(matrix - matrix.T) > SYMMETRY_RTOL * scale, 1)
    if bad.any():
        a, b = (int(i) for i in np.argwhere(bad)[0])
        raise _error(
            source,
            f"{name} is not symmetric: entry [{a}][{b}] is {_num(matrix[a, b])} "
            f"but entry [{b}][{a}] is {_num(matrix[b, a])}",
        )


# The part of JSON Schema that the loader interprets (for "fit"); a test keeps the spec to it.
SCHEMA_KEYWORDS = ("type", "enum", "items", "properties", "additionalProperties", "description")
_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a finite number",
    "boolean": "a boolean",
    "string": "a string",
    "null": "null",
    "array": "a list",
    "object": "an object",
}


def _has_type(value: object, name: str) -> bool:
    """Whether ``value`` is of JSON type ``name`` (numbers must be finite)."""
    if name == "integer":
        return _is_int(value)
    if name == "number":
        return _is_number(value) and math.isfinite(_to_float(value))
    if name == "boolean":
        return isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "null":
        return value is None
    return isinstance(value, list if name == "array" else dict)


def _check_schema(value: object, node: dict, path: str, source: str) -> None:
    """Check ``value`` against a schema node of ``SCHEMA_KEYWORDS``: type (a name or a list
    of names), enum, items, and properties (unknown keys allowed), depth first; the first
    problem is reported with its path."""
    types = node.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_has_type(value, name) for name in names):
            wanted = " or ".join(_TYPE_WORDS[name] for name in names)
            raise _error(source, f"{path} should be {wanted}, found {_show(value)}")
    if "enum" in node and value not in node["enum"]:
        allowed = ", ".join(
            json.dumps(v) if not isinstance(v, str) else f"'{v}'" for v in node["enum"]
        )
        raise _error(source, f"{path} should be one of {allowed}, found {_show(value)}")
    if "items" in node and isinstance(value, list):
        for i, item in enumerate(value):
            _check_schema(item, node["items"], f"{path}[{i}]", source)
    if "properties" in node and isinstance(value, dict):
        for key, child in node["properties"].items():
            if key in value:
                _check_schema(value[key], child, f"{path}.{key}", source)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: object) -> bool:
    if type(value) is float or type(value) is int:
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _to_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:
        return math.inf if value > 0 else -math.inf  # type: ignore[operator]


def _num(value: object) -> str:
    """A number as the user wrote it (ints stay ints), abbreviated if huge."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _show(value: object) -> str:
    """A short description of a JSON value for messages."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    if _is_number(value):
        return _num(value)
    return type(value).__name__
