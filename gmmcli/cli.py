"""The command line: parse options, call data → engine → modelfile/report, map errors to exits.

The only module that imports typer and the only place that exits. Heavy imports (numpy,
pandas, the engine) happen inside the commands, so `gmm --help` starts fast.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from .errors import GmmError
from .limits import MAX_VARIANCE

app = typer.Typer(
    name="gmm",
    help="Cluster tabular data with Gaussian mixture models fitted by EM. "
    "Data goes to stdout (CSV or JSON); tables, progress and warnings go to stderr. "
    "Add --debug anywhere to see a traceback on an internal error.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEBUG = {"on": False}
COVARIANCES = ("full", "tied", "diag", "spherical")
INIT_CHOICES = ("kmeans++", "random", "random-from-data")

# -- the shared table options (every command that reads data) ------------------------------
Delimiter = Annotated[str, typer.Option("-d", "--delimiter", help="Field delimiter of DATA.")]
NoHeader = Annotated[
    bool, typer.Option("--no-header", help="DATA has no header line; columns are 1, 2, ...")
]
Columns = Annotated[
    str | None,
    typer.Option("--columns", "-c", help="Comma-separated column names or 1-based positions."),
]
Missing = Annotated[
    str,
    typer.Option(
        "--missing",
        help="Rows with missing or non-finite values: 'error' (default) or 'drop' them.",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No tables, progress or warnings.")]
RegScale = Annotated[
    str,
    typer.Option(
        "--reg-scale",
        help="data: --reg-covar times each column's variance (a fit then does not depend on "
        "the data's units); absolute: added as it is, like scikit-learn.",
    ),
]
Standardize = Annotated[
    bool,
    typer.Option(
        "--standardize",
        help="Centre and scale each column before fitting; stored in the model, so every "
        "command shows original units.",
    ),
]
Output = Annotated[
    str, typer.Option("-o", "--output", help="Write the result here ('-' for stdout).")
]
ENGINES = ("memory", "dask", "stream")
Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        help="memory (default); dask: on a Dask cluster, DATA a glob of CSV files or Parquet "
        "file(s) or folder (needs pip install 'gmmcli[dask]'); stream: a CSV file read in "
        "blocks on every pass, in bounded memory.",
    ),
]
Scheduler = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="With --engine dask: an existing scheduler's address (tcp://host:8786); "
        "default: a local cluster of one worker process per core, closed at the end.",
    ),
]


def _handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every failure into one line on stderr and an exit status (2, 1 or 130)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _HELD.clear()
        try:
            result = command(*args, **kwargs)
            for report in _HELD:  # notes held back (see _reporter): the command succeeded
                report.release()
            return result
        except GmmError as error:
            _fail(error.message, error.status)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Terminated:
            _fail("terminated", 143)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as error:  # an internal failure: say how to see more
            if DEBUG["on"]:
                raise
            _fail(
                f"internal error: {type(error).__name__}: {error} "
                "(run again with --debug for the traceback)",
                1,
            )
        finally:
            _HELD.clear()

    return wrapper


# Reporters whose notes (rows dropped, columns ignored) wait until the command's work starts
# or it succeeds: a command that fails prints its error line alone.
_HELD: list[Any] = []


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the command unwinds like Ctrl-C: outputs
    are written to a temporary file and renamed, so nothing half-written is left."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _fail(message: str, status: int) -> None:
    print(f"gmm: error: {message}", file=sys.stderr)
    raise typer.Exit(status)


def _quiet_broken_pipe() -> None:
    """The reader went away (e.g. `| head`): stop quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise typer.Exit(0)


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise GmmError(f"--columns {text!r}: empty column name")
    return parts


def _choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise GmmError(f"{option} {value!r}: use one of {', '.join(choices)}")
    return value


def _same_output(first: str, second: str) -> bool:
    """Whether two outputs are the same place (both stdout, or one file)."""
    if first == "-" or second == "-":
        return first == second
    if os.path.exists(first) and os.path.exists(second):
        return os.path.samefile(first, second)
    return os.path.realpath(first) == os.path.realpath(second)


def _check_not_input(output: str, inputs: list[str]) -> None:
    """Never overwrite an input file of the same command."""
    if output == "-" or not os.path.exists(output):
        return
    for path in inputs:
        if path != "-" and os.path.exists(path) and os.path.samefile(output, path):
            raise GmmError(f"{output}: refusing to overwrite an input of this command")


# -- gmm fit ---------------------------------------------------------------------------------
@app.command(
    epilog="Example: gmm fit sample_data/blobs_2d.csv -k 4 -o model.json",
)
@_handle_errors
def fit(
    data: Annotated[str, typer.Argument(help="CSV file to fit ('-' for stdin).")],
    components: Annotated[
        int | None, typer.Option("-k", "--components", help="Number of components.")
    ] = None,
    output: Output = "-",
    covariance: Annotated[
        str, typer.Option("--covariance", help="full, tied, diag or spherical.")
    ] = "full",
    n_init: Annotated[int, typer.Option("--n-init", help="Restarts; the best is kept.")] = 1,
    max_iter: Annotated[int, typer.Option("--max-iter", help="Most EM iterations.")] = 100,
    tol: Annotated[
        float, typer.Option("--tol", help="Stop when the log-likelihood per row changes less.")
    ] = 1e-3,
    reg_covar: Annotated[
        float, typer.Option("--reg-covar", help="Added to every covariance diagonal.")
    ] = 1e-6,
    init: Annotated[
        str,
        typer.Option(
            "--init", help="kmeans++, random, random-from-data, or a model file (warm start)."
        ),
    ] = "kmeans++",
    seed: Annotated[int, typer.Option("--seed", help="Random seed (recorded in the model).")] = 0,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="Working precision of the iterations: float64, or float32 (faster; the "
            "log-likelihood reported is still computed in float64).",
        ),
    ] = "float64",
    threads: Annotated[
        int | None, typer.Option("--threads", help="Worker threads (default: one per core).")
    ] = None,
    reg_scale: RegScale = "data",
    standardize: Standardize = False,
    columns: Columns = None,
    delimiter: Delimiter = ",",
    no_header: NoHeader = False,
    missing: Missing = "error",
    quiet: Quiet = False,
    engine: Engine = "memory",
    scheduler: Scheduler = None,
) -> None:
    """Fit a Gaussian mixture to DATA by EM and write the model as JSON."""
    from . import modelfile
    from .data import read_table

    covariance = _choice(covariance, COVARIANCES, "--covariance")
    dtype = _choice(dtype, ("float64", "float32"), "--dtype")
    if threads is not None and threads < 1:
        raise GmmError(f"--threads {threads}: must be >= 1")
    missing = _choice(missing, ("error", "drop"), "--missing")
    reg_scale = _choice(reg_scale, ("data", "absolute"), "--reg-scale")
    _check_fit_options(components, n_init, max_iter, tol, reg_covar)
    _check_seed(seed)
    engine = _check_engine(engine, scheduler)
    start = None
    if init not in INIT_CHOICES:
        if not os.path.exists(init):
            raise GmmError(
                f"--init {init!r}: use one of {', '.join(INIT_CHOICES)}, "
                "or the path of a model file"
            )
        start, start_names, _ = modelfile.load_model(init)
        components, covariance = _warm_start_options(init, start, components, covariance)
        if standardize and start.scale is None:
            raise GmmError(
                f"{init}: --standardize needs a standardized model to start from (this one "
                "is in the data's units); fit it with --standardize, or leave the option out"
            )
    if components is None:
        raise GmmError("missing option -k/--components (the number of components)")
    _check_not_input(output, [data, init])
    modelfile.check_output_path(output)

    required = start_names if start is not None and not no_header and columns is None else None
    n_required = start.n_features if start is not None and required is None else None
    if engine != "memory":
        from . import scale

        inputs, layout = scale.open_input(
            engine,
            data,
            delimiter=delimiter,
            header=not no_header,
            columns=_split(columns),
            missing=missing,
            required=required,
            n_required=n_required,
        )
        names = layout.names
        report = _reporter(quiet, names)
        if layout.skipped:
            report.info(
                f"{inputs.display}: ignoring non-numeric column(s) {', '.join(layout.skipped)} "
                "(choose columns with --columns)"
            )
    else:
        table = read_table(
            data,
            delimiter=delimiter,
            header=not no_header,
            columns=_split(columns),
            missing=missing,
            required=required,
            n_required=n_required,
            float32=dtype == "float32" and not standardize and _scaling_of(start) is None,
        )
        names = table.names
        report = _reporter(quiet, names)
        _report_table(report, table)
        if table.values.shape[0] < components:
            raise GmmError(
                f"{table.source}: {table.values.shape[0]} rows are fewer than the "
                f"{components} components"
            )
        _check_regularisation(table, reg_covar, reg_scale)
    if start is not None and n_init > 1:
        report.warning("a warm start (--init MODEL) needs one restart; using --n-init 1")
        n_init = 1

    from .engine.mixture import GaussianMixture

    model = GaussianMixture(
        components,
        covariance_type=covariance,
        tol=tol,
        reg_covar=reg_covar,
        reg_scale=reg_scale,
        max_iter=max_iter,
        n_init=n_init,
        init=init if start is None else "kmeans++",
        weights_init=None if start is None else start.weights,
        means_init=None if start is None else start.means,
        covariances_init=None if start is None else start.covariances,
        seed=seed,
        dtype=dtype,
        threads=threads,
        standardize=standardize,
        scaling=_scaling_of(start),
        callback=report.on_event,
    )
    if engine != "memory":

        def announce(n_rows: int | None) -> None:
            if n_rows is not None:
                report.start_fit(n_rows, len(names), components, covariance, n_init)
            else:
                report.info(
                    f"fitting {components} components ({covariance} covariance) to {data}, "
                    f"{len(names)} columns read in blocks on every pass, {n_init} restart"
                    + ("s" if n_init != 1 else "")
                )

        n_dropped = scale.fit(
            engine,
            model,
            inputs,
            layout,
            delimiter=delimiter,
            header=not no_header,
            missing=missing,
            scheduler=scheduler,
            threads=threads,
            announce=announce,
        )
        if n_dropped:
            report.warning(
                f"{inputs.display}: dropped {n_dropped} row(s) with missing or non-finite values"
            )
    else:
        report.start_fit(*table.values.shape, components, covariance, n_init)
        with _numerical_range(table.source, dtype, standardize, table.names):
            model.fit(table.values)
        n_dropped = table.n_dropped
    info = model.fit_info(names)
    info["n_dropped"] = n_dropped
    if start is not None:
        info["options"]["init"] = f"model file {init}"
    info["tool"] = _tool()
    _check_fitted(model.params_, data)
    modelfile.save_model(output, model.params_, names, info)
    report.fit_summary(info, output)


def _check_engine(engine: str, scheduler: str | None) -> str:
    engine = _choice(engine, ENGINES, "--engine")
    if scheduler is not None and engine != "dask":
        raise GmmError("--scheduler needs --engine dask")
    if engine == "dask":
        try:
            import dask.dataframe  # noqa: F401
            import distributed  # noqa: F401
        except ImportError:
            raise GmmError("--engine dask needs Dask: pip install 'gmmcli[dask]'") from None
    return engine


@contextlib.contextmanager
def _numerical_range(
    source: str, dtype: str, standardize: bool, names: list[str] | None = None
) -> Iterator[None]:
    """The engine's NumericalRangeError (values beyond what the working precision holds) as a
    user error about the data (and the column, where the engine names one)."""
    from .engine.params import NumericalRangeError

    try:
        yield
    except NumericalRangeError as error:
        hints = (["--dtype float64"] if dtype == "float32" else []) + (
            [] if standardize else ["--standardize"]
        )
        hint = f" (try {' or '.join(hints)})" if hints else ""
        where = ""
        if error.column is not None and names is not None:
            where = f"column '{names[error.column]}' ({error.column + 1}): "
        raise GmmError(f"{source}: {where}{error}{hint}") from None


@contextlib.contextmanager
def _scoring_range(source: str, model: str) -> Iterator[None]:
    """A row that the model cannot score in float64 (NumericalRangeError) as a user error."""
    from .engine.params import NumericalRangeError
    from .files import display_name

    try:
        yield
    except NumericalRangeError as error:
        raise GmmError(f"{source}: {error} (model {display_name(model)})") from None


def _check_regularisation(table: Any, reg_covar: float, reg_scale: str = "data") -> None:
    """Before any work: --reg-covar is added to every variance times the column's variance in
    the data (1 for a constant column), so a large one can push the variances past what a
    model file holds (MAX_VARIANCE). In the data's units this is the same with --standardize
    (reg_covar × 1, times scale²)."""
    if reg_covar <= 1 or reg_scale == "absolute":  # reg_covar × variance ≤ variance, bound
        return
    import numpy as np

    with np.errstate(all="ignore"):
        variances = table.values.var(axis=0)
        variances = np.where(variances > 0, variances, 1.0)
        j = int(np.argmax(variances))
        if not reg_covar * variances[j] > MAX_VARIANCE:
            return
    raise GmmError(
        f"--reg-covar {reg_covar:g}: times the variance of column {table.names[j]!r} of "
        f"{table.source} ({variances[j]:.3g}) it passes {MAX_VARIANCE:.0e}, the largest "
        "variance a model holds"
    )


def _check_fitted(params: Any, data: str) -> None:
    """A fitted model that a model file cannot hold (covariances pushed out of range by
    --reg-covar, say) is an error about the data and options, not an internal one."""
    from . import modelfile
    from .files import display_name

    try:
        modelfile.check_range(params, "the fitted model")
    except GmmError as error:
        raise GmmError(
            f"{display_name(data)}: {error.message} (check --reg-covar, or try --standardize)"
        ) from None


def _scaling_of(start: Any) -> tuple | None:
    """A warm start from a standardized model keeps that model's scaling."""
    if start is None or start.scale is None:
        return None
    return start.center, start.scale


def _check_fit_options(
    components: int | None, n_init: int, max_iter: int, tol: float, reg_covar: float
) -> None:
    checks = [
        (components is None or components >= 1, f"-k/--components {components}: must be >= 1"),
        (n_init >= 1, f"--n-init {n_init}: must be >= 1"),
        (max_iter >= 0, f"--max-iter {max_iter}: must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise GmmError(message)
    _check_number(tol, "--tol")
    _check_number(reg_covar, "--reg-covar")
    if reg_covar > MAX_VARIANCE:
        raise GmmError(
            f"--reg-covar {reg_covar}: must be at most {MAX_VARIANCE:.0e} (a larger one "
            "swamps any variance of the data gmm reads)"
        )


def _check_number(value: float, option: str) -> None:
    """A float option must be a finite number >= 0 (the model file records only finite
    numbers; 1e400 reads as infinity)."""
    if not (0 <= value < float("inf")):
        raise GmmError(f"{option} {value}: must be a finite number >= 0")


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise GmmError(f"--seed {seed}: must be >= 0")


def _warm_start_options(
    path: str, start: Any, components: int | None, covariance: str
) -> tuple[int, str]:
    if components is not None and components != start.n_components:
        raise GmmError(
            f"{path}: the model has {start.n_components} components but -k is {components}"
        )
    if covariance != "full" and covariance != start.covariance_type:
        raise GmmError(
            f"{path}: the model has {start.covariance_type} covariances but "
            f"--covariance is {covariance}"
        )
    return start.n_components, start.covariance_type


def _tool() -> dict:
    from . import __version__

    return {"name": "gmmcli", "version": __version__}


def _reporter(quiet: bool, names: list[str]) -> Any:
    """A reporter that holds its messages back until the engine's first event, a summary, or
    the command's success (see _handle_errors): never before an error line."""
    from .report import Reporter

    report = Reporter(quiet=quiet, feature_names=names)
    report.hold()
    _HELD.append(report)
    return report


def _report_table(report: Any, table: Any) -> None:
    if table.skipped_columns:
        report.info(
            f"{table.source}: ignoring non-numeric column(s) "
            f"{', '.join(table.skipped_columns)} (choose columns with --columns)"
        )
    if table.n_dropped:
        report.warning(
            f"{table.source}: dropped {table.n_dropped} row(s) with missing or non-finite values"
        )


def _model_and_table(
    model_path: str,
    data: str,
    output: str,
    delimiter: str,
    no_header: bool,
    columns: str | None,
    missing: str,
    quiet: bool,
) -> tuple[Any, Any, list[str], dict]:
    """Check the output first, load the model, then read DATA's columns matched to it (by
    name, or by position with --no-header). Returns the parameters, the table, and the
    model's feature names and fit record."""
    from . import modelfile
    from .data import read_table

    if model_path == "-" and data == "-":
        raise GmmError("MODEL and DATA cannot both be stdin ('-')")
    missing = _choice(missing, ("error", "drop"), "--missing")
    _check_not_input(output, [model_path, data])
    modelfile.check_output_path(output)
    params, names, fit = modelfile.load_model(model_path)
    selected = _split(columns)
    use_names = not no_header and selected is None
    table = read_table(
        data,
        delimiter=delimiter,
        header=not no_header,
        columns=selected,
        missing=missing,
        required=names if use_names else None,
        n_required=None if use_names else params.n_features,
    )
    if table.skipped_columns or table.n_dropped:  # rich loads only when there is news
        _report_table(_reporter(quiet, table.names), table)
    return params, table, names, fit


ModelArg = Annotated[str, typer.Argument(help="Model file written by gmm fit ('-' for stdin).")]
DataArg = Annotated[str, typer.Argument(help="CSV file of points ('-' for stdin).")]


# -- gmm predict -----------------------------------------------------------------------------
@app.command(
    epilog="Example: gmm predict model.json points.csv | cut -d, -f1 | sort | uniq -c",
)
@_handle_errors
def predict(
    model: ModelArg,
    data: DataArg,
    output: Output = "-",
    no_proba: Annotated[
        bool, typer.Option("--no-proba", help="Only the label; leave the probabilities out.")
    ] = False,
    keep_input: Annotated[
        bool, typer.Option("--keep-input", help="Keep the input columns beside the result.")
    ] = False,
    columns: Columns = None,
    delimiter: Delimiter = ",",
    no_header: NoHeader = False,
    missing: Missing = "error",
    quiet: Quiet = False,
    engine: Engine = "memory",
    scheduler: Scheduler = None,
) -> None:
    """Label each row of DATA with its most probable component, and the probabilities.

    With --engine dask, -o FOLDER/ writes one part file per partition; otherwise the rows
    come out in order (stdout or -o FILE).
    """
    engine = _check_engine(engine, scheduler)
    if engine != "memory":
        _score_scaled(
            engine,
            scheduler,
            model,
            data,
            output,
            "predict",
            delimiter,
            no_header,
            columns,
            missing,
            quiet,
            no_proba=no_proba,
            keep_input=keep_input,
        )
        return
    params, table, _, _ = _model_and_table(
        model, data, output, delimiter, no_header, columns, missing, quiet
    )

    import pandas as pd

    from .engine.mixture import GaussianMixture

    with _scoring_range(table.source, model):
        resp = GaussianMixture.from_params(params).predict_proba(table.values)
    result = pd.DataFrame({"label": resp.argmax(axis=1)})
    if not no_proba:
        for c in range(resp.shape[1]):
            result[f"prob_{c}"] = resp[:, c]
    if keep_input:
        inputs = table.frame.reset_index(drop=True)
        clash = [name for name in result.columns if name in inputs.columns]
        result = result.rename(columns={name: f"gmm_{name}" for name in clash})
        result = pd.concat([inputs, result], axis=1)
    from .data import write_csv

    write_csv(result, output)


# -- gmm loglik ------------------------------------------------------------------------------
@app.command(
    epilog="Example: gmm loglik model.json sample_data/blobs_2d.csv --json",
)
@_handle_errors
def loglik(
    model: ModelArg,
    data: DataArg,
    output: Output = "-",
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object instead of text.")
    ] = False,
    per_sample: Annotated[
        bool, typer.Option("--per-sample", help="Each row's log density, as CSV.")
    ] = False,
    columns: Columns = None,
    delimiter: Delimiter = ",",
    no_header: NoHeader = False,
    missing: Missing = "error",
    quiet: Quiet = False,
    engine: Engine = "memory",
    scheduler: Scheduler = None,
) -> None:
    """The log-likelihood of DATA under MODEL: total, mean per row, rows, BIC and AIC."""
    if as_json and per_sample:
        raise GmmError("--json and --per-sample cannot be used together")
    engine = _check_engine(engine, scheduler)

    import numpy as np

    from .engine.mixture import GaussianMixture

    if engine != "memory":
        what = "loglik" if per_sample else "total"
        params, totals = _score_scaled(
            engine,
            scheduler,
            model,
            data,
            output,
            what,
            delimiter,
            no_header,
            columns,
            missing,
            quiet,
        )
        if totals is None:
            return
        total, n = totals
        mixture = GaussianMixture.from_params(params)
    else:
        params, table, _, _ = _model_and_table(
            model, data, output, delimiter, no_header, columns, missing, quiet
        )
        mixture = GaussianMixture.from_params(params)
        with _scoring_range(table.source, model):
            log_density = mixture.score_samples(table.values)
        if per_sample:
            import pandas as pd

            from .data import write_csv

            write_csv(pd.DataFrame({"log_density": log_density}), output)
            return
        n = log_density.shape[0]
        total = float(log_density.sum())
    p = mixture.n_parameters()
    result = {
        "log_likelihood": total,
        "mean_log_likelihood": total / n,
        "n_rows": n,
        "n_parameters": p,
        "bic": -2.0 * total + p * float(np.log(n)),
        "aic": -2.0 * total + 2.0 * p,
    }
    if as_json:
        import json

        text = json.dumps(result, indent=2) + "\n"
    else:
        text = "".join(f"{key}\t{value!r}\n" for key, value in result.items())
    _write_text(text, output)


def _score_scaled(
    engine: str,
    scheduler: str | None,
    model_path: str,
    data: str,
    output: str,
    what: str,
    delimiter: str,
    no_header: bool,
    columns: str | None,
    missing: str,
    quiet: bool,
    no_proba: bool = False,
    keep_input: bool = False,
) -> tuple[Any, tuple[float, int] | None]:
    """predict/loglik with --engine dask or stream: the model's parameters, and for "total"
    the sum of the log densities and the number of rows (the rows are written otherwise)."""
    from . import modelfile, scale
    from .dataset import is_folder_output

    if model_path == "-" and data == "-":
        raise GmmError("MODEL and DATA cannot both be stdin ('-')")
    missing = _choice(missing, ("error", "drop"), "--missing")
    _check_not_input(output, [model_path, data])
    if what == "total" or not is_folder_output(output):
        modelfile.check_output_path(output)
    params, names, _ = modelfile.load_model(model_path)
    selected = _split(columns)
    use_names = not no_header and selected is None
    inputs, layout = scale.open_input(
        engine,
        data,
        delimiter=delimiter,
        header=not no_header,
        columns=selected,
        missing=missing,
        required=names if use_names else None,
        n_required=None if use_names else params.n_features,
    )
    if layout.skipped:
        _reporter(quiet, layout.names).info(
            f"{inputs.display}: ignoring non-numeric column(s) {', '.join(layout.skipped)} "
            "(choose columns with --columns)"
        )
    totals = scale.score(
        engine,
        params,
        inputs,
        layout,
        what=what,
        output=output,
        delimiter=delimiter,
        header=not no_header,
        missing=missing,
        scheduler=scheduler,
        no_proba=no_proba,
        keep_input=keep_input,
    )
    return params, totals


def _write_text(text: str, output: str) -> None:
    from .files import write_output

    write_output(output, text.encode("utf-8"))


# -- gmm select -------------------------------------------------------------------------------
@app.command(
    epilog="Example: gmm select sample_data/blobs_2d.csv -k 1-8 --covariance full,diag "
    "--table grid.csv -o model.json",
)
@_handle_errors
def select(
    data: Annotated[str, typer.Argument(help="CSV file to fit ('-' for stdin).")],
    components: Annotated[
        str, typer.Option("-k", "--components", help="Component counts: a range 1-9 or a list.")
    ] = "1-9",
    covariance: Annotated[
        str, typer.Option("--covariance", help="Comma-separated covariance types to try.")
    ] = "full,tied,diag,spherical",
    criterion: Annotated[
        str, typer.Option("--criterion", help="bic or aic (lower is better).")
    ] = "bic",
    output: Output = "-",
    table_path: Annotated[
        str | None, typer.Option("--table", help="Also write the whole grid as CSV here.")
    ] = None,
    n_init: Annotated[int, typer.Option("--n-init", help="Restarts per cell.")] = 5,
    max_iter: Annotated[int, typer.Option("--max-iter", help="Most EM iterations.")] = 100,
    tol: Annotated[float, typer.Option("--tol", help="Convergence tolerance.")] = 1e-3,
    reg_covar: Annotated[
        float, typer.Option("--reg-covar", help="Added to every covariance diagonal.")
    ] = 1e-6,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    jobs: Annotated[
        int | None, typer.Option("--jobs", help="Worker processes (default: one per core).")
    ] = None,
    reg_scale: RegScale = "data",
    standardize: Standardize = False,
    columns: Columns = None,
    delimiter: Delimiter = ",",
    no_header: NoHeader = False,
    missing: Missing = "error",
    quiet: Quiet = False,
) -> None:
    """Fit a grid of models (k × covariance type) and keep the best by BIC or AIC."""
    from . import modelfile
    from .data import read_table, write_csv
    from .engine.select import CRITERIA, choose, parse_ks, run_grid

    try:
        ks = parse_ks(components)
    except ValueError as error:
        raise GmmError(f"-k/--components {components!r}: {error} (use e.g. 1-9 or 2,4,8)") from None
    types = [t.strip() for t in covariance.split(",") if t.strip()]
    for kind in types or [""]:
        _choice(kind, COVARIANCES, "--covariance")
    criterion = _choice(criterion, CRITERIA, "--criterion")
    missing = _choice(missing, ("error", "drop"), "--missing")
    reg_scale = _choice(reg_scale, ("data", "absolute"), "--reg-scale")
    _check_fit_options(min(ks), n_init, max_iter, tol, reg_covar)
    _check_seed(seed)
    if jobs is not None and jobs < 1:
        raise GmmError(f"--jobs {jobs}: must be >= 1")
    for path in [output, table_path]:
        if path is not None:
            _check_not_input(path, [data])
            modelfile.check_output_path(path)
    if table_path is not None and _same_output(output, table_path):
        where = "stdout" if table_path == "-" else "that file"
        raise GmmError(f"--table {table_path}: -o writes the model to {where} too")
    table = read_table(
        data, delimiter=delimiter, header=not no_header, columns=_split(columns), missing=missing
    )
    report = _reporter(quiet, table.names)
    _report_table(report, table)
    n = table.values.shape[0]
    if n < max(ks):
        raise GmmError(f"{table.source}: {n} rows are fewer than the {max(ks)} components asked")
    _check_regularisation(table, reg_covar, reg_scale)
    settings = dict(
        tol=tol,
        reg_covar=reg_covar,
        reg_scale=reg_scale,
        max_iter=max_iter,
        n_init=n_init,
        seed=seed,
        standardize=standardize,
    )
    grid = report.grid_progress(len(ks) * len(types))
    with _numerical_range(table.source, "float64", standardize, table.names), grid as advance:
        cells = run_grid(table.values, ks, types, settings, jobs=jobs, on_cell=advance)
    chosen = choose(cells, criterion)
    report.select_table(cells, chosen, criterion)
    info = chosen.model.fit_info(table.names)
    info["n_dropped"] = table.n_dropped
    info["tool"] = _tool()
    info["selection"] = {
        "criterion": criterion,
        "grid": [_cell_row(cell) for cell in cells],
    }
    _check_fitted(chosen.model.params_, data)
    modelfile.save_model(output, chosen.model.params_, table.names, info)
    if table_path is not None:
        import pandas as pd

        write_csv(pd.DataFrame([_cell_row(cell) for cell in cells]), table_path)
    for message in info["warnings"]:
        report.warning(message)


def _cell_row(cell: Any) -> dict:
    return {
        "n_components": cell.n_components,
        "covariance_type": cell.covariance_type,
        "log_likelihood": cell.log_likelihood,
        "n_parameters": cell.n_parameters,
        "bic": cell.bic,
        "aic": cell.aic,
        "converged": cell.converged,
        "degenerate": cell.degenerate,
    }


# -- gmm sample -------------------------------------------------------------------------------
@app.command(epilog="Example: gmm sample model.json -n 1000 --seed 7 > synthetic.csv")
@_handle_errors
def sample(
    model: ModelArg,
    n_samples: Annotated[int, typer.Option("-n", "--n-samples", help="How many rows.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    output: Output = "-",
) -> None:
    """Draw rows from the mixture: CSV with the model's columns and a final component column."""
    from . import modelfile

    if n_samples < 1:
        raise GmmError(f"-n/--n-samples {n_samples}: must be >= 1")
    _check_seed(seed)
    _check_not_input(output, [model])
    modelfile.check_output_path(output)
    params, names, _ = modelfile.load_model(model)
    if "component" in names:
        raise GmmError(f"{model}: a feature is already called 'component'")

    import pandas as pd

    from .data import write_csv
    from .engine.mixture import GaussianMixture

    x, labels = GaussianMixture.from_params(params).sample(n_samples, seed=seed)
    frame = pd.DataFrame(x, columns=names)
    frame["component"] = labels
    write_csv(frame, output)


# -- gmm describe -----------------------------------------------------------------------------
@app.command(epilog="Example: gmm describe model.json   (or --json for a JSON object)")
@_handle_errors
def describe(
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON object on stdout.")] = False,
    quiet: Quiet = False,
) -> None:
    """Summarise a model: weights, means, spreads, correlations, and how it was fitted."""
    from . import modelfile
    from .describe import describe as summarise

    params, names, fit = modelfile.load_model(model)
    summary = summarise(params, names, fit)
    if as_json:
        import json

        _write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", "-")
        return
    from .report import print_description

    print_description(summary, quiet=quiet)


# -- gmm plot ---------------------------------------------------------------------------------
@app.command(
    epilog="Example: gmm plot model.json sample_data/blobs_2d.csv -o blobs.png "
    "(needs pip install 'gmmcli[plot]')",
)
@_handle_errors
def plot(
    model: ModelArg,
    data: Annotated[
        str | None, typer.Argument(help="CSV of points to draw ('-' for stdin); optional.")
    ] = None,
    output: Annotated[
        str, typer.Option("-o", "--output", help="Image file (.png, .svg, .pdf).")
    ] = "gmm.png",
    x: Annotated[str | None, typer.Option("--x", help="Column on the horizontal axis.")] = None,
    y: Annotated[str | None, typer.Option("--y", help="Column on the vertical axis.")] = None,
    convergence: Annotated[
        bool, typer.Option("--convergence", help="Draw the log-likelihood per iteration.")
    ] = False,
    columns: Columns = None,
    delimiter: Delimiter = ",",
    no_header: NoHeader = False,
    missing: Missing = "error",
    quiet: Quiet = False,
) -> None:
    """Draw the model (and the data, coloured by component) as an image file."""
    from . import modelfile
    from .plot import choose_columns, output_format, render

    output_format(output)
    inputs = [model] + ([data] if data else [])
    _check_not_input(output, inputs)
    modelfile.check_output_path(output)
    if data is None:
        params, names, fit = modelfile.load_model(model)
        values = labels = None
    else:
        params, table, names, fit = _model_and_table(
            model, data, output, delimiter, no_header, columns, missing, quiet
        )
        values = table.values
    if not convergence:
        choose_columns(output, names, x, y)
    from .engine.mixture import GaussianMixture

    mixture = GaussianMixture.from_params(params)
    if values is not None:
        labels = mixture.predict(values)
    shown = params.in_data_units()
    render(
        output,
        shown.weights,
        shown.means,
        shown.full_covariances(),
        names,
        values,
        labels,
        x=x,
        y=y,
        history=fit.get("log_likelihood_history"),
        convergence=convergence,
    )


# -- entry points ----------------------------------------------------------------------------
def run(argv: list[str] | None = None) -> int:
    """Run gmm with these arguments; return the exit status (never raises, never exits)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    DEBUG["on"] = "--debug" in args
    args = [a for a in args if a != "--debug"]
    command = typer.main.get_command(app)
    try:
        status = command.main(args=args, prog_name="gmm", standalone_mode=False)
    except typer.TyperException as error:  # usage errors: bad or missing options
        ctx = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError":  # bare `gmm`: the help, for people
            print(error.format_message(), file=sys.stderr)
            return 2
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print(f"gmm: error: {error.format_message()}{where}", file=sys.stderr)
        return getattr(error, "exit_code", 2) or 2
    except (typer.Abort, KeyboardInterrupt):
        print("gmm: error: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("gmm: error: terminated", file=sys.stderr)
        return 143
    except typer.Exit as done:
        return done.exit_code
    return status if isinstance(status, int) else 0


def main() -> None:
    """The console script."""
    sys.exit(run())
