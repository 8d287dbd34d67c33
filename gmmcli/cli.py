"""The command line: options mapped onto the command layer (``commands``), errors onto exits.

The only module that imports typer and the only place that exits. Options that several
commands share are declared once, in groups (csvkit's base-class idea): a command lists the
groups it takes and receives each packed into its typed options. Heavy imports (numpy,
pandas, the engine) happen inside the commands, so `gmm --help` starts fast.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable
from typing import Annotated, Any

import typer

from .commands.options import EMSettings, EngineOptions
from .commands.session import Session
from .engine.constraints import REFINE_MARGIN
from .engine.convergence import LIMIT_TOL, MAX_ITER
from .errors import GmmError
from .optiongroups import Group, declared, option, packed, with_groups
from .tableoptions import TableOptions

app = typer.Typer(
    name="gmm",
    help="Cluster tabular data with Gaussian mixture models fitted by EM. "
    "Data goes to stdout (CSV or JSON); tables, progress and warnings go to stderr. "
    "Add --debug anywhere to see a traceback on an internal error; gmm --version shows the "
    "version.",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEBUG = {"on": False}


# -- options shared by several commands, declared once ---------------------------------------
TABLE = Group(
    "table",
    {
        "columns": declared(
            None, "--columns -c", "Comma-separated column names or 1-based positions.", str | None
        ),
        "delimiter": declared(
            ",", "-d --delimiter", "Field delimiter of DATA ('\\t' or tab: a tab)."
        ),
        "tabs": declared(False, "-t --tabs", "DATA is tab-separated (as -d tab)."),
        "no_header": declared(
            False, "--no-header", "DATA has no header line; columns are 1, 2, ..."
        ),
        "missing": declared(
            "em",
            "--missing",
            "Missing cells: em (fit by EM; score by a row's other cells), error, or drop rows.",
        ),
        "encoding": declared("utf-8", "--encoding", "Text encoding of DATA (e.g. latin-1)."),
        "decimal": declared(".", "--decimal", "Decimal mark of DATA's numbers: . or , (1,5)."),
        "skip_lines": declared(0, "--skip-lines", "Lines before DATA's table (title, notes)."),
        "comment": declared(
            None, "--comment", "Lines starting with this character are not data.", str | None
        ),
    },
    TableOptions.from_words,
)
# TABLE with the column of row weights: the commands that fit or total over rows
WEIGHTED_TABLE = Group(
    "table",
    {
        **TABLE.options,
        "weights": declared(
            None,
            "--weights",
            "Column of row weights (name or 1-based position), not a feature: a row of "
            "weight w counts as w copies of it; BIC's n is the sum of the weights.",
            str | None,
        ),
    },
    TableOptions.from_words,
)
ENGINE = Group(
    "engine_options",
    {
        "engine": declared(
            "memory",
            "--engine",
            "memory (default); dask: on a Dask cluster, DATA a glob of CSV files or Parquet "
            "file(s) or folder (needs pip install 'gmmcli[dask]'); stream: a CSV file read in "
            "blocks on every pass, in bounded memory.",
        ),
        "scheduler": declared(
            None,
            "--scheduler",
            "With --engine dask: an existing scheduler's address (tcp://host:8786); default: "
            "a local cluster of one worker process per core, closed at the end.",
            str | None,
        ),
    },
    EngineOptions,
)
QUIET = Group(
    "session",
    {"quiet": declared(False, "--quiet -q", "No tables, progress or warnings.")},
    Session,
)
STOPPING_HELP = (
    f"Default: stop when the log-likelihood per row is within {LIMIT_TOL:g} of its limit, by "
    "Aitken's estimate. Given: when it changes by less than this per row (scikit-learn's rule)."
)
EM = Group(
    "em",
    {
        "max_iter": declared(MAX_ITER, "--max-iter", "Most EM iterations."),
        "tol": declared(None, "--tol", STOPPING_HELP, float | None),
        "reg_covar": declared(1e-6, "--reg-covar", "Added to every covariance diagonal."),
        "reg_scale": declared(
            "data",
            "--reg-scale",
            "data: --reg-covar times each column's variance (a fit then does not depend on the "
            "data's units); absolute: added as it is, like scikit-learn.",
        ),
        "seed": declared(0, "--seed", "Random seed (recorded in the model)."),
        "standardize": declared(
            False,
            "--standardize",
            "Centre and scale each column before fitting; stored in the model, so every "
            "command shows original units.",
        ),
        "noise": declared(
            False,
            "--noise",
            "Add a noise component for outliers (mclust's): a uniform density over the data's "
            "bounding box with a weight of its own; predict labels its rows -1.",
        ),
        "noise_volume": declared(
            None,
            "--noise-volume",
            "With --noise: the volume of the noise's box (in the data's units); default: the "
            "product of the columns' ranges.",
            float | None,
        ),
        "accelerate": declared(
            True,
            "--accelerate/--no-accelerate",
            "SQUAREM: extrapolate every three EM steps, never lowering the log-likelihood "
            "(fewer passes over the data); --no-accelerate: plain EM, one step per pass.",
        ),
    },
    EMSettings,
)

# -- options of one meaning in several commands ----------------------------------------------
Output = option(str, "-o", "--output", help="Write the result here ('-' for stdout).")
ModelArg = Annotated[str, typer.Argument(help="Model file written by gmm fit ('-' for stdin).")]
DataArg = Annotated[str, typer.Argument(help="CSV file of points ('-' for stdin).")]
FitDataArg = Annotated[str, typer.Argument(help="CSV file to fit ('-' for stdin).")]
AsJson = option(bool, "--json", help="One JSON object instead of text.")


def command(*groups: Group, epilog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a gmm command taking these option groups, with one-line errors and exits."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        arguments = with_groups(function, groups)

        @functools.wraps(arguments)
        def run_command(**values: Any) -> None:
            session: Session | None = None
            try:
                values = arguments(**values)
                session = values.get("session")
                function(**values)
                if session is not None:
                    session.release()
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

        app.command(epilog=epilog)(run_command)
        return function

    return decorate


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
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    raise typer.Exit(0)


# -- the commands ----------------------------------------------------------------------------
@command(
    EM,
    WEIGHTED_TABLE,
    QUIET,
    ENGINE,
    epilog="Example: gmm fit sample_data/blobs_2d.csv -k 4 -o model.json",
)
def fit(
    data: FitDataArg,
    components: option(int | None, "-k", "--components", help="Number of components.") = None,
    output: Output = "-",
    labels: option(str | None, "--labels", help="Also write gmm predict's output here.") = None,
    covariance: option(str, "--covariance", help="full, tied, diag, spherical, EII…VVV") = "full",
    n_init: option(int, "--n-init", help="Restarts; the best is kept.") = 1,
    init: option(
        str,
        "--init",
        help="kmeans++, hc, hc-ward, random, random-from-data, or a model file (warm start).",
    ) = "kmeans++",
    dtype: option(
        str,
        "--dtype",
        help="Working precision of the iterations: float64, or float32 (faster; the "
        "log-likelihood reported is still computed in float64).",
    ) = "float64",
    threads: option(int | None, "--threads", help="Worker threads (default: one per core).") = None,
    *,
    em: EMSettings,
    table: TableOptions,
    session: Session,
    engine_options: EngineOptions,
) -> None:
    """Fit a Gaussian mixture to DATA by EM and write the model as JSON."""
    from . import commands

    options = packed(commands.FitOptions, locals())
    commands.fit(data, output, options, table, engine_options, session, labels)


@command(
    TABLE,
    QUIET,
    ENGINE,
    epilog="Example: gmm predict model.json points.csv | cut -d, -f1 | sort | uniq -c",
)
def predict(
    model: ModelArg,
    data: DataArg,
    output: Output = "-",
    no_proba: option(bool, "--no-proba", help="Only the label, no probabilities.") = False,
    uncertainty: option(bool, "--uncertainty", help="Add 1 − the largest probability.") = False,
    keep_input: option(bool, "--keep-input", help="Input columns in front, as read.") = False,
    *,
    table: TableOptions,
    session: Session,
    engine_options: EngineOptions,
) -> None:
    """Label each row of DATA with its most probable component, and the probabilities.

    With --engine dask, -o FOLDER/ writes one part file per partition; otherwise the rows
    come out in order (stdout or -o FILE).
    """
    from . import commands

    shown = commands.PredictColumns(proba=not no_proba, uncertainty=uncertainty)
    commands.predict(model, data, output, table, engine_options, session, shown, keep_input)


@command(
    WEIGHTED_TABLE,
    QUIET,
    ENGINE,
    epilog="Example: gmm loglik model.json sample_data/blobs_2d.csv --json",
)
def loglik(
    model: ModelArg,
    data: DataArg,
    output: Output = "-",
    as_json: AsJson = False,
    per_sample: option(bool, "--per-sample", help="Each row's log density, as CSV.") = False,
    *,
    table: TableOptions,
    session: Session,
    engine_options: EngineOptions,
) -> None:
    """The log-likelihood of DATA under MODEL: total, mean per row, rows, BIC and AIC."""
    from . import commands

    commands.loglik(model, data, output, table, engine_options, session, as_json, per_sample)


@command(
    EM,
    WEIGHTED_TABLE,
    QUIET,
    epilog="Example: gmm select sample_data/blobs_2d.csv -k 1-8 --covariance full,diag "
    "--table grid.csv -o model.json",
)
def select(
    data: FitDataArg,
    components: option(
        str, "-k", "--components", help="Component counts: a range 1-9 or a list."
    ) = "1-9",
    covariance: option(
        str,
        "--covariance",
        help="Models to try, comma-separated: full, tied, diag, spherical, EII…VVV, or all "
        "(the fourteen).",
    ) = "all",
    criterion: option(str, "--criterion", help="bic, aic or icl (lower is better).") = "bic",
    output: Output = "-",
    table_path: option(str | None, "--table", help="Also write the whole grid as CSV here.") = None,
    plot: option(str | None, "--plot", help="Also draw the criterion against k here.") = None,
    n_init: option(int, "--n-init", help="Restarts per cell.") = 6,
    init: option(
        str,
        "--init",
        help="hc: the first restart of every cell from one hierarchical tree (mclust's start), "
        "the second from Ward's tree, the others k-means++; or hc-ward, kmeans++, random, "
        "random-from-data.",
    ) = "hc",
    jobs: option(int | None, "--jobs", help="Worker processes (default: one per core).") = None,
    refine_margin: option(
        float,
        "--refine-margin",
        help="Cells whose criterion from the first start is within this × n (rows) of the "
        "best get the other restarts and EM to the stopping rule; the others keep that start, "
        "stopped early (a change per row below 1e-4). inf: every cell.",
    ) = REFINE_MARGIN,
    compare_noise: option(
        bool,
        "--compare-noise",
        help="Fit every cell both with and without a noise component (as --noise), and "
        "choose among all of them.",
    ) = False,
    *,
    em: EMSettings,
    table: TableOptions,
    session: Session,
) -> None:
    """Fit a grid of models (k × covariance model; all fourteen by default) and keep the best
    by BIC, AIC or ICL."""
    from . import commands
    from .commands.options import parse_ks

    ks = parse_ks(components)
    covariances = [t.strip() for t in covariance.split(",") if t.strip()]
    options = commands.SelectOptions(
        ks, covariances, criterion, n_init, jobs, em, init, compare_noise, refine_margin
    )
    commands.select(data, output, table_path, options, table, session, plot)


@command(epilog="Example: gmm sample model.json -n 1000 --seed 7 > synthetic.csv")
def sample(
    model: ModelArg,
    n_samples: option(int, "-n", "--n-samples", help="How many rows.") = 100,
    seed: option(int, "--seed", help="Random seed.") = 0,
    output: Output = "-",
) -> None:
    """Draw rows from the mixture: CSV with the model's columns and a final component column."""
    from . import commands

    commands.sample(model, output, n_samples, seed)


@command(QUIET, epilog="Example: gmm describe model.json   (or --json for a JSON object)")
def describe(
    model: ModelArg,
    as_json: option(bool, "--json", help="A JSON object on stdout.") = False,
    *,
    session: Session,
) -> None:
    """Summarise a model: weights, means, spreads, correlations, and how it was fitted."""
    from . import commands

    commands.describe(model, session, as_json)


@command(
    TABLE,
    QUIET,
    epilog="Example: gmm plot model.json sample_data/blobs_2d.csv -o blobs.png "
    "(needs pip install 'gmmcli[plot]')",
)
def plot(
    model: ModelArg,
    data: Annotated[
        str | None, typer.Argument(help="CSV of points to draw ('-' for stdin); optional.")
    ] = None,
    output: option(str, "-o", "--output", help="Image file (.png, .svg, .pdf).") = "gmm.png",
    x: option(str | None, "--x", help="Column on the horizontal axis.") = None,
    y: option(str | None, "--y", help="Column on the vertical axis.") = None,
    convergence: option(bool, "--convergence", help="The log-likelihood per iteration.") = False,
    *,
    table: TableOptions,
    session: Session,
) -> None:
    """Draw the model (and the data, coloured by component) as an image file."""
    from . import commands

    commands.plot(model, data, output, table, session, x, y, convergence)


# -- entry points ----------------------------------------------------------------------------
def run(argv: list[str] | None = None) -> int:
    """Run gmm with these arguments; return the exit status (never raises, never exits)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    if args[:1] == ["--version"]:
        from . import __version__

        print(f"gmm {__version__}")
        return 0
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
