"""The one CSV reader behind geo.csv (index build, tiling) and the flight truth: header rules and messages."""

import numpy as np
import pytest

from lpn_edge.errors import LpnEdgeError
from lpn_edge.geo.tiling import read_geo_csv as read_tiling
from lpn_edge.locate import read_truth
from lpn_edge.runtime.tables import read_csv_table


def test_header_names_are_matched_loosely_and_lines_counted(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeff Frame ,LATITUDE,longitude\n1,47.0,8.0\n2,47.1,\n".encode())  # BOM, blanks, case
    table = read_csv_table(path, "--truth")
    assert table.has("frame", "latitude", "longitude") and not table.has("view_latitude")
    assert [(line, table.cell(row, "frame"), table.cell(row, "longitude")) for line, row in table.rows] == \
        [(2, "1", "8.0"), (3, "2", "")]
    with pytest.raises(LpnEdgeError, match=r"--truth .*t\.csv lacks the columns row, col; expected row and col"):
        table.require(("frame", "row", "col"), "row and col")
    with pytest.raises(LpnEdgeError, match=r"geo CSV .*nowhere\.csv does not exist"):
        read_csv_table(tmp_path / "nowhere.csv", "geo CSV")


def test_numbers_of_a_row_with_the_line_and_cell_in_every_message(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,latitude,row\na,47.5,3\nb,,x\n")
    table = read_csv_table(path, "geo CSV")
    (line_a, a), (line_b, b) = table.rows
    assert table.number(line_a, a, "latitude") == 47.5 and table.number(line_a, a, "row", int) == 3
    assert np.isnan(table.number(line_b, b, "latitude", blank=float("nan")))
    with pytest.raises(LpnEdgeError, match=r"t\.csv line 3: latitude must be a number; got ''"):
        table.number(line_b, b, "latitude")
    with pytest.raises(LpnEdgeError, match=r"t\.csv line 3: row must be a whole number; got 'x'"):
        table.number(line_b, b, "row", int)


def refuses(read, path, text: str, message: str) -> None:
    """`read` of a file holding `text` fails with `message`."""
    path.write_text(text)
    with pytest.raises(LpnEdgeError, match=message):
        read(path)


def test_truth_prefers_the_view_centre_and_names_bad_lines(tmp_path):
    path = tmp_path / "flight.csv"
    path.write_text("frame,latitude,longitude,view_latitude,view_longitude\n0,1,2,3,4\n")
    truth = read_truth(path)
    assert truth.by_number[0] == (3.0, 4.0) and truth.columns == "view_latitude/view_longitude"
    refuses(read_truth, path, "frame,latitude,longitude\n0,1,2\n1,north,2\n",
            r"flight\.csv line 3: latitude must be a number; got 'north'")
    refuses(read_truth, path, "frame,latitude\n0,1\n", "lacks the column longitude")
    refuses(read_truth, path, "frame,latitude,longitude\n", "has no rows")


def test_tiling_columns_and_errors(tmp_path):
    path = tmp_path / "geo.csv"
    path.write_text("id,latitude,longitude,row,col,tile_size_m\nr0_c0,47.1,8.2,0,0,100\nr0_c1,47.1,8.3,0,1,100\n")
    geo = read_tiling(path)
    assert list(geo["id"]) == ["r0_c0", "r0_c1"] and geo["col"].dtype.kind == "i"
    assert np.array_equal(geo["longitude"], [8.2, 8.3])
    refuses(read_tiling, path, "id,latitude,longitude,row\nr0_c0,47.1,8.2,first\n",
            r"geo\.csv line 2: row must be a whole number; got 'first'")
    refuses(read_tiling, path, "id,latitude,longitude\n", "has no rows")
