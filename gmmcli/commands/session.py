"""What every command shares: its reporters (held back until the work starts), the checks on
its outputs, and the notes about the table it read."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import GmmError
from ..files import STDIO, display_name
from ..tableoptions import RowCounts

NOTHING_COUNTED = RowCounts()

if TYPE_CHECKING:
    from ..report import Reporter


@dataclass
class Session:
    """One run of a command: ``quiet`` silences every table, progress bar and warning.

    Notes (rows dropped, columns ignored) wait in the reporters until the engine's first
    event, a summary, or ``release`` when the command has succeeded, so that a command which
    fails before its work starts prints its error line alone.
    """

    quiet: bool = False
    held: list[Reporter] = field(default_factory=list)

    def reporter(self, names: list[str]) -> Reporter:
        """A reporter on stderr for a table with these column names, holding its messages."""
        from ..report import Reporter

        report = Reporter(quiet=self.quiet, feature_names=names)
        report.hold()
        self.held.append(report)
        return report

    def release(self) -> None:
        """The command succeeded: say what was held back."""
        for report in self.held:
            report.release()
        self.held.clear()


def note_table(
    report: Reporter,
    source: str,
    skipped: list[str],
    counts: RowCounts = NOTHING_COUNTED,
    scoring: bool = False,
    fitting: bool = True,
) -> None:
    """The notes about a table that was read: non-numeric columns left out, rows dropped
    (when ``scoring``, they stay in the output, unscored), rows with missing cells (fitted
    by EM; or, when ``scoring`` or not ``fitting``, scored by their observed cells)."""
    dropped = counts.dropped
    if counts.missing_rows:
        rows, cells = counts.missing_rows, counts.missing_cells
        how = (
            "fitted by EM, as missing at random (--missing drop leaves such rows out)"
            if fitting and not scoring
            else "scored by the density of their observed cells"
        )
        report.info(f"{source}: {rows} row(s) with {cells} missing cell(s) {how}")
    if skipped:
        report.info(
            f"{source}: ignoring non-numeric column(s) {', '.join(skipped)} "
            "(choose columns with --columns)"
        )
    if dropped and scoring:
        report.warning(
            f"{source}: {dropped} row(s) with missing or non-finite values were not scored "
            "(empty in the output)"
        )
    elif dropped:
        report.warning(f"{source}: dropped {dropped} row(s) with missing or non-finite values")


def same_output(first: str, second: str) -> bool:
    """Whether two outputs are the same place (both stdout, or one file)."""
    if first == STDIO or second == STDIO:
        return first == second
    if os.path.exists(first) and os.path.exists(second):
        return os.path.samefile(first, second)
    return os.path.realpath(first) == os.path.realpath(second)


def check_output(output: str, inputs: list[str]) -> None:
    """Before any work: never overwrite an input of the same command, and the output must
    be writable."""
    from ..files import check_output_path

    check_not_input(output, inputs)
    check_output_path(output)


def check_not_input(output: str, inputs: list[str]) -> None:
    """Never overwrite an input file of the same command."""
    if output == STDIO or not os.path.exists(output):
        return
    for path in inputs:
        if path != STDIO and os.path.exists(path) and os.path.samefile(output, path):
            raise GmmError(f"{output}: refusing to overwrite an input of this command")


@contextlib.contextmanager
def numerical_range(
    source: str, dtype: str, standardize: bool, names: list[str] | None = None
) -> Iterator[None]:
    """The engine's NumericalRangeError (values beyond what the working precision holds) as a
    user error about the data (and the column, where the engine names one)."""
    import numpy as np

    from ..engine.params import NumericalRangeError

    try:
        with np.errstate(all="ignore"):  # numbers out of range end as the error below, or as
            yield  # the fitted model's range check: never as a Python warning on stderr
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
def scoring_range(source: str, model: str) -> Iterator[None]:
    """A row that the model cannot score in float64 (NumericalRangeError) as a user error."""
    from ..engine.params import NumericalRangeError

    try:
        yield
    except NumericalRangeError as error:
        raise GmmError(f"{source}: {error} (model {display_name(model)})") from None


def tool() -> dict:
    """Which program wrote a model file."""
    from .. import __version__

    return {"name": "gmmcli", "version": __version__}
