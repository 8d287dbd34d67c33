"""Tests for gmmcli.data: reading tables (every malformed input) and writing CSV."""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gmmcli import data, files
from gmmcli.data import Table, read_table, write_csv
from gmmcli.errors import GmmError
from gmmcli.tableoptions import TableOptions


def write(tmp_path: Path, content: str | bytes, name: str = "data.csv") -> str:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return str(path)


def error(source: str, **options: object) -> str:
    """The message of the GmmError read_table raises; checks it is one line naming the file."""
    with pytest.raises(GmmError) as caught:
        read_table(source, **options)
    message = caught.value.message
    assert caught.value.status == 2
    assert "\n" not in message
    shown = "<stdin>" if source == "-" else source
    assert message.startswith(f"{shown}: "), message
    return message


def set_stdin(monkeypatch: pytest.MonkeyPatch, content: bytes) -> None:
    class FakeStdin:
        buffer = io.BytesIO(content)

    monkeypatch.setattr(sys, "stdin", FakeStdin())


# --- reading well-formed tables -------------------------------------------------------------


def test_header_values_names_and_frame(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b\n1,2.5\n-3,4e2\n")
    table = read_table(path)
    assert isinstance(table, Table)
    np.testing.assert_array_equal(table.values, [[1.0, 2.5], [-3.0, 400.0]])
    assert table.values.dtype == np.float64
    assert table.values.flags.c_contiguous
    assert table.names == ["a", "b"]
    assert table.source == path
    assert table.n_dropped == 0
    assert table.skipped_columns == []
    assert table.columns == ["a", "b"]
    assert table.frame is None  # a small plain table is read without pandas
    np.testing.assert_array_equal(table.lines, [2, 3])


def test_plain_reader_reads_what_the_exact_reader_reads(tmp_path: Path) -> None:
    """A small plain table skips pandas (``data._read_plain``); choosing its columns sends
    the same file through pandas' reader: the same values to the bit, names and lines."""
    text = "a,b,c\n+1,2.,.5\n-3e2,0.1,7\r\n1e-310,-0,123456789012345678\n0.30000000000000004,9,8"
    path = write(tmp_path, text)
    plain = read_table(path)
    exact = read_table(path, columns=["a", "b", "c"])
    assert plain.frame is None and exact.frame is not None
    assert plain.values.tobytes() == exact.values.tobytes()
    assert plain.names == exact.names == ["a", "b", "c"]
    assert plain.columns == exact.columns
    np.testing.assert_array_equal(plain.lines, exact.lines)
    np.testing.assert_array_equal(plain.lines, [2, 3, 4, 5])
    np.testing.assert_array_equal(plain.values[:, 0], [1.0, -300.0, 1e-310, 0.30000000000000004])


@pytest.mark.parametrize("delimiter", [",", ";", "e"])
def test_plain_reader_gives_way_on_a_late_bad_line(tmp_path: Path, delimiter: str) -> None:
    """Long digit strings for many lines, then a bad cell: the plain reader's pattern matches
    each number one way only (an ambiguous one backtracked exponentially here: this test
    then never ended), and a delimiter that can be part of a number is not for it at all;
    the exact reader names the line."""
    rows = [delimiter.join(["123456789012345678901234"] * 2) for _ in range(300)]
    path = write(
        tmp_path, "\n".join(["a;b".replace(";", delimiter), *rows, "1;x".replace(";", delimiter)])
    )
    message = error(path, delimiter=delimiter)
    assert "line 302" in message


def test_no_header_names_are_positions(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "1,2,3\n4,5,6\n"), header=False)
    assert table.names == ["1", "2", "3"]
    np.testing.assert_array_equal(table.values, [[1, 2, 3], [4, 5, 6]])
    assert table.columns == ["1", "2", "3"]


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, b"\xef\xbb\xbfx,y\n1,2\n"))
    assert table.names == ["x", "y"]


def test_windows_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\r\n1,2\r\n3,4\r\n")
    table = read_table(path)
    assert table.names == ["x", "y"]
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])
    assert "line 3, column 'y'" in error(write(tmp_path, "x,y\r\n1,2\r\n3,oops\r\n", "b.csv"))


def test_quoted_fields(tmp_path: Path) -> None:
    path = write(tmp_path, 'label,"x 1",y\n"a,b","1.5",2\n"c",3,4\n')
    table = read_table(path)
    assert table.names == ["x 1", "y"]
    assert table.skipped_columns == ["label"]
    np.testing.assert_array_equal(table.values, [[1.5, 2], [3, 4]])
    assert list(table.frame["label"]) == ["a,b", "c"]


def test_old_mac_line_endings(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "x,y\r1,2\r3,4\r"))
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])


def test_spaces_after_delimiter(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "x, y\n1, 2\n 3 , 4\n"))
    assert table.names == ["x", "y"]
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])


@pytest.mark.parametrize("delimiter", [";", "\t", "|", " "])
def test_other_delimiters(tmp_path: Path, delimiter: str) -> None:
    text = f"x{delimiter}y\n1{delimiter}2\n"
    table = read_table(write(tmp_path, text), delimiter=delimiter)
    assert table.names == ["x", "y"]
    np.testing.assert_array_equal(table.values, [[1, 2]])


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    set_stdin(monkeypatch, b"a,b\n1,2\n")
    table = read_table("-")
    assert table.source == "<stdin>"
    np.testing.assert_array_equal(table.values, [[1, 2]])


def test_stdin_errors_use_stdin_name(monkeypatch: pytest.MonkeyPatch) -> None:
    set_stdin(monkeypatch, b"a,b\n1,2\n3,x\n")
    assert error("-") == "<stdin>: line 3, column 'b' (2): cannot read 'x' as a number"


def test_integers_and_large_values_become_float64(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "a,b\n1,99999999999999999999999\n2,3\n"))
    assert table.values.dtype == np.float64
    assert table.values[0, 1] == pytest.approx(1e23)


# --- selecting columns --------------------------------------------------------------------


def test_columns_by_name_in_given_order(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "a,b,c\n1,2,3\n"), columns=["c", "a"])
    assert table.names == ["c", "a"]
    np.testing.assert_array_equal(table.values, [[3, 1]])
    assert list(table.frame.columns) == ["a", "b", "c"]


def test_columns_by_position(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "a,b,c\n1,2,3\n"), columns=["3", "1"])
    assert table.names == ["c", "a"]
    np.testing.assert_array_equal(table.values, [[3, 1]])


def test_columns_by_position_without_header(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "1,2,3\n4,5,6\n"), header=False, columns=["2"])
    assert table.names == ["2"]
    np.testing.assert_array_equal(table.values, [[2], [5]])


def test_column_name_that_looks_like_a_number_wins(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "x,1,y\n10,20,30\n"), columns=["1"])
    assert table.names == ["1"]
    np.testing.assert_array_equal(table.values, [[20]])


def test_unknown_column(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,c\n1,2,3\n")
    assert error(path, columns=["foo"]) == f"{path}: no column 'foo' (columns: a, b, c)"


@pytest.mark.parametrize("token", ["0", "4", "-1"])
def test_position_out_of_range(tmp_path: Path, token: str) -> None:
    path = write(tmp_path, "a,b,c\n1,2,3\n")
    assert error(path, columns=[token]) == f"{path}: no column '{token}' (columns: a, b, c)"


def test_column_selected_twice(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,c\n1,2,3\n")
    assert "column 'a' is selected twice" in error(path, columns=["a", "1"])


def test_long_column_lists_are_shortened(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(30)]
    path = write(tmp_path, ",".join(names) + "\n" + ",".join("1" * 30) + "\n")
    message = error(path, columns=["nope"])
    assert "c9, …" in message
    assert "(30 in all)" in message
    assert "c29" not in message


def test_wrong_delimiter_hint_for_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "x;y\n1;2\n")
    message = error(path, columns=["x"])
    assert message.startswith(f"{path}: no column 'x'")
    assert "the file has 1 column 'x;y': wrong delimiter? use -d ';'" in message


def test_selected_column_must_be_numeric(tmp_path: Path) -> None:
    path = write(tmp_path, "id,x\na001,1\na002,2\n")
    message = error(path, columns=["id", "x"])
    assert message == f"{path}: line 2, column 'id' (1): cannot read 'a001' as a number"


# --- required columns (predict / loglik) ----------------------------------------------------


def test_required_columns_in_another_order(tmp_path: Path) -> None:
    path = write(tmp_path, "id,b,a,extra\nr1,2,1,9\nr2,4,3,9\n")
    table = read_table(path, required=["a", "b"])
    assert table.names == ["a", "b"]
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])
    assert list(table.frame.columns) == ["id", "b", "a", "extra"]
    assert table.skipped_columns == []


def test_required_column_missing(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b\n1,2\n")
    message = error(path, required=["a", "x2"])
    assert message == f"{path}: column 'x2' is missing (the file has columns: a, b)"


def test_required_column_missing_with_wrong_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path, "x1\tx2\n1\t2\n")
    message = error(path, required=["x1", "x2"])
    assert message.startswith(f"{path}: column 'x1' is missing")
    assert "the file has 1 column 'x1\\tx2': wrong delimiter? use -d)" in message


def test_n_required_matches(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "1,2,3\n"), header=False, n_required=3)
    assert table.values.shape == (1, 3)


def test_n_required_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path, "1,2\n3,4\n")
    message = error(path, header=False, n_required=3)
    assert message == f"{path}: the model needs 3 columns but the file has 2"


def test_n_required_mismatch_with_one_column_hints_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path, "1;2;3\n4;5;6\n")
    message = error(path, header=False, n_required=3, columns=["1"])
    assert "the model needs 3 columns but 1 are selected" in message
    assert "the file has 1 column '1;2;3': wrong delimiter? use -d ';'" in message


def test_n_required_mismatch_mentions_skipped_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "a1,1\na2,2\n")
    message = error(path, header=False, n_required=2)
    assert "the model needs 2 columns but the file has 1 numeric (skipped: 1)" in message


# --- non-numeric columns --------------------------------------------------------------------


def test_id_column_is_skipped_automatically(tmp_path: Path) -> None:
    path = write(tmp_path, "id,x,y\na001,1,2\na002,3,4\n")
    table = read_table(path)
    assert table.names == ["x", "y"]
    assert table.skipped_columns == ["id"]
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])
    assert list(table.frame["id"]) == ["a001", "a002"]


def test_boolean_column_is_skipped(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "flag,x\nTrue,1\nFalse,2\n"))
    assert table.skipped_columns == ["flag"]
    assert table.names == ["x"]


def test_mostly_numeric_column_with_a_bad_cell(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i * 2}\n" for i in range(5))
    path = write(tmp_path, "x1,x2\n" + rows + "5,abc\n6,7\n")
    assert error(path) == f"{path}: line 7, column 'x2' (2): cannot read 'abc' as a number"


def test_cell_with_a_newline_keeps_the_message_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'x,y\n1,2\n3,"a\nb"\n')
    assert error(path) == f"{path}: line 3, column 'y' (2): cannot read 'a\\nb' as a number"


def test_first_bad_cell_in_reading_order(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b\n1,2\n3,bad1\nbad2,4\n")
    assert "line 3, column 'b' (2): cannot read 'bad1'" in error(path)


def test_no_numeric_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "name,city\nann,oslo\nbob,rome\n")
    assert error(path) == f"{path}: no numeric columns (skipped: name, city)"


def test_no_numeric_columns_wrong_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path, "x;y\n1;2\n")
    message = error(path)
    assert message.startswith(f"{path}: no numeric columns")
    assert "wrong delimiter? use -d ';'" in message


def test_header_line_read_as_data_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,2\n3,4\n")
    message = error(path, header=False)
    assert message == (
        f"{path}: line 1, column 1: cannot read 'x' as a number"
        " (is line 1 a header? drop --no-header)"
    )


def test_single_column_of_text_hints_delimiter_not_header(tmp_path: Path) -> None:
    path = write(tmp_path, "1;2\n3;4\n")
    message = error(path, header=False, columns=["1"])
    assert message == (
        f"{path}: line 1, column 1: cannot read '1;2' as a number"
        " (the file has 1 column '1;2': wrong delimiter? use -d ';')"
    )


def test_no_header_hint_only_on_line_1(tmp_path: Path) -> None:
    path = write(tmp_path, "1,2\n3,x\n")
    message = error(path, header=False)
    assert message == f"{path}: line 2, column 2: cannot read 'x' as a number"


# --- missing and non-finite values ----------------------------------------------------------


@pytest.mark.parametrize("cell", ["", "NA", "nan", "NaN", "null", "N/A"])
def test_missing_value_is_an_error(tmp_path: Path, cell: str) -> None:
    path = write(tmp_path, f"x,y\n1,2\n3,4\n5,{cell}\n")
    message = error(path, missing="error")
    assert message == (
        f"{path}: line 4, column 'y' (2): missing value (use --missing drop to skip such rows)"
    )


@pytest.mark.parametrize("cell", ["", "NA", "nan", "NaN", "null", "N/A"])
def test_missing_value_stays_nan_by_default(tmp_path: Path, cell: str) -> None:
    """--missing em (the default): the cell is NaN, for the engine; rows and cells counted."""
    path = write(tmp_path, f"x,y\n1,2\n3,4\n5,{cell}\n{cell},7\n")
    table = read_table(path)
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4], [5, np.nan], [np.nan, 7]])
    assert (table.n_dropped, table.missing_rows, table.missing_cells) == (0, 2, 2)
    assert table.kept is not None and table.kept.all()


def test_a_row_with_no_value_is_an_error_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, "id,x,y\nr1,1,2\nr2,,NA\nr3,3,4\n")
    assert error(path) == (
        f"{path}: line 3: no value in any selected column (use --missing drop to skip such rows)"
    )
    single = error(path, columns=["y"])
    assert single.endswith(
        "line 3: no value in the selected column (use --missing drop to skip such rows)"
    )
    assert read_table(path, missing="drop").n_dropped == 1


def test_a_column_with_no_value_is_an_error_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,\n2,NA\n3,\n")
    assert error(path) == f"{path}: column 'y' has no value (every cell is missing)"


def test_infinity_is_still_an_error_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,2\n3,\n-inf,4\n")
    assert error(path) == (
        f"{path}: line 4, column 'x' (1): value is not finite ('-inf') (use --missing drop to "
        "skip such rows)"
    )


@pytest.mark.parametrize(("cell", "shown"), [("inf", "inf"), ("-inf", "-inf"), ("Infinity", "inf")])
def test_infinity_is_an_error(tmp_path: Path, cell: str, shown: str) -> None:
    path = write(tmp_path, f"x,y\n1,2\n3,{cell}\n")
    message = error(path)
    assert message.startswith(f"{path}: line 3, column 'y' (2): value is not finite ('{shown}')")


def test_infinity_in_a_text_typed_column_shows_the_cell(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,2\n3,+Infinity\n5, 7\n")
    assert "line 3, column 'y' (2): value is not finite" in error(path)


def test_drop_rows_with_missing_or_infinite_values(tmp_path: Path) -> None:
    path = write(tmp_path, "id,x,y\nr1,1,2\nr2,NA,4\nr3,5,inf\nr4,7,8\nr5,,-inf\n")
    table = read_table(path, missing="drop")
    assert table.n_dropped == 3
    np.testing.assert_array_equal(table.values, [[1, 2], [7, 8]])
    assert list(table.frame["id"]) == ["r1", "r4"]
    assert list(table.frame.index) == [0, 1]


def test_drop_only_looks_at_selected_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,\n2,3\n")
    table = read_table(path, columns=["x"], missing="drop")
    assert table.n_dropped == 0
    np.testing.assert_array_equal(table.values, [[1], [2]])


def test_drop_does_not_excuse_a_bad_cell(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,2\n3,abc\n")
    assert "line 3, column 'y' (2): cannot read 'abc'" in error(path, missing="drop")


def test_nothing_left_after_dropping(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,NA\ninf,2\n")
    message = error(path, missing="drop")
    assert message == f"{path}: no rows left after dropping 2 with missing values"


def test_unknown_missing_policy(tmp_path: Path) -> None:
    path = write(tmp_path, "x\n1\n")
    assert "'em', 'error' or 'drop', got 'ignore'" in error(path, missing="ignore")


# --- blank lines and line numbers -----------------------------------------------------------


def test_blank_lines_are_dropped_silently(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n\n1,2\n\n\n3,4\n   \n\n")
    table = read_table(path)
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])
    assert table.n_dropped == 0
    assert list(table.frame.index) == [0, 1]


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,2\n\n\n3,4\n5,x\n")
    assert error(path).startswith(f"{path}: line 6, column 'y' (2):")
    path = write(tmp_path, "1,2\n\n3,NA\n", "nohead.csv")
    message = error(path, header=False, missing="error")
    assert message.startswith(f"{path}: line 3, column 2: missing value")


def test_line_numbers_with_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\r\n1,2\r\n\r\n3,inf\r\n")
    assert error(path).startswith(f"{path}: line 4, column 'y' (2): value is not finite")


# --- malformed files ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.csv")
    assert error(path) == f"{path}: no such file"


def test_directory(tmp_path: Path) -> None:
    assert "is a directory" in error(str(tmp_path))


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "x\n1\n")

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files, "open", denied, raising=False)
    assert error(path) == f"{path}: cannot read: permission denied"


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\n", b"  \r\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path, content)
    assert error(path) == f"{path}: the file is empty"


def test_empty_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    set_stdin(monkeypatch, b"")
    assert error("-") == "<stdin>: the file is empty"


@pytest.mark.parametrize("content", ["x,y\n", "x,y", "x,y\n\n\n"])
def test_header_only(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, content)
    assert error(path) == f"{path}: no data rows (only a header)"


def test_only_empty_fields_without_header(tmp_path: Path) -> None:
    """A line of empty cells is a row of missing values, not a blank line."""
    path = write(tmp_path, ",\n,\n")
    assert error(path, header=False, missing="error") == (
        f"{path}: line 1, column 1: missing value (use --missing drop to skip such rows)"
    )
    assert error(path, header=False) == (
        f"{path}: line 1: no value in any selected column (use --missing drop to skip such rows)"
    )
    assert error(path, header=False, missing="drop") == (
        f"{path}: no rows left after dropping 2 with missing values"
    )


def test_a_row_of_missing_cells_is_not_a_blank_line(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,2\n\nNA,NA\n3,4\n")
    assert error(path, missing="error") == (
        f"{path}: line 4, column 'x' (1): missing value (use --missing drop to skip such rows)"
    )
    assert error(path) == (
        f"{path}: line 4: no value in any selected column (use --missing drop to skip such rows)"
    )
    table = read_table(path, missing="drop")
    assert table.n_dropped == 1 and table.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_values_whose_square_overflows_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,2\n3,-4e200\n")
    assert error(path) == (
        f"{path}: line 3, column 'y' (2): -4e+200 is too large to square in float64 "
        "(gmm needs |x| < 1e+150); rescale the column"
    )


def test_float32_refuses_values_whose_squares_overflow_it(tmp_path: Path) -> None:
    # the line is that of the value farthest from its column's mean, after dropped rows
    path = write(tmp_path, "x,y\n1,2\n3,NA\n5,-2e19\n0,0\n")
    assert error(path, float32=True, missing="drop") == (
        f"{path}: line 4, column 'y' (2): -2e+19 lies 1.33e+19 from the column's mean "
        "(-6.66667e+18), too far to square in --dtype float32 (gmm needs |x - mean| < 1e+18); "
        "use --dtype float64 or --standardize"
    )
    assert read_table(path, missing="drop").values[1, 1] == -2e19  # fine in float64
    no_header = write(tmp_path, "0\n0\n3e18\n", "plain.csv")
    assert error(no_header, float32=True, header=False).startswith(
        f"{no_header}: line 3, column 1: 3e+18 lies 2e+18 from the column's mean (1e+18)"
    )


def test_cell_errors_after_dropped_rows_name_their_own_line(tmp_path: Path) -> None:
    # the rows dropped before the check used to shift the line named (line 3 here)
    path = write(tmp_path, "x,y\n1,2\n3,NA\n5,-4e200\n")
    assert error(path, missing="drop") == (
        f"{path}: line 4, column 'y' (2): -4e+200 is too large to square in float64 "
        "(gmm needs |x| < 1e+150); rescale the column"
    )


def test_float32_refuses_columns_that_vary_too_little(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y,z\n1,5,0\n2,5,1e-20\n")
    assert error(path, float32=True) == (
        f"{path}: column 'z' (3): varies by only 5e-21 (standard deviation), too little for "
        "--dtype float32, where the inverse of such variances overflows (gmm needs at least "
        "1e-15); use --dtype float64 or --standardize"
    )
    # a constant column (y) does not vary at all, and is fine
    assert read_table(path, float32=True, columns=["x", "y"]).values.shape == (2, 2)


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, b"x,y\n1,2\n3,\xff\n")
    assert error(path) == (
        f"{path}: not valid UTF-8 text (byte 0xff on line 3, offset 10): use --encoding latin-1"
        " (or cp1252) if that is what it is"
    )


def test_not_utf8_after_bom(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbfx\n\xe9\n")
    assert "byte 0xe9 on line 2, offset 5" in error(path)


def test_ragged_row_with_too_many_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,c\n1,2,3\n4,5,6\n\n7,8,9,10\n")
    assert error(path) == f"{path}: line 5 has 4 fields, expected 3"


def test_first_data_row_longer_than_header(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b\n1,2,3\n4,5\n")
    assert error(path) == f"{path}: line 2 has 3 fields, expected 2"


def test_ragged_row_without_header(tmp_path: Path) -> None:
    path = write(tmp_path, "1,2\n3,4,5\n")
    assert error(path, header=False) == f"{path}: line 2 has 3 fields, expected 2"


def test_short_row(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,c\n1,2,3\n4,5\n")
    assert error(path, missing="error") == f"{path}: line 3 has 2 fields, expected 3"


@pytest.mark.parametrize("missing", ["em", "drop", "error"])
def test_a_short_row_is_an_error_under_every_missing_policy(tmp_path: Path, missing) -> None:
    """A line with fewer fields than the header is more likely broken than missing its last
    cells (those are empty fields or NA words): an error naming it, whatever --missing says."""
    path = write(tmp_path, "a,b,c\n1,2,3\n4,5\n")
    assert error(path, missing=missing) == f"{path}: line 3 has 2 fields, expected 3"
    path = write(tmp_path, "a,b\n1,2\n3\n", "one.csv")
    assert error(path, columns=["b"], missing=missing) == f"{path}: line 3 has 1 fields, expected 2"
    table = read_table(write(tmp_path, "a,b,c\n1,2,3\n4,5,\n", "empty.csv"))
    np.testing.assert_array_equal(table.values, [[1, 2, 3], [4, 5, np.nan]])


def test_unclosed_quote(tmp_path: Path) -> None:
    path = write(tmp_path, 'a,b\n1,"2\n3,4\n')
    assert error(path) == f"{path}: line 2: a quoted field is not closed"


def test_unclosed_quote_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'a,b\n1,2\n\n3,"4\n')
    assert error(path) == f"{path}: line 4: a quoted field is not closed"


def test_empty_header_line(tmp_path: Path) -> None:
    path = write(tmp_path, "\n1,2\n")
    assert error(path) == f"{path}: line 1 (the header) is empty"


def test_duplicate_column_names(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y,x\n1,2,3\n")
    message = error(path)
    assert message == f"{path}: line 1 (the header): duplicate column name 'x' (columns 1 and 3)"


def test_empty_column_name(tmp_path: Path) -> None:
    path = write(tmp_path, "x,,z\n1,2,3\n")
    assert error(path) == f"{path}: line 1 (the header): column 2 has an empty name"


@pytest.mark.parametrize("delimiter", ["", ";;", '"', "\n"])
def test_bad_delimiter(tmp_path: Path, delimiter: str) -> None:
    path = write(tmp_path, "x\n1\n")
    assert "the delimiter must be one character" in error(path, delimiter=delimiter)


@settings(max_examples=150, deadline=None)
@given(
    content=st.lists(
        st.sampled_from(
            ["1", "2.5", "x", "", ",", ";", '"', " ", "\n", "\r\n", "\r", "NA", "inf", "\xff"]
        ),
        max_size=30,
    ),
    header=st.booleans(),
    missing=st.sampled_from(["error", "drop"]),
)
def test_any_input_gives_a_table_or_a_one_line_error(
    content: list[str], header: bool, missing: str
) -> None:
    raw = "".join(content).encode("utf-8", "surrogateescape").replace(b"\xc3\xbf", b"\xff")
    stdin = io.BytesIO(raw)
    old = sys.stdin
    sys.stdin = type("FakeStdin", (), {"buffer": stdin})()
    try:
        table = read_table("-", header=header, missing=missing)
    except GmmError as caught:
        assert "\n" not in caught.message
        assert caught.message.startswith("<stdin>: ")
    else:
        assert table.values.dtype == np.float64
        assert table.values.flags.c_contiguous
        assert np.isfinite(table.values).all()
        assert table.values.shape == (len(table.lines), len(table.names))
    finally:
        sys.stdin = old


# --- writing --------------------------------------------------------------------------------


def test_write_csv_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"id": ["a", "b,c"], "x": [0.1 + 0.2, -1e-300], "label": [0, 2]},
    )
    dest = str(tmp_path / "out.csv")
    write_csv(frame, dest)
    text = Path(dest).read_text()
    assert text.splitlines()[0] == "id,x,label"
    back = pd.read_csv(dest)
    assert list(back["x"]) == [0.1 + 0.2, -1e-300]  # exact: floats round-trip
    assert list(back["id"]) == ["a", "b,c"]
    table = read_table(dest)
    assert table.names == ["x", "label"]
    assert table.skipped_columns == ["id"]


def test_write_csv_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    write_csv(pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}), "-")
    assert capsys.readouterr().out == "a,b\n1,0.5\n2,1.5\n"


def test_write_csv_leaves_no_temporary_files(tmp_path: Path) -> None:
    dest = tmp_path / "out.csv"
    dest.write_text("old\n")
    write_csv(pd.DataFrame({"a": [1]}), str(dest))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    assert dest.read_text() == "a\n1\n"


def test_write_csv_new_file_is_not_private(tmp_path: Path) -> None:
    dest = tmp_path / "out.csv"
    write_csv(pd.DataFrame({"a": [1]}), str(dest))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask


def test_write_csv_keeps_mode_of_replaced_file(tmp_path: Path) -> None:
    dest = tmp_path / "out.csv"
    dest.write_text("old\n")
    dest.chmod(0o640)
    write_csv(pd.DataFrame({"a": [1]}), str(dest))
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640


def test_write_csv_to_missing_folder(tmp_path: Path) -> None:
    dest = str(tmp_path / "no" / "out.csv")
    with pytest.raises(GmmError) as caught:
        write_csv(pd.DataFrame({"a": [1]}), dest)
    assert caught.value.message.startswith(f"{dest}: cannot write: folder")
    assert caught.value.message.endswith("does not exist")
    assert caught.value.status == 2
    assert list(tmp_path.iterdir()) == []


def test_write_csv_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", denied)
    dest = str(tmp_path / "out.csv")
    with pytest.raises(GmmError) as caught:
        write_csv(pd.DataFrame({"a": [1]}), dest)
    assert caught.value.message == f"{dest}: cannot write: permission denied"


def test_write_csv_failure_midway_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "out.csv"
    dest.write_text("old\n")

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(GmmError) as caught:
        write_csv(pd.DataFrame({"a": [1]}), str(dest))
    assert caught.value.message == f"{dest}: cannot write: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    assert dest.read_text() == "old\n"


def test_write_csv_onto_a_directory(tmp_path: Path) -> None:
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(GmmError) as caught:
        write_csv(pd.DataFrame({"a": [1]}), str(tmp_path / "out.csv"))
    assert "is a directory" in caught.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_a_genuine_single_column_gets_no_delimiter_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "x\n1\n2\n")
    message = error(path, required=["x", "y"])
    assert message == f"{path}: column 'y' is missing (the file has columns: x)"


def test_fast_and_exact_readers_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(500, 3)) * 1e3
    text = "a,b,c\n" + "".join(f"{float(x)!r},{float(y)!r},{int(z)}\n" for x, y, z in values)
    path = write(tmp_path, text)
    fast = read_table(path)
    monkeypatch.setattr(data, "_parse_fast", lambda *args: None)
    exact = read_table(path)
    assert fast.names == exact.names == ["a", "b", "c"]
    assert np.array_equal(fast.values, exact.values)
    assert np.array_equal(fast.values[:, :2], values[:, :2])  # every digit read back


def test_fast_reader_declines_what_it_cannot_explain(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b\n1,2\n3,\n")
    assert data._parse_fast(*data.decode(Path(path).read_bytes(), path), TableOptions()) is None
    spaced = write(tmp_path, "a, b\n1,2\n")
    assert data._parse_fast(*data.decode(Path(spaced).read_bytes(), spaced), TableOptions()) is None
    assert read_table(spaced).names == ["a", "b"]


def test_numeric_csv_round_trips_exactly_with_a_plain_header(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "label": rng.integers(0, 5, 1000),
            "prob 0": rng.random(1000),
            "x,y": rng.normal(size=1000) * 1e-300,
        }
    )
    dest = tmp_path / "out.csv"
    write_csv(frame, str(dest))
    text = dest.read_text()
    assert text.splitlines()[0] == 'label,prob 0,"x,y"'
    back = pd.read_csv(dest)
    assert np.array_equal(back.to_numpy(), frame.to_numpy())
    with_text = pd.DataFrame({"id": ["p1", "a,b"], "v": [1.5, 2.0]})
    write_csv(with_text, str(dest))
    assert dest.read_text() == 'id,v\np1,1.5\n"a,b",2.0\n'


# -- row weights (--weights) ----------------------------------------------------------------
def test_a_weights_column_is_read_beside_the_features_and_is_no_feature(tmp_path):
    path = write(tmp_path, "a,id,b,w\n1,x,2,1\n3,y,4,2.5\n5,z,6,0\n")
    table = read_table(path, weights="w")
    assert table.names == ["a", "b"]
    assert table.weights.tolist() == [1.0, 2.5, 0.0]
    by_position = read_table(path, weights="4", columns=["a"])
    assert by_position.names == ["a"]
    assert by_position.weights.tolist() == [1.0, 2.5, 0.0]


def test_rows_dropped_for_missing_values_drop_their_weights(tmp_path):
    table = read_table(write(tmp_path, "a,w\n1,1\n,2\n3,3\n"), weights="w", missing="drop")
    assert table.values[:, 0].tolist() == [1.0, 3.0]
    assert table.weights.tolist() == [1.0, 3.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,w\n1,1\n2,-2\n", "line 3, column 'w' (2): weight is negative (-2)"),
        (
            "a,w\n1,\n2,2\n",
            "line 2, column 'w' (2): missing weight (a weight is a number, 0 or more)",
        ),
        ("a,w\n1,1\n2,inf\n", "line 3, column 'w' (2): weight is not finite (inf)"),
        ("a,w\n1,x\n", "line 2, column 'w' (2): cannot read 'x' as a number"),
        ("a,w\n1,0\n2,0\n", "every weight (--weights w) is 0: there is nothing to fit"),
        ("a,w\n1,0\n,2\n", "every weight (--weights w) is 0: there is nothing to fit"),
    ],
)
def test_bad_weights_are_one_line_naming_the_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(GmmError) as caught:
        read_table(path, weights="w", missing="drop")
    assert caught.value.message == f"{path}: {message}"


def test_the_weights_column_cannot_also_be_a_feature(tmp_path):
    path = write(tmp_path, "a,w\n1,1\n")
    with pytest.raises(GmmError, match="selected as a feature and weights"):
        read_table(path, weights="w", columns=["a", "w"])
