"""DATA as the commands see it, whatever the engine: its columns and notes, a fit over its
rows, and its scores. ``open_input`` picks the table in memory (``data.read_table``) or the
files read in blocks or partitions (``scale``); the commands do not branch on the engine."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..errors import GmmError
from ..tableoptions import PREDICT_COLUMNS, PredictColumns, RowCounts, TableOptions
from .session import note_table, numerical_range

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..report import Reporter


class MemoryInput:
    """The whole table, read and checked up front."""

    engine = "memory"

    def __init__(self, table: Any) -> None:
        self.table = table
        self.names: list[str] = table.names
        self.source: str = table.source

    def note(self, report: Reporter, scoring: bool = False, fitting: bool = True) -> None:
        table = self.table
        note_table(report, self.source, table.skipped_columns, table.counts, scoring, fitting)
        if self.header_warning:
            report.warning(self.header_warning)

    @property
    def header_warning(self) -> str | None:
        from ..data import numeric_header

        return numeric_header(self.source, self.table.columns, self.table.header)

    @property
    def has_notes(self) -> bool:
        table = self.table
        counted = table.n_dropped or table.missing_rows
        return bool(table.skipped_columns or counted or self.header_warning)

    def check_rows(self, components: int, asked: str = "") -> None:
        n = self.table.values.shape[0]
        if n < components:
            raise GmmError(
                f"{self.source}: {n} rows are fewer than the {components} components{asked}"
            )

    def fit(self, model: Any, report: Reporter, covariance: str, dtype: str) -> RowCounts:
        """Fit ``model`` (an unfitted GaussianMixture holding the options) to the rows;
        returns what reading did with the rows (dropped, missing cells)."""
        report.start_fit(*self.table.values.shape, model.n_components, covariance, model.n_init)
        with numerical_range(self.source, dtype, model.standardize, self.names):
            model.fit(self.table.values, sample_weight=self.table.weights)
        return self.table.counts


class ScaledInput:
    """Files read in blocks (stream) or partitions on a Dask cluster, on every pass."""

    def __init__(
        self, engine: str, scheduler: str | None, inputs: Any, layout: Any, table: TableOptions
    ) -> None:
        self.engine = engine
        self.scheduler = scheduler
        self.inputs = inputs
        self.layout = layout
        self.options = table
        self.names: list[str] = layout.names
        self.source: str = inputs.display

    def note(self, report: Reporter, scoring: bool = False, fitting: bool = True) -> None:
        """The notes known before a pass (the rows are counted by ``fit``)."""
        note_table(report, self.source, self.layout.skipped)
        if self.header_warning:
            report.warning(self.header_warning)

    @property
    def header_warning(self) -> str | None:
        from ..data import numeric_header

        header = self.options.header and self.inputs.kind == "csv"
        return numeric_header(self.source, self.layout.all_names, header)

    @property
    def has_notes(self) -> bool:
        return bool(self.layout.skipped or self.header_warning)

    def check_rows(self, components: int, asked: str = "") -> None:
        """Not known before the first pass: the engine checks it then."""

    def fit(self, model: Any, report: Reporter, covariance: str, dtype: str) -> RowCounts:
        from .. import scale

        def announce(n_rows: int | None) -> None:
            if n_rows is not None:
                report.start_fit(
                    n_rows, len(self.names), model.n_components, covariance, model.n_init
                )
            else:
                restarts = model.n_init
                report.info(
                    f"fitting {model.n_components} components ({covariance} covariance) to "
                    f"{self.inputs.display}, {len(self.names)} columns read in blocks on every "
                    f"pass, {restarts} restart" + ("s" if restarts != 1 else "")
                )

        counts = scale.fit(
            self.engine,
            model,
            self.inputs,
            self.layout,
            self.options,
            scheduler=self.scheduler,
            threads=model.threads,
            announce=announce,
            warn=report.warning,
        )
        note_table(report, self.source, [], counts)
        return counts

    def score(
        self,
        params: Any,
        what: str,
        output: str,
        shown: PredictColumns = PREDICT_COLUMNS,
        keep_input: bool = False,
        report: Callable[[], Reporter] | None = None,
    ) -> tuple[float, int, float | None] | None:
        """predict ("predict") or per-row log densities ("loglik") written to ``output``, or
        ("total") the sum of the log densities, the number of rows and Σ w (``scale.score``).
        Then the notes on
        the rows (dropped, missing cells) that the memory engine gives before, to
        ``report()`` when there are any."""
        from .. import scale

        result, counts = scale.score(
            self.engine,
            params,
            self.inputs,
            self.layout,
            what=what,
            output=output,
            table=self.options,
            scheduler=self.scheduler,
            shown=shown,
            keep_input=keep_input,
        )
        if report is not None and (counts.dropped or counts.missing_rows):
            note_table(report(), self.source, [], counts, scoring=True)
        return result


def open_input(
    data: str,
    table: TableOptions,
    engine: str = "memory",
    scheduler: str | None = None,
    float32: bool = False,
) -> MemoryInput | ScaledInput:
    """DATA's feature columns, checked before any work or cluster starts (with ``float32``,
    in memory, the float32 range checks too; the other engines make them on their passes)."""
    if engine == "memory":
        from ..data import read_table

        return MemoryInput(read_table(data, float32=float32, **dataclasses.asdict(table)))
    from .. import scale

    inputs, layout = scale.open_input(engine, data, table)
    return ScaledInput(engine, scheduler, inputs, layout, table)


def model_input(
    model_path: str,
    data: str,
    table: TableOptions,
    engine: str = "memory",
    scheduler: str | None = None,
) -> tuple[Any, list[str], dict, MemoryInput | ScaledInput]:
    """Load the model, then open DATA's columns matched to it (by name, or by position with
    --no-header or --columns). Returns the parameters, the model's names and fit record, and
    the input."""
    from .. import modelfile

    if model_path == "-" and data == "-":
        raise GmmError("MODEL and DATA cannot both be stdin ('-')")
    params, names, fit = modelfile.load_model(model_path)
    opened = open_input(data, table.matching(names, params.n_features), engine, scheduler)
    return params, names, fit, opened
