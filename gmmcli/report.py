"""Everything for people, on stderr: the convergence table, summaries, warnings (rich)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from .engine.em import Event, IterationEvent, ReseedEvent, RestartEvent


def _number(value: float, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}"


class Reporter:
    """Renders engine events and results to stderr; silent when quiet.

    Rows of the convergence table are collected per restart and printed when the restart
    ends; on a terminal a one-line status shows the latest iteration meanwhile.
    """

    def __init__(self, quiet: bool = False, feature_names: list[str] | None = None) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)
        self.names = feature_names or []
        self._table: Table | None = None
        self._status = None
        self._n_init = 1

    # -- messages ------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, soft_wrap=True)

    def warning(self, message: str) -> None:
        if not self.quiet:
            self.console.print(
                f"gmm: warning: {message}", style="yellow", markup=False, soft_wrap=True
            )

    # -- the convergence table ------------------------------------------------------------
    def start_fit(
        self, n_rows: int, n_features: int, n_components: int, covariance: str, n_init: int
    ) -> None:
        self._n_init = n_init
        self.info(
            f"fitting {n_components} components ({covariance} covariance) to {n_rows} rows × "
            f"{n_features} columns, {n_init} restart{'s' if n_init != 1 else ''}"
        )

    def _new_table(self, restart: int) -> Table:
        title = f"restart {restart + 1} of {self._n_init}" if self._n_init > 1 else None
        table = Table(title=title, title_justify="left", header_style="bold")
        for name, justify in [
            ("iter", "right"),
            ("log-likelihood / row", "right"),
            ("change", "right"),
            ("time ms", "right"),
            ("event", "left"),
        ]:
            table.add_column(name, justify=justify)
        return table

    def on_event(self, event: Event) -> None:
        """The callback given to the engine."""
        if self.quiet:
            return
        if self._table is None:
            restart = getattr(event, "restart", 0)
            self._table = self._new_table(restart)
            if self.console.is_terminal:
                self._status = self.console.status(f"restart {restart + 1}: starting")
                self._status.start()
        if isinstance(event, IterationEvent):
            self._table.add_row(
                str(event.iteration),
                _number(event.mean_log_likelihood, 10),
                _number(event.change, 3),
                f"{event.seconds * 1000:.1f}",
                "",
            )
            if self._status is not None:
                self._status.update(
                    f"restart {event.restart + 1}: iteration {event.iteration}, "
                    f"log-likelihood/row {event.mean_log_likelihood:.6g}"
                )
        elif isinstance(event, ReseedEvent):
            text = event.collapse.describe(self.names) if self.names else str(event.collapse)
            self._table.add_row("", "", "", "", f"re-seeded: {text}", style="yellow")
        elif isinstance(event, RestartEvent):
            if self._status is not None:
                self._status.stop()
                self._status = None
            state = "converged" if event.converged else "not converged"
            if event.collapsed:
                state += ", collapsed"
            self._table.caption = f"{state} after {event.n_iter} iterations"
            self.console.print(self._table)
            self._table = None

    # -- summaries ------------------------------------------------------------------------
    def fit_summary(self, info: dict, destination: str) -> None:
        if self.quiet:
            return
        restart = info["best_restart"] + 1
        lines = [
            (
                "result",
                ("converged" if info["converged"] else "NOT converged")
                + f" after {info['n_iter']} iterations"
                + (
                    f" (best of {len(info['restarts'])} restarts: #{restart})"
                    if len(info["restarts"]) > 1
                    else ""
                ),
            ),
            (
                "log-likelihood",
                f"{info['log_likelihood']:.10g} (mean {info['mean_log_likelihood']:.6g} per row)",
            ),
            ("BIC", f"{info['bic']:.10g}"),
            ("AIC", f"{info['aic']:.10g}"),
            ("parameters", str(info["n_parameters"])),
            ("re-seeds", str(len(info["reseeds"]))),
            ("model", "stdout" if destination == "-" else destination),
        ]
        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for key, value in lines:
            table.add_row(key, value)
        self.console.print(table)
        for message in info["warnings"]:
            self.warning(message)
