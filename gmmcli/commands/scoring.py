"""``gmm predict`` and ``gmm loglik``: a model file applied to DATA, on any engine."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..errors import GmmError
from ..tableoptions import MISSING_POLICIES, PREDICT_COLUMNS, PredictColumns, TableOptions
from .inputs import MemoryInput, ScaledInput, model_input
from .options import EngineOptions, check_engine, choice
from .session import Session, check_not_input, scoring_range

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..report import Reporter


def predict(
    model_path: str,
    data: str,
    output: str,
    table: TableOptions,
    engine_options: EngineOptions,
    session: Session,
    shown: PredictColumns = PREDICT_COLUMNS,
    keep_input: bool = False,
) -> None:
    """Label each row of DATA with its most probable component (and the columns ``shown``
    says: probabilities, uncertainty); with --engine dask, ``output`` may be a folder of
    part files."""
    table = dataclasses.replace(table, keep_text=keep_input)
    params, opened = _open(model_path, data, output, table, engine_options, session, "predict")
    write_predictions(
        opened,
        params,
        output,
        model_path,
        shown,
        keep_input,
        lambda: session.reporter(opened.names),
    )


def write_predictions(
    opened: MemoryInput | ScaledInput,
    params: Any,
    output: str,
    model_name: str,
    shown: PredictColumns = PREDICT_COLUMNS,
    keep_input: bool = False,
    report: Callable[[], Reporter] | None = None,
) -> None:
    """Each row's label (and probabilities, and with ``keep_input`` its cells as read) under
    ``params``, one output row per input row, to ``output``; ``model_name`` names the model
    in a range error; a scaled engine's notes on the rows go to ``report()``."""
    if isinstance(opened, ScaledInput):
        opened.score(params, "predict", output, shown=shown, keep_input=keep_input, report=report)
        return
    from ..data import prediction_columns, scored_rows, write_csv
    from ..engine.mixture import GaussianMixture

    with scoring_range(opened.source, model_name):
        resp = GaussianMixture.from_params(params).responsibilities(opened.table.values)
    columns = prediction_columns(resp, shown, params.noise is not None)
    write_csv(scored_rows(columns, opened.table.kept, opened.table.text), output)


def loglik(
    model_path: str,
    data: str,
    output: str,
    table: TableOptions,
    engine_options: EngineOptions,
    session: Session,
    as_json: bool = False,
    per_sample: bool = False,
) -> None:
    """The log-likelihood of DATA under the model: total, mean per row, rows, BIC and AIC (as
    text or JSON), or with ``per_sample`` each row's log density as CSV."""
    if as_json and per_sample:
        raise GmmError("--json and --per-sample cannot be used together")
    what = "loglik" if per_sample else "total"
    params, opened = _open(model_path, data, output, table, engine_options, session, what)
    weight_total: float | None = None
    if isinstance(opened, ScaledInput):
        totals = opened.score(params, what, output, report=lambda: session.reporter(opened.names))
        if totals is None:
            return
        total, n, weight_total = totals
    else:
        from ..engine.mixture import GaussianMixture

        with scoring_range(opened.source, model_path):
            log_density = GaussianMixture.from_params(params).score_samples(opened.table.values)
        if per_sample:
            from ..data import scored_rows, write_csv

            columns = {"log_density": log_density}
            write_csv(scored_rows(columns, opened.table.kept, None), output)
            return
        n = log_density.shape[0]
        total = float(log_density.sum())
        weights = opened.table.weights
        if weights is not None:
            import numpy as np

            weight_total = float(weights.sum())
            total = float(np.where(weights > 0, weights * log_density, 0.0).sum())
    from ..engine.mixture import information_criteria, n_parameters

    p = n_parameters(params.covariance_type, params.n_components, params.n_features, params.noise)
    n_effective = n if weight_total is None else weight_total  # Σ w is BIC's n
    bic, aic, _ = information_criteria(total, p, n_effective)
    result = {
        "log_likelihood": total,
        "mean_log_likelihood": total / n_effective,
        "n_rows": n,
    }
    if weight_total is not None:  # the weighted sum and mean; Σ w is BIC's n
        result["weight_total"] = weight_total
    result.update({"n_parameters": p, "bic": bic, "aic": aic})
    if as_json:
        import json

        text = json.dumps(result, indent=2) + "\n"
    else:
        text = "".join(f"{key}\t{value!r}\n" for key, value in result.items())
    from ..files import write_output

    write_output(output, text.encode("utf-8"))


def _open(
    model_path: str,
    data: str,
    output: str,
    table: TableOptions,
    engine_options: EngineOptions,
    session: Session,
    what: str,
) -> tuple[Any, MemoryInput | ScaledInput]:
    """Check the options and the output first, load the model, then open DATA's columns
    matched to it; the notes about DATA go to stderr (rich loads only when there are any)."""
    from ..files import check_output_path

    engine = check_engine(engine_options)
    if model_path == "-" and data == "-":
        raise GmmError("MODEL and DATA cannot both be stdin ('-')")
    choice("missing", table.missing, MISSING_POLICIES)
    check_not_input(output, [model_path, data])
    if engine == "memory" or what == "total" or not _is_folder(output):
        check_output_path(output)
    params, _, _, opened = model_input(model_path, data, table, engine, engine_options.scheduler)
    if opened.has_notes:
        opened.note(session.reporter(opened.names), scoring=True)
    return params, opened


def _is_folder(output: str) -> bool:
    from ..dataset import is_folder_output

    return is_folder_output(output)
