"""``gmm sample``, ``gmm describe`` and ``gmm plot``: what a model file holds, drawn from,
summarised or pictured."""

from __future__ import annotations

from ..errors import GmmError
from ..tableoptions import MISSING_POLICIES, TableOptions
from .inputs import model_input
from .options import check_values, choice, option_error
from .session import Session, check_output


def sample(model_path: str, output: str, n_samples: int = 100, seed: int = 0) -> None:
    """Draw rows from the mixture: CSV with the model's columns and a final component column."""
    from .. import modelfile

    if n_samples < 1:
        raise option_error("n_samples", n_samples, "must be >= 1")
    check_values({"seed": seed})
    check_output(output, [model_path])
    params, names, _ = modelfile.load_model(model_path)
    if "component" in names:
        raise GmmError(f"{model_path}: a feature is already called 'component'")

    import pandas as pd

    from ..dataset import csv_piece
    from ..engine.mixture import GaussianMixture
    from ..files import Output

    blocks = GaussianMixture.from_params(params).sample_blocks(n_samples, seed=seed)
    with Output(output) as out:
        for i, (x, labels) in enumerate(blocks):
            frame = pd.DataFrame(x, columns=names)
            frame["component"] = labels
            out.write(csv_piece(frame, i == 0))


def describe(model_path: str, session: Session, as_json: bool = False) -> None:
    """Summarise a model: weights, means, spreads, correlations, and how it was fitted, on
    stdout as text (it is the data asked for, so ``session.quiet`` does not silence it) or
    as one JSON object."""
    from .. import modelfile
    from ..describe import describe as summarise

    params, names, fit = modelfile.load_model(model_path)
    summary = summarise(params, names, fit)
    if as_json:
        import json

        from ..files import write_stdout

        write_stdout((json.dumps(summary, indent=2, allow_nan=False) + "\n").encode("utf-8"))
        return
    from ..report import print_description

    print_description(summary)


def plot(
    model_path: str,
    data: str | None,
    output: str,
    table: TableOptions,
    session: Session,
    x: str | None = None,
    y: str | None = None,
    convergence: bool = False,
) -> None:
    """Draw the model (and DATA, coloured by component) as an image file."""
    from .. import modelfile
    from ..plot import choose_columns, output_format, render

    output_format(output)
    check_output(output, [model_path] + ([data] if data else []))
    if data is None:
        params, names, fit = modelfile.load_model(model_path)
        values = labels = None
    else:
        if model_path == "-" and data == "-":
            raise GmmError("MODEL and DATA cannot both be stdin ('-')")
        choice("missing", table.missing, MISSING_POLICIES)
        params, names, fit, opened = model_input(model_path, data, table)
        if opened.has_notes:
            opened.note(session.reporter(opened.names), fitting=False)
        values = opened.table.values
    if not convergence:
        choose_columns(output, names, x, y)
    from ..engine.mixture import GaussianMixture

    if values is not None:
        labels = GaussianMixture.from_params(params).predict(values)
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
