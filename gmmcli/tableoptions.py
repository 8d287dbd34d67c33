"""How a table is read (the options every command that reads data shares) and which
columns predict writes: light, so the command line builds them before numpy or pandas are
imported; ``data`` reads and writes with them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gmmcli.errors import GmmError

MISSING_POLICIES = ("em", "error", "drop")


@dataclass(frozen=True)
class TableOptions:
    """How to read a table: the table options every command that reads data shares.

    ``columns`` selects names or 1-based positions; ``required`` selects exactly these names
    (a model's features); with neither, every numeric column is used and columns with no
    numeric cell are skipped. ``n_required`` checks the number of selected columns.
    ``missing`` is "em" (a missing cell stays NaN, for the engine to fit by EM and score by
    the row's observed cells; a non-finite value, or a row with no value, is an error),
    "error" (any missing or non-finite value is) or "drop" (rows with one are dropped).

    One rule for every engine: fields are split at the delimiter (csv quoting), spaces around
    a header name are not part of it, a cell is a number in decimal notation (``0x10`` is
    not) with ``decimal`` as its decimal mark, and an empty cell or an NA word (``NA``,
    ``nan``, ``None``, ``null``…) is missing. The table starts after ``skip_lines`` lines
    and the comment lines that follow them; a line whose first character other than a space
    is ``comment`` is not data, wherever it is. Messages count every line of the file.
    """

    delimiter: str = ","
    header: bool = True
    columns: list[str] | None = None
    missing: str = "em"
    required: list[str] | None = None
    n_required: int | None = None
    keep_text: bool = False  # also keep every cell as the text it is (predict --keep-input)
    encoding: str = "utf-8"  # of the text (other than UTF-8: read once and converted)
    decimal: str = "."  # the decimal mark of numbers: "." or "," (European exports)
    skip_lines: int = 0  # lines before the table (a title, notes)
    comment: str | None = None  # lines starting with it are not data ("#")
    weights: str | None = None  # the column of row weights (a name or 1-based position)

    def check(self, name: str) -> None:
        """Refuse a delimiter, decimal mark, comment character or missing-value policy that
        cannot be used."""
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise GmmError(
                f"{name}: the delimiter must be one character (not a quote or newline),"
                f" got {self.delimiter!r}"
            )
        if self.decimal not in (".", ","):
            raise GmmError(f"--decimal {self.decimal!r}: the decimal mark is '.' or ','")
        if self.decimal == self.delimiter:
            raise GmmError(
                f"--decimal {self.decimal!r} is also the delimiter: name the delimiter of a "
                "table with decimal commas (-d ';' is usual)"
            )
        if self.comment is not None and (
            len(self.comment) != 1 or self.comment in f'"\r\n {self.delimiter}'
        ):
            raise GmmError(
                f"--comment {self.comment!r}: one character, not a quote, space, newline or "
                "the delimiter (e.g. '#')"
            )
        if self.skip_lines < 0:
            raise GmmError(f"--skip-lines {self.skip_lines}: a count of lines, 0 or more")
        if self.missing not in MISSING_POLICIES:
            raise GmmError(
                f"{name}: missing-value policy must be 'em', 'error' or 'drop', got "
                f"{self.missing!r}"
            )

    def check_parquet(self, name: str) -> None:
        """Refuse the options that apply to CSV text only, for Parquet input."""
        if self.delimiter != "," or not self.header:
            raise GmmError(f"{name}: -d and --no-header apply to CSV, not Parquet")
        if self.weights is not None:
            raise GmmError(f"{name}: --weights reads a column of CSV input, not of Parquet")

    @classmethod
    def from_words(
        cls,
        columns: str | None,
        delimiter: str,
        tabs: bool,
        no_header: bool,
        missing: str,
        encoding: str = "utf-8",
        decimal: str = ".",
        skip_lines: int = 0,
        comment: str | None = None,
        weights: str | None = None,
    ) -> TableOptions:
        """The options as a user types them: ``columns`` comma-separated, ``delimiter`` may be
        '\\t' (as typed in a shell) or the word tab, and ``tabs`` says the same."""
        names = None if columns is None else [p.strip() for p in columns.split(",")]
        if names is not None and not all(names):
            raise GmmError(f"--columns {columns!r}: empty column name")
        tab = tabs or delimiter in ("\\t", "tab", "TAB")
        delimiter = "\t" if tab else delimiter
        return cls(
            delimiter, not no_header, names, missing, encoding=encoding, decimal=decimal,
            skip_lines=skip_lines, comment=comment, weights=weights,
        )  # fmt: skip

    def reading(self, names: list[str], keep_text: bool = False) -> TableOptions:
        """These options reading exactly the columns ``names`` (chosen once, on the head of
        the input, by ``dataset.layout``): how every block and partition is read."""
        return dataclasses.replace(
            self, columns=None, required=list(names), n_required=None, keep_text=keep_text
        )

    def matching(self, names: list[str], n_features: int) -> TableOptions:
        """These options for DATA scored by a model with these feature names: columns
        matched by name, or by position (``n_features`` of them) with --no-header or
        --columns."""
        by_name = self.header and self.columns is None
        return dataclasses.replace(
            self,
            required=[n.strip() for n in names] if by_name else None,  # as headers are read
            n_required=None if by_name else n_features,
        )


@dataclass(frozen=True)
class RowCounts:
    """What reading a table did with its rows: how many were dropped (--missing drop), and
    how many were kept with missing cells, and how many cells (--missing em)."""

    dropped: int = 0
    missing_rows: int = 0
    missing_cells: int = 0

    def __add__(self, other: RowCounts) -> RowCounts:
        return RowCounts(
            self.dropped + other.dropped,
            self.missing_rows + other.missing_rows,
            self.missing_cells + other.missing_cells,
        )


@dataclass(frozen=True)
class PredictColumns:
    """Which of predict's columns are written besides ``label``: the membership
    probabilities, and the uncertainty (1 − the largest of them, as mclust reports it)."""

    proba: bool = True
    uncertainty: bool = False


PREDICT_COLUMNS = PredictColumns()  # label and probabilities, predict's default
