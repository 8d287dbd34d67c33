"""``gmm fit`` and ``gmm select``: options checked, DATA opened, the engine run, the model file
written, and the story told on stderr."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..errors import GmmError
from ..limits import MAX_VARIANCE
from ..tableoptions import MISSING_POLICIES, RowCounts, TableOptions
from .inputs import open_input
from .options import (
    INIT_CHOICES,
    EngineOptions,
    FitOptions,
    SelectOptions,
    check_engine,
    check_values,
    choice,
    covariance_name,
    covariance_names,
)
from .session import Session, check_output, numerical_range, same_output, tool

# select's starts: those of fit but a model file (a warm start fits one cell, not a grid)
SELECT_INITS = ("hc", "hc-ward", "kmeans++", "random", "random-from-data")


def fit(
    data: str,
    output: str,
    options: FitOptions,
    table: TableOptions,
    engine_options: EngineOptions,
    session: Session,
    labels: str | None = None,
) -> None:
    """Fit a Gaussian mixture to DATA by EM and write the model file to ``output``; with
    ``labels``, also each row's label and probabilities there (``gmm predict`` of the new
    model on DATA: scikit-learn's fit_predict, mclust's classification)."""
    from .. import modelfile

    covariance = covariance_name(options.covariance)
    choice("missing", table.missing, MISSING_POLICIES)
    _check_em_values(options.components, options, dtype=options.dtype, threads=options.threads)
    engine = check_engine(engine_options)
    components = options.components
    init = options.init
    start = None
    if init not in INIT_CHOICES:
        if not os.path.exists(init):
            raise GmmError(
                f"--init {init!r}: use one of {', '.join(INIT_CHOICES)}, "
                "or the path of a model file"
            )
        start, start_names, _ = modelfile.load_model(init)
        components, covariance = _warm_start_options(init, start, components, covariance)
        if start.noise is not None and not options.em.noise:
            raise GmmError(f"{init}: the model has a noise component; add --noise to start from it")
        if options.em.standardize and start.scale is None:
            raise GmmError(
                f"{init}: --standardize needs a standardized model to start from (this one "
                "is in the data's units); fit it with --standardize, or leave the option out"
            )
    if components is None:
        raise GmmError("missing option -k/--components (the number of components)")
    check_output(output, [data, init])
    if labels is not None:
        check_output(labels, [data, init])
        if same_output(labels, output):
            where = "stdout" if labels == "-" else "that file"
            raise GmmError(f"--labels {labels}: -o writes the model to {where} too")

    scaling = None if start is None or start.scale is None else (start.center, start.scale)
    opened = open_input(
        data,
        table if start is None else table.matching(start_names, start.n_features),
        engine,
        engine_options.scheduler,
        float32=options.dtype == "float32" and not options.em.standardize and scaling is None,
    )
    report = session.reporter(opened.names)
    opened.note(report)
    opened.check_rows(components)
    if engine == "memory":
        check_regularisation(opened.table, options.em.reg_covar, options.em.reg_scale)
    n_init = options.n_init
    if start is not None and n_init > 1:
        report.warning("a warm start (--init MODEL) needs one restart; using --n-init 1")
        n_init = 1

    from ..engine.mixture import GaussianMixture

    model = GaussianMixture(
        components,
        covariance_type=covariance,
        n_init=n_init,
        init=init if start is None else "kmeans++",
        weights_init=None if start is None else start.weights,
        means_init=None if start is None else start.means,
        covariances_init=None if start is None else start.covariances,
        noise_init=None if start is None else start.noise,
        dtype=options.dtype,
        threads=options.threads,
        scaling=scaling,
        callback=report.on_event,
        **dataclasses.asdict(options.em),
    )
    counts = opened.fit(model, report, covariance, options.dtype)
    info = fit_record(model, opened.names, **row_fields(counts))
    if start is not None:
        info["options"]["init"] = f"model file {init}"
    save_fitted(output, model, opened.names, info, data)
    if labels is not None:
        from .scoring import write_predictions

        write_predictions(opened, model.params_, labels, "the fitted model")
    noise = model.params_.noise
    report.fit_summary(info, output, None if noise is None else noise.weight)


def select(
    data: str,
    output: str,
    table_path: str | None,
    options: SelectOptions,
    table: TableOptions,
    session: Session,
    plot_path: str | None = None,
) -> None:
    """Fit every cell of the grid (k × covariance model) and write the best model by the
    criterion; ``table_path`` also gets the whole grid as CSV, and ``plot_path`` a picture
    of the criterion against k, one line per model."""
    from ..data import write_csv
    from ..engine.select import CRITERIA, WorkerLost, choose, run_grid

    types = covariance_names(options.covariances or [""])
    criterion = choice("criterion", options.criterion, CRITERIA)
    choice("init", options.init, SELECT_INITS)
    choice("missing", table.missing, MISSING_POLICIES)
    _check_em_values(
        min(options.components), options, jobs=options.jobs, refine_margin=options.refine_margin
    )
    if options.compare_noise and options.em.noise:
        raise GmmError("--compare-noise fits every cell with and without noise: leave out --noise")
    if plot_path is not None:
        from ..plot import output_format

        output_format(plot_path)
    for path in [output, table_path, plot_path]:
        if path is not None:
            check_output(path, [data])
    if table_path is not None and same_output(output, table_path):
        where = "stdout" if table_path == "-" else "that file"
        raise GmmError(f"--table {table_path}: -o writes the model to {where} too")
    opened = open_input(data, table)
    report = session.reporter(opened.names)
    opened.note(report)
    opened.check_rows(max(options.components), " asked")
    check_regularisation(opened.table, options.em.reg_covar, options.em.reg_scale)
    settings = {**dataclasses.asdict(options.em), "n_init": options.n_init, "init": options.init}
    ks = options.components
    noises = (False, True) if options.compare_noise else None
    grid = report.grid_progress(len(ks) * len(types) * (2 if noises else 1))
    in_range = numerical_range(opened.source, "float64", options.em.standardize, opened.names)
    try:
        with in_range, grid as advance:
            cells = run_grid(
                opened.table.values,
                ks,
                types,
                settings,
                jobs=options.jobs,
                on_cell=advance,
                sample_weight=opened.table.weights,
                noises=noises,
                criterion=criterion,
                margin=options.refine_margin,
                on_more=grid.add,
            )
    except WorkerLost as error:
        raise GmmError(str(error), 1) from None
    chosen = choose(cells, criterion)
    report.select_table(cells, chosen, criterion)
    info = fit_record(chosen.model, opened.names, **row_fields(opened.table.counts))
    info["selection"] = {"criterion": criterion, "grid": [cell.record() for cell in cells]}
    save_fitted(output, chosen.model, opened.names, info, data)
    if table_path is not None:
        import pandas as pd

        write_csv(pd.DataFrame([cell.record() for cell in cells]), table_path)
    if plot_path is not None:
        from ..plot import render_criterion

        render_criterion(plot_path, [cell.record() for cell in cells], criterion, chosen.record())
    for message in info["warnings"]:
        report.warning(message)


def _check_em_values(
    components: int | None, options: FitOptions | SelectOptions, **more: object
) -> None:
    values = {**options.em.values(), "n_init": options.n_init, **more}
    if components is not None:
        values["n_components"] = components
    check_values(values)


def _warm_start_options(
    path: str, start: Any, components: int | None, covariance: str
) -> tuple[int, str]:
    """-k and --covariance of a warm start are the model's (given ones must agree)."""
    if components is not None and components != start.n_components:
        raise GmmError(
            f"{path}: the model has {start.n_components} components but -k is {components}"
        )
    if covariance != FitOptions.covariance and covariance != start.covariance_type:
        raise GmmError(
            f"{path}: the model has {start.covariance_type} covariances but "
            f"--covariance is {covariance}"
        )
    return start.n_components, start.covariance_type


def check_regularisation(table: Any, reg_covar: float, reg_scale: str = "data") -> None:
    """Before any work: --reg-covar is added to every variance times the column's variance in
    the data (1 for a constant column), so a large one can push the variances past what a
    model file holds (MAX_VARIANCE). In the data's units this is the same with --standardize
    (reg_covar × 1, times scale²)."""
    if reg_covar <= 1 or reg_scale == "absolute":  # reg_covar × variance ≤ variance, bound
        return
    import numpy as np

    with np.errstate(all="ignore"):
        variances = np.nanvar(table.values, axis=0)
        variances = np.where(variances > 0, variances, 1.0)
        j = int(np.argmax(variances))
        if not reg_covar * variances[j] > MAX_VARIANCE:
            return
    raise GmmError(
        f"--reg-covar {reg_covar:g}: times the variance of column {table.names[j]!r} of "
        f"{table.source} ({variances[j]:.3g}) it passes {MAX_VARIANCE:.0e}, the largest "
        "variance a model holds"
    )


def row_fields(counts: RowCounts) -> dict[str, int]:
    """The fit record's counts of rows: dropped, and (only when there were some) rows and
    cells missing, fitted by EM."""
    fields = {"n_dropped": counts.dropped}
    if counts.missing_rows:
        fields["n_missing_rows"] = counts.missing_rows
        fields["n_missing_cells"] = counts.missing_cells
    return fields


def fit_record(model: Any, names: list[str], **extra: object) -> dict:
    """The model file's ``fit`` section for a fitted GaussianMixture: the engine's summary,
    its notices in people's words, ``extra`` (n_dropped, selection) and which program wrote
    it."""
    from .. import modelfile
    from ..report import notice_text

    summary = model.summary()
    warnings = [notice_text(notice, names) for notice in summary.notices]
    return modelfile.fit_record(summary, names, warnings, **extra, tool=tool())


def save_fitted(output: str, model: Any, names: list[str], info: dict, data: str) -> None:
    """Write the fitted model's file, after checking that a model file can hold it (covariances
    pushed out of range by --reg-covar, say, are an error about the data and options)."""
    from .. import modelfile
    from ..files import display_name

    try:
        modelfile.check_range(model.params_, "the fitted model")
    except GmmError as error:
        raise GmmError(
            f"{display_name(data)}: {error.message} (check --reg-covar, or try --standardize)"
        ) from None
    modelfile.save_model(output, model.params_, names, info)
