"""A fitted model in human terms: per-component weights, means, spreads, correlations and 2-D
ellipses, plus a summary of how it was fitted, as a plain JSON-able dict (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .engine.covariance import get_strategy
from .engine.params import MixtureParams

# Keys of the "fit" summary, in order. Every key is always present (see ``describe``).
FIT_SUMMARY_KEYS = (
    "n_samples",
    "weight_total",
    "n_dropped",
    "n_missing_rows",
    "n_missing_cells",
    "n_iter",
    "converged",
    "log_likelihood",
    "mean_log_likelihood",
    "bic",
    "aic",
    "n_parameters",
    "seed",
    "init",
    "n_init",
    "n_reseeds",
    "collapsed",
    "warnings",
    "tool_version",
)


def describe(params: MixtureParams, feature_names: list[str], fit: dict) -> dict:
    """Describe a mixture as plain lists, floats, ints, strings, bools and None.

    Top level: ``covariance_type``, ``n_components``, ``n_features``, ``feature_names``,
    ``standardized`` (bool), ``components`` and ``fit``.

    Each entry of ``components`` holds ``component`` (0-based), ``weight``, ``mean`` [d],
    ``std`` [d] (σ_j = √Σ_jj), ``correlation`` (d×d, ρ_jl = Σ_jl / (σ_j σ_l); the identity for
    diag and spherical) and, when d == 2 only, ``ellipse``: ``semi_axes`` [a, b] = √λ of the
    covariance's eigenvalues, larger first (the 1σ ellipse), and ``angle_degrees``, the angle of
    the major axis from the first column's axis, in (−90, 90] (0 for a circle).

    Parameters fitted with --standardize are reported in the data's original units
    (``MixtureParams.in_data_units``: μ·scale + center and D Σ D, D = diag(scale); scales are
    positive, so correlations are unchanged). Weights are reported as stored.

    ``fit`` always has every key of ``FIT_SUMMARY_KEYS``, whatever the fit dict holds: a key
    that is absent (or a non-finite number) is None, ``collapsed`` and ``warnings`` are [] when
    absent. So an empty fit dict (a hand-written model) gives every value None or [].
    ``collapsed`` lists each collapsed component's description, ``n_reseeds`` is the number of
    re-seed events, ``init``/``n_init`` come from the fit options and ``tool_version`` from
    the fit's tool record.

    Raises ValueError if the names and the parameters do not fit together, or if a parameter
    is not finite.
    """
    k, d = params.n_components, params.n_features
    names = [str(name) for name in feature_names]
    if len(names) != d:
        raise ValueError(f"{len(names)} feature names for {d} features")
    shown = params.in_data_units()
    means = np.asarray(shown.means, dtype=np.float64)
    covariances = np.asarray(shown.full_covariances(), dtype=np.float64)
    weights = np.asarray(params.weights, dtype=np.float64).reshape(k)
    for name, array in [("weights", weights), ("means", means), ("covariances", covariances)]:
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains non-finite values")
    independent = get_strategy(params.covariance_type).is_diagonal
    components = [
        _component(i, weights[i], means[i], covariances[i], independent) for i in range(k)
    ]
    return {
        "covariance_type": params.covariance_type,
        "n_components": int(k),
        "n_features": int(d),
        "feature_names": names,
        "standardized": params.standardized,
        "components": components,
        "fit": fit_summary(fit or {}),
    }


def _component(
    index: int, weight: float, mean: np.ndarray, covariance: np.ndarray, independent: bool
) -> dict:
    d = mean.shape[0]
    variances = np.clip(np.diag(covariance), 0.0, None)
    std = np.sqrt(variances)
    entry = {
        "component": int(index),
        "weight": float(weight),
        "mean": _floats(mean),
        "std": _floats(std),
        "correlation": _floats(np.eye(d) if independent else correlation(covariance)),
    }
    if d == 2:
        entry["ellipse"] = ellipse(covariance)
    return entry


def correlation(covariance: np.ndarray) -> np.ndarray:
    """ρ_jl = Σ_jl / (σ_j σ_l), clipped to [−1, 1], with 1 on the diagonal (and 0 off it for a
    column of zero variance)."""
    std = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    denom = np.outer(std, std)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(denom > 0, covariance / np.where(denom > 0, denom, 1.0), 0.0)
    corr = np.clip(corr, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return corr


def ellipse(covariance: np.ndarray) -> dict:
    """The 1σ ellipse of a 2×2 covariance: semi-axes √λ₁ ≥ √λ₂ (eigenvalues of Σ) and the angle
    of the major axis, atan2(v_y, v_x) of its eigenvector, in degrees in (−90, 90]."""
    symmetric = 0.5 * (covariance + covariance.T)
    eigenvalues, eigenvectors = np.linalg.eigh(symmetric)  # ascending
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    major, minor = float(eigenvalues[1]), float(eigenvalues[0])
    if major - minor <= 1e-10 * max(major, np.finfo(float).tiny):
        angle = 0.0  # a circle: every direction is a major axis
    else:
        vx, vy = eigenvectors[:, 1]
        angle = math.degrees(math.atan2(float(vy), float(vx)))
        # an axis, not a direction: fold into (−90, 90]; a vertical axis is +90, even with
        # rounding noise on either side
        angle = (angle + 90.0) % 180.0 - 90.0
        if angle <= -90.0 + 1e-9:
            angle = 90.0
        if abs(angle) < 1e-12:
            angle = 0.0
    return {"semi_axes": [math.sqrt(major), math.sqrt(minor)], "angle_degrees": float(angle)}


def fit_summary(fit: Mapping) -> dict:
    """How the model was fitted, from a model file's fit dict (see ``describe``)."""
    options = fit.get("options")
    options = options if isinstance(options, Mapping) else {}
    tool = fit.get("tool")
    tool = tool if isinstance(tool, Mapping) else {}
    reseeds = fit.get("reseeds")
    collapsed = fit.get("collapsed")
    warnings = fit.get("warnings")
    return {
        "n_samples": _int(fit.get("n_samples")),
        "weight_total": _number(fit.get("weight_total")),
        "n_dropped": _int(fit.get("n_dropped")),
        "n_missing_rows": _int(fit.get("n_missing_rows")),
        "n_missing_cells": _int(fit.get("n_missing_cells")),
        "n_iter": _int(fit.get("n_iter")),
        "converged": _bool(fit.get("converged")),
        "log_likelihood": _number(fit.get("log_likelihood")),
        "mean_log_likelihood": _number(fit.get("mean_log_likelihood")),
        "bic": _number(fit.get("bic")),
        "aic": _number(fit.get("aic")),
        "n_parameters": _int(fit.get("n_parameters")),
        "seed": _int(fit.get("seed")),
        "init": _string(options.get("init")),
        "n_init": _int(options.get("n_init")),
        "n_reseeds": len(reseeds) if isinstance(reseeds, (list, tuple)) else None,
        "collapsed": (
            [_collapse_text(c) for c in collapsed] if isinstance(collapsed, (list, tuple)) else []
        ),
        "warnings": [str(w) for w in warnings] if isinstance(warnings, (list, tuple)) else [],
        "tool_version": _string(tool.get("version")),
    }


def _collapse_text(record: object) -> str:
    """A collapsed component's description; built from its fields when the record has none."""
    if not isinstance(record, Mapping):
        return str(record)
    if isinstance(record.get("description"), str):
        return record["description"]
    text = f"component {record.get('component', '?')}"
    if record.get("column") is not None:
        text += f", column '{record['column']}'"
    if record.get("reason") is not None:
        text += f": {record['reason']}"
    return text


def _floats(array: np.ndarray) -> list:
    """Nested lists of Python floats."""
    return np.asarray(array, dtype=np.float64).tolist()


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def _bool(value: object) -> bool | None:
    return bool(value) if isinstance(value, (bool, np.bool_)) else None


def _string(value: object) -> str | None:
    return value if isinstance(value, str) else None
