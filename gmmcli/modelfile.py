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

import numpy as np

from gmmcli import files
from gmmcli.engine.params import COVARIANCE_TYPES, MixtureParams, covariance_shape
from gmmcli.errors import GmmError
from gmmcli.limits import MAX_MAGNITUDE, MAX_VARIANCE, ROUNDING_SLACK

FORMAT_NAME = "gmmcli-model"
FORMAT_VERSION = 1

WEIGHTS_SUM_TOLERANCE = 1e-6
SYMMETRY_RTOL = 1e-8
# Weights whose sum is off by less than this are float rounding noise: they are kept as stored,
# so that save -> load gives back exactly the same numbers.
_RENORMALISE_ABOVE = 1e-12

_TOP_LEVEL_KEYS = (
    "format",
    "version",
    "covariance_type",
    "n_components",
    "n_features",
    "feature_names",
    "weights",
    "means",
    "covariances",
    "standardize",
    "fit",
)

_COVARIANCE_HINTS = {
    "full": "full: one d x d matrix per component",
    "tied": "tied: one d x d matrix shared by all components",
    "diag": "diag: d variances per component",
    "spherical": "spherical: one variance per component",
}

# Known keys of "fit" and their JSON types. A spec is a type name, ("array", item spec) or
# ("object", {key: spec}); unknown keys are allowed at every level.
_FIT_SPEC: dict[str, object] = {
    "n_samples": "integer",
    "n_dropped": "integer",
    "n_iter": "integer",
    "converged": "boolean",
    "log_likelihood": "number",
    "mean_log_likelihood": "number",
    "log_likelihood_history": ("array", "number"),
    "n_parameters": "integer",
    "bic": "number",
    "aic": "number",
    "seed": "integer",
    "options": (
        "object",
        {
            "n_components": "integer",
            "covariance_type": "string",
            "tol": "number",
            "reg_covar": "number",
            "max_iter": "integer",
            "n_init": "integer",
            "init": "string",
            "dtype": "string",
        },
    ),
    "best_restart": "integer",
    "restarts": ("array", ("object", {})),
    "reseeds": ("array", ("object", {})),
    "collapsed": (
        "array",
        ("object", {"component": "integer", "column": "string or null", "reason": "string"}),
    ),
    "warnings": ("array", "string"),
    "tool": ("object", {"name": "string", "version": "string"}),
}


# ---------------------------------------------------------------------------------------------
# Writing


def model_to_dict(params: MixtureParams, feature_names: list[str], fit: dict | None = None) -> dict:
    """The model as a JSON-ready dict (plain lists, ints, floats and strings).

    Raises ValueError (an internal bug, not a user error) if the parameters are inconsistent,
    non-finite, or would not load back.
    """
    cov_type = params.covariance_type
    if cov_type not in COVARIANCE_TYPES:
        raise ValueError(f"unknown covariance type {cov_type!r}")
    means = np.asarray(params.means, dtype=np.float64)
    if means.ndim != 2:
        raise ValueError(f"means should be 2-dimensional, got shape {means.shape}")
    k, d = means.shape
    arrays = {
        "weights": (np.asarray(params.weights, dtype=np.float64), (k,)),
        "means": (means, (k, d)),
        "covariances": (
            np.asarray(params.covariances, dtype=np.float64),
            covariance_shape(cov_type, k, d),
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
    if fit is not None:
        doc["fit"] = _jsonable(fit, "fit")
    try:
        model_from_dict(doc, "<model being written>")
    except GmmError as exc:
        raise ValueError(f"internal error: refusing to write an invalid model: {exc}") from exc
    return doc


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


check_output_path = files.check_output_path


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
    if not isinstance(cov_type, str) or cov_type not in COVARIANCE_TYPES:
        allowed = ", ".join(f"'{t}'" for t in COVARIANCE_TYPES)
        raise _error(
            source, f"'covariance_type' should be one of {allowed}, found {_show(cov_type)}"
        )
    k = _positive_int(doc, "n_components", source)
    d = _positive_int(doc, "n_features", source)
    feature_names = _feature_names(_require(doc, "feature_names", source), d, source)

    weights = _numbers(_require(doc, "weights", source), (k,), "weights", source)
    for i, w in enumerate(weights):
        if not w > 0:
            raise _error(source, f"weights[{i}] should be > 0, found {_num(w)}")
    total = float(weights.sum())
    if abs(total - 1.0) > WEIGHTS_SUM_TOLERANCE:
        raise _error(
            source,
            f"'weights' should sum to 1 (within {WEIGHTS_SUM_TOLERANCE:g}), found sum {total:.12g}",
        )
    if abs(total - 1.0) > _RENORMALISE_ABOVE:
        weights = weights / total

    means = _numbers(_require(doc, "means", source), (k, d), "means", source)
    shape = covariance_shape(cov_type, k, d)
    covariances = _numbers(
        _require(doc, "covariances", source),
        shape,
        "covariances",
        source,
        hint=_COVARIANCE_HINTS[cov_type],
    )
    _check_covariances(covariances, cov_type, source)

    fit: dict = {}
    if "fit" in doc:
        raw_fit = doc["fit"]
        if not isinstance(raw_fit, dict):
            raise _error(source, f"'fit' should be an object, found {_show(raw_fit)}")
        _check_spec(raw_fit, ("object", _FIT_SPEC), "fit", source)
        fit = copy.deepcopy(raw_fit)

    center, scale = _standardize(doc, d, source)
    params = MixtureParams(
        covariance_type=cov_type,
        weights=np.ascontiguousarray(weights, dtype=np.float64),
        means=np.ascontiguousarray(means, dtype=np.float64),
        covariances=np.ascontiguousarray(covariances, dtype=np.float64),
        center=center,
        scale=scale,
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
    _check_precisions(params.covariances, params.covariance_type, source)
    with np.errstate(all="ignore"):
        scale = params.scale if standardized else np.ones(params.n_features)
        variances = np.diagonal(params.full_covariances(), axis1=1, axis2=2) * scale**2
    too_large = np.argwhere(~(variances <= MAX_VARIANCE * ROUNDING_SLACK))
    if too_large.size:
        i, j = (int(v) for v in too_large[0])
        index = {"full": (i, j, j), "tied": (j, j), "diag": (i, j), "spherical": (i,)}
        where = _where("covariances", index[params.covariance_type])
        units = f" times standardize.scale[{j}] squared" if standardized else ""
        raise _error(
            source,
            f"{where}{units} should be at most {MAX_VARIANCE:.0e} (the largest variance of "
            f"data gmm reads), found {_num(float(variances[i, j]))}",
        )


def _check_within(values: np.ndarray, limit: float, key: str, units: str, source: str) -> None:
    bad = np.argwhere(~(np.abs(values) <= limit * ROUNDING_SLACK))
    if bad.size:
        idx = tuple(int(v) for v in bad[0])
        raise _error(
            source,
            f"{_where(key, idx)}{units} should be within ±{limit:.0e} (the range of data gmm "
            f"reads), found {_num(float(values[idx]))}",
        )


def _check_precisions(cov: np.ndarray, cov_type: str, source: str) -> None:
    """Every covariance (positive definite by now) has a finite inverse."""
    if cov_type in ("diag", "spherical"):
        with np.errstate(all="ignore"):
            bad = np.argwhere(~np.isfinite(1.0 / cov))
        if bad.size:
            idx = tuple(int(v) for v in bad[0])
            raise _error(
                source,
                f"{_where('covariances', idx)} is too small: its inverse (the precision) "
                f"overflows float64, found {_num(float(cov[idx]))}",
            )
        return
    matrices = cov[None] if cov_type == "tied" else cov
    identity = np.eye(cov.shape[-1])
    for j, matrix in enumerate(matrices):
        with np.errstate(all="ignore"):
            try:
                inverse = np.linalg.solve(np.linalg.cholesky(matrix), identity)
                finite = bool(np.isfinite(inverse.T @ inverse).all())
            except np.linalg.LinAlgError:
                finite = False
        if not finite:
            name = "'covariances'" if cov_type == "tied" else f"covariances[{j}]"
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


def _check_covariances(cov: np.ndarray, cov_type: str, source: str) -> None:
    if cov_type in ("diag", "spherical"):
        bad = np.argwhere(~(cov > 0))
        if bad.size:
            idx = tuple(bad[0])
            raise _error(
                source, f"{_where('covariances', idx)} should be > 0, found {_num(cov[idx])}"
            )
        return
    matrices = cov[None] if cov_type == "tied" else cov
    for j, matrix in enumerate(matrices):
        name = "'covariances'" if cov_type == "tied" else f"covariances[{j}]"
        _check_symmetric(matrix, name, source)
        try:
            np.linalg.cholesky(matrix)
        except np.linalg.LinAlgError as exc:
            raise _error(source, f"{name} is not positive definite") from exc


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


def _check_spec(value: object, spec: object, path: str, source: str) -> None:
    """Check the JSON type of ``value`` against a ``_FIT_SPEC``-style spec."""
    if isinstance(spec, tuple):
        kind, inner = spec
        if kind == "array":
            if not isinstance(value, list):
                raise _error(source, f"{path} should be a list, found {_show(value)}")
            for i, item in enumerate(value):
                _check_spec(item, inner, f"{path}[{i}]", source)
            return
        if not isinstance(value, dict):
            raise _error(source, f"{path} should be an object, found {_show(value)}")
        for key, item_spec in inner.items():
            if key in value:
                _check_spec(value[key], item_spec, f"{path}.{key}", source)
        return
    ok = {
        "integer": _is_int(value),
        "number": _is_number(value) and math.isfinite(_to_float(value)),
        "boolean": isinstance(value, bool),
        "string": isinstance(value, str),
        "string or null": value is None or isinstance(value, str),
    }[spec]
    if not ok:
        article = "an" if spec[0] in "aeiou" else "a"
        wanted = "a finite number" if spec == "number" else f"{article} {spec}"
        raise _error(source, f"{path} should be {wanted}, found {_show(value)}")


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
