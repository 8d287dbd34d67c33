"""Everything for people, on stderr: the convergence table, summaries, warnings (rich).

rich is imported when something is printed, not with this module: a quiet command never
loads it (start-up time).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .engine.covariance import get_strategy
from .engine.em import Event, IterationEvent, PassEvent, ReseedEvent, RestartEvent
from .engine.mixture import ConstantColumn, IdenticalComponents, NotConverged, Notice

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def _number(value: float, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}"


def console(stderr: bool = True) -> Console:
    """A rich console for stderr (or stdout). Piped into a file or a log it is as wide as its
    tables (never cut to 80 columns) unless COLUMNS says otherwise; NO_COLOR is honoured."""
    width = None
    if not (sys.stderr if stderr else sys.stdout).isatty() and "COLUMNS" not in os.environ:
        width = 10_000
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, width=width)


def notice_text(notice: Notice, names: list[str]) -> str:
    """One line for people about a fit's notice, with the options that would change it."""
    if isinstance(notice, NotConverged) and notice.tol is not None:
        return (
            f"did not converge in {notice.max_iter} iterations (last change "
            f"{notice.last_change:.3g} per row, tol {notice.tol:g}); raise --max-iter or --tol"
        )
    if isinstance(notice, NotConverged):
        where = (
            f"still an estimated {notice.distance:.3g} per row from its limit"
            if math.isfinite(notice.distance)
            else f"still changing by {notice.last_change:.3g} per row"
        )
        return (
            f"did not converge in {notice.max_iter} iterations (the log-likelihood is {where}); "
            "raise --max-iter, or give --tol for scikit-learn's rule"
        )
    if isinstance(notice, IdenticalComponents):
        lead = (
            "every restart ended with identical components"
            if notice.every_restart
            else "the best restart has identical components"
        )
        copies = "; ".join(
            f"component {d.component} is a copy of component {d.same_as}"
            for d in notice.duplicates[:3]
        )
        if len(notice.duplicates) > 3:
            copies += f"; and {len(notice.duplicates) - 3} more"
        return (
            f"{lead}: {copies} (same mean and covariance to 0.1% of each column's spread); "
            "the model has fewer distinct components than asked for (try fewer components or "
            "more --n-init)"
        )
    if isinstance(notice, ConstantColumn):
        return (
            f"column '{names[notice.column]}' is constant: reg_covar ({notice.reg_covar:g}) is "
            "its only variance"
        )
    lead = (
        "every restart ended with a collapsed component"
        if notice.every_restart
        else "the best restart has a collapsed component"
    )
    shown = [c.describe(names) for c in notice.collapses[:3]]
    if len(notice.collapses) > 3:
        shown.append(f"and {len(notice.collapses) - 3} more components")
    return (
        f"{lead}: {'; '.join(shown)}; the model is degenerate (try fewer components, "
        "another --covariance, or a larger --reg-covar)"
    )


class Reporter:
    """Renders engine events and results to stderr; silent when quiet.

    Rows of the convergence table are collected per restart and printed when the restart
    ends; on a terminal a one-line status shows the latest iteration meanwhile.
    """

    def __init__(self, quiet: bool = False, feature_names: list[str] | None = None) -> None:
        self.quiet = quiet
        self.names = feature_names or []
        self._table: Table | None = None
        self._status = None
        self._last_pass_update = 0.0
        self._n_init = 1
        self._held: list[tuple[str, str | None]] | None = None

    @cached_property
    def console(self) -> Console:
        """The console on stderr, made (and rich imported) when first needed."""
        return console()

    # -- messages ------------------------------------------------------------------------
    def info(self, message: str) -> None:
        self._say(message, None)

    def warning(self, message: str) -> None:
        self._say(f"gmm: warning: {message}", "yellow")

    def _say(self, text: str, style: str | None) -> None:
        if self.quiet:
            return
        if self._held is not None:
            self._held.append((text, style))
            return
        self.console.print(text, style=style, markup=False, soft_wrap=True)

    def hold(self) -> None:
        """Keep messages back until ``release``, the first engine event or a summary, so that a
        command which fails before any work is done prints its error line alone."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Print the messages held back, in order, and stop holding."""
        held, self._held = self._held, None
        for text, style in held or []:
            self._say(text, style)

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
        from rich.table import Table

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
        self.release()
        if isinstance(event, RestartEvent) and event.same_start_as is not None:
            self.info(
                f"restart {event.restart + 1} of {self._n_init}: the same start as restart "
                f"{event.same_start_as + 1}, not run again"
            )
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
        elif isinstance(event, PassEvent):
            now = time.monotonic()
            if self._status is not None and now - self._last_pass_update > 0.2:
                self._last_pass_update = now
                share = min(event.rows_done / max(event.rows_total, 1), 1.0)
                bar = "━" * round(20 * share) + "╺" * (20 - round(20 * share))
                self._status.update(
                    f"restart {event.restart + 1}: iteration {event.iteration} {bar} "
                    f"{share:.0%} of {event.rows_total:,} rows"
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
    def fit_summary(self, info: dict, destination: str, noise_weight: float | None = None) -> None:
        """The fit's numbers on stderr; ``noise_weight``: a noise component's weight."""
        if self.quiet:
            return
        self.release()
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
            *(
                []
                if noise_weight is None
                else [
                    (
                        "noise",
                        f"weight {noise_weight:.4g} (predict labels -1 the rows it explains best)",
                    )
                ]
            ),
            ("re-seeds", str(len(info["reseeds"]))),
            ("model", "stdout" if destination == "-" else destination),
        ]
        from rich.table import Table

        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for key, value in lines:
            table.add_row(key, value)
        self.console.print(table)
        for message in info["warnings"]:
            self.warning(message)

    # -- gmm select -------------------------------------------------------------------------
    def grid_progress(self, total: int) -> _GridProgress:
        """A context manager: a progress bar over the grid's cells; yields advance(cell)."""
        return _GridProgress(None if self.quiet else self.console, total, self.quiet)

    def select_table(self, cells: list, chosen: Any, criterion: str) -> None:
        """The grid as mclust's summary shows it: one row per k, one column per covariance
        model, the criterion in each cell (the chosen one highlighted, a degenerate cell
        shown as –), then the top three and the choice. Every number is in ``--table``."""
        if self.quiet:
            return
        self.release()
        name = criterion.upper()
        heading = f"model selection by {name} (lower is better; –: a degenerate cell)"
        self.console.print(heading, markup=False, soft_wrap=True)
        from rich.table import Table

        table = Table(header_style="bold")
        models = list(dict.fromkeys(cell.model_name for cell in cells))
        ks = sorted({cell.n_components for cell in cells})
        by_place = {(cell.n_components, cell.model_name): cell for cell in cells}
        table.add_column("k", justify="right")
        for model in models:
            table.add_column(model, justify="right")
        for k in ks:
            row = []
            for model in models:
                cell = by_place.get((k, model))
                if cell is None or cell.degenerate:
                    row.append("–" if cell is not None else "")
                else:
                    text = f"{cell.score(criterion):.8g}"
                    row.append(f"[bold green]{text}[/]" if cell is chosen else text)
            table.add_row(str(k), *row)
        self.console.print(table)
        rough = sum(not cell.refined for cell in cells)
        if rough:
            self.console.print(
                f"{rough} of {len(cells)} cells lie beyond --refine-margin of the best: fitted "
                "from their first start only, stopped early",
                markup=False,
                soft_wrap=True,
            )
        healthy = sorted(
            (c for c in cells if not c.degenerate),
            key=lambda c: (c.score(criterion), c.n_parameters),
        )
        top = ", ".join(
            f"{c.model_name},{c.n_components} ({c.score(criterion):.8g})" for c in healthy[:3]
        )
        if top:
            self.console.print(f"top three by {name}: {top}", markup=False, soft_wrap=True)
        score = chosen.score(criterion)
        spikes = [c for c in cells if c.degenerate and c.score(criterion) < score]
        line = (
            f"chosen: k = {chosen.n_components}, {chosen.covariance_type} covariance"
            f"{' with a noise component' if chosen.noise else ''} "
            f"({name} {score:.8g})"
        )
        if spikes:
            line += (
                f"; {len(spikes)} degenerate cell(s) scored lower but hold a collapsed "
                "component, so they were not considered"
            )
        self.console.print(line, markup=False, soft_wrap=True)


class _GridProgress:
    """A progress bar over the grid's cells on stderr (nothing when quiet)."""

    def __init__(self, console: Console | None, total: int, quiet: bool) -> None:
        self.progress: Any = None
        # a bar is for a person watching a terminal
        if not quiet and console is not None and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.progress = Progress(
                "fitting the grid",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.task = self.progress.add_task("grid", total=total)

    def __enter__(self) -> Callable[[Any], None]:
        if self.progress is not None:
            self.progress.start()
        return self.advance

    def advance(self, cell: Any) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def add(self, count: int) -> None:
        """``count`` more fits to come (select's second stage)."""
        if self.progress is not None:
            total = self.progress.tasks[0].total or 0
            self.progress.update(self.task, total=total + count)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def print_description(description: dict) -> None:
    """Render ``describe.describe``'s dict on stdout (it is the data asked for): a header,
    one row per component (weight, mean ± std per column, and for 2 columns the correlation
    and the 1σ ellipse), the correlation matrices (full and tied, up to 6 columns), then how
    the model was fitted."""
    from rich.columns import Columns
    from rich.markup import escape
    from rich.table import Table

    max_columns = 6
    out = console(stderr=False)

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.4g}"

    names = [str(name) for name in description["feature_names"]]
    k, d = description["n_components"], description["n_features"]
    cov_type = description["covariance_type"]
    components = description["components"]
    shown = min(d, max_columns)
    units = (
        "standardized fit, shown in original units" if description["standardized"] else "raw units"
    )
    out.print(
        f"{k} component{'s' if k != 1 else ''}, {cov_type} covariance, "
        f"{d} column{'s' if d != 1 else ''} ({units})",
        markup=False,
        soft_wrap=True,
    )

    # -- one row per component ------------------------------------------------------------
    strategy = get_strategy(cov_type)
    with_corr = d == 2 and not strategy.is_diagonal
    table = Table(header_style="bold", padding=(0, 1))
    table.add_column("#", justify="right")
    table.add_column("weight", justify="right")
    for name in names[:shown]:
        table.add_column(escape(name), justify="right", overflow="ellipsis", max_width=14)
    if with_corr:
        table.add_column("corr", justify="right")
    if d == 2:
        table.add_column("1σ axes", justify="right")
        table.add_column("angle", justify="right")
    for comp in components:
        cells = [str(comp["component"]), fmt(comp["weight"])]
        cells += [
            f"{fmt(m)}\n[dim]± {fmt(s)}[/dim]"
            for m, s in zip(comp["mean"][:shown], comp["std"][:shown], strict=True)
        ]
        if with_corr:
            cells.append(f"{comp['correlation'][0][1]:+.2f}")
        if "ellipse" in comp:
            a, b = comp["ellipse"]["semi_axes"]
            cells += [f"{fmt(a)} × {fmt(b)}", f"{comp['ellipse']['angle_degrees']:.1f}°"]
        table.add_row(*cells)
    caption = "each cell: mean, ± standard deviation"
    if d > shown:
        more = d - shown
        caption += f"; first {shown} columns shown, {more} more not shown"
    if d == 2:
        caption += f"; angle of the major axis from the '{names[0]}' axis"
    out.print(table)
    out.print(caption, style="dim", markup=False, soft_wrap=True)
    noise = description.get("noise")
    if noise is not None:
        volume = fmt(noise["volume"]) if noise["volume"] is not None else "–"
        source = "given" if noise["volume_given"] else "the data's bounding box"
        out.print(
            f"noise component: weight {fmt(noise['weight'])}, uniform over a box of volume "
            f"{volume} (log {noise['log_volume']:.6g}; {source}); predict labels its rows -1",
            markup=False,
            soft_wrap=True,
        )

    # -- correlation matrices (lower triangle) --------------------------------------------
    if not strategy.is_diagonal and 2 < d <= max_columns:

        def matrix(title: str, corr: list) -> Table:
            grid = Table(title=title, title_justify="left", box=None, padding=(0, 1))
            grid.add_column("", overflow="ellipsis", max_width=16, no_wrap=True)
            for j in range(d - 1):
                grid.add_column(str(j + 1), justify="right")
            for i in range(1, d):
                row = [f"{corr[i][j]:+.2f}" if j < i else "" for j in range(d - 1)]
                grid.add_row(escape(f"{i + 1} {names[i]}"), *row)
            return grid

        if strategy.shared:
            title = f"correlation ({cov_type}: all components)"
            matrices = [matrix(title, components[0]["correlation"])]
        else:
            matrices = [
                matrix(f"correlation, component {c['component']}", c["correlation"])
                for c in components
            ]
        out.print(Columns(matrices, padding=(1, 3)))

    # -- how it was fitted ----------------------------------------------------------------
    fit = description.get("fit") or {}
    if not any(value not in (None, []) for value in fit.values()):
        out.print("no record of how this model was fitted", style="dim", markup=False)
        return
    lines = []
    if fit.get("n_samples") is not None:
        data = f"{fit['n_samples']} rows"
        if fit.get("weight_total") is not None:
            data += f" weighing {fit['weight_total']:.10g} in all"
        if fit.get("n_dropped"):
            data += f" ({fit['n_dropped']} dropped for missing values)"
        if fit.get("n_missing_rows"):
            data += (
                f" ({fit['n_missing_rows']} with {fit.get('n_missing_cells')} missing cells, "
                "fitted by EM)"
            )
        lines.append(("data", data))
    if fit.get("n_iter") is not None or fit.get("converged") is not None:
        state = {True: "converged", False: "NOT converged", None: "?"}[fit.get("converged")]
        iterations = fit.get("n_iter")
        lines.append(
            ("result", state + ("" if iterations is None else f" after {iterations} iterations"))
        )
    if fit.get("log_likelihood") is not None:
        text = f"{fit['log_likelihood']:.10g}"
        if fit.get("mean_log_likelihood") is not None:
            text += f" (mean {fit['mean_log_likelihood']:.6g} per row)"
        lines.append(("log-likelihood", text))
    for key, label in [("bic", "BIC"), ("aic", "AIC")]:
        if fit.get(key) is not None:
            lines.append((label, f"{fit[key]:.10g}"))
    if fit.get("n_parameters") is not None:
        lines.append(("parameters", str(fit["n_parameters"])))
    start = []
    if fit.get("init") is not None:
        start.append(str(fit["init"]))
    if fit.get("n_init") is not None:
        start.append(f"{fit['n_init']} restart{'s' if fit['n_init'] != 1 else ''}")
    if fit.get("seed") is not None:
        start.append(f"seed {fit['seed']}")
    if start:
        lines.append(("start", ", ".join(start)))
    if fit.get("n_reseeds") is not None:
        lines.append(("re-seeds", str(fit["n_reseeds"])))
    if fit.get("tool_version") is not None:
        lines.append(("fitted with", f"gmm {fit['tool_version']}"))
    summary = Table(show_header=False, box=None, padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")
    for key, value in lines:
        summary.add_row(key, escape(value))
    for text in fit.get("collapsed") or []:
        summary.add_row("collapsed", escape(str(text)), style="yellow")
    out.print(summary)
    for message in fit.get("warnings") or []:
        out.print(f"gmm: warning: {message}", style="yellow", markup=False, soft_wrap=True)
