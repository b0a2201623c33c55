"""The synthetic flight: files, byte-identical output for a seed, positions consistent with the orthophoto's
world file, a smooth path inside the area, argument checks, and the command."""

import csv
import hashlib
import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lpn_edge.cli import app
from lpn_edge.data.synth.flight import PITCH, camera_reach, synth_flight
from lpn_edge.errors import LpnEdgeError
from lpn_edge.geo.georef import haversine_m, read_world_file

SMALL = {"area": 320.0, "frames": 4, "altitude": 30.0, "size": 32}


def tree_hash(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def flight(tmp_path_factory):
    root = tmp_path_factory.mktemp("flight") / "f"
    synth_flight(root, seed=3, **SMALL)
    return root


def read_rows(root):
    with open(root / "flight.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_files_and_columns(flight):
    assert sorted(p.name for p in flight.iterdir()) == ["flight.csv", "flight.json", "frames", "orthophoto.pgw",
                                                        "orthophoto.png"]
    rows = read_rows(flight)
    assert [r["frame"] for r in rows] == ["0000", "0001", "0002", "0003"]
    assert {"frame", "latitude", "longitude", "heading", "altitude", "east_m", "north_m", "time_s",
            "view_latitude", "view_longitude"} <= set(rows[0])
    for row in rows:
        assert Image.open(flight / "frames" / f"{row['frame']}.png").size == (32, 32)
    ortho = Image.open(flight / "orthophoto.png")
    assert ortho.size == (154, 154)  # 320 m at 32 / 100 x 1.5 px per metre


def test_byte_identical_for_a_seed(flight, tmp_path):
    again = tmp_path / "again"
    synth_flight(again, seed=3, **SMALL)
    assert tree_hash(again) == tree_hash(flight)
    other = tmp_path / "other"
    synth_flight(other, seed=4, **SMALL)
    assert (other / "flight.csv").read_bytes() != (flight / "flight.csv").read_bytes()


def test_positions_agree_with_the_world_file_and_the_path_is_smooth(flight):
    ortho = Image.open(flight / "orthophoto.png")
    georef = read_world_file(flight / "orthophoto.pgw", *ortho.size)
    rows = read_rows(flight)
    lat, lon = (np.array([float(r[k]) for r in rows]) for k in ("latitude", "longitude"))
    east, north = (np.array([float(r[k]) for r in rows]) for k in ("east_m", "north_m"))
    col, row = georef.latlon_to_pixel(lat, lon)
    ppm = 154 / 320  # 32 / 100 x 1.5 px per metre, rounded to whole pixels across the area
    # the orthophoto's centre is the area's centre: (east, north) metres from it are (east, -north) * ppm pixels
    np.testing.assert_allclose(col, ortho.width / 2 + east * ppm, atol=0.01)
    np.testing.assert_allclose(row, ortho.height / 2 - north * ppm, atol=0.01)
    # inside the area with the camera's margin, frames 30 m apart along the path (12 m/s x 2.5 s; the straight
    # line between frames is shorter where the path turns), heading along the path
    assert np.abs(np.concatenate([east, north])).max() <= 160 - camera_reach(30.0)
    steps = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    assert steps.max() <= 30.01 and steps.min() > 20
    heading = np.array([float(r["heading"]) for r in rows])
    # the tangent at an inner frame is close to the direction from the frame before to the frame after
    tangent = np.degrees(np.arctan2(east[2:] - east[:-2], north[2:] - north[:-2])) % 360
    assert np.abs((heading[1:-1] - tangent + 180) % 360 - 180).max() < 10
    # the frame's centre looks altitude / tan(pitch) ahead of the drone
    view = haversine_m(lat, lon, [float(r["view_latitude"]) for r in rows], [float(r["view_longitude"]) for r in rows])
    np.testing.assert_allclose(view, 30.0 / math.tan(math.radians(PITCH)), rtol=1e-3)


def test_argument_checks(tmp_path):
    with pytest.raises(
        LpnEdgeError, match=r"--area must be between 2\d\d and 20000 m at --altitude 30 \(the camera sees"
    ):
        synth_flight(tmp_path / "a", area=150.0, frames=2, altitude=30.0, size=32)
    with pytest.raises(LpnEdgeError, match="--frames"):
        synth_flight(tmp_path / "b", area=320.0, frames=0, altitude=30.0, size=32)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("mine")
    with pytest.raises(LpnEdgeError, match="not written by lpn-edge synth-flight"):
        synth_flight(foreign, overwrite=True, **SMALL)


def test_synth_flight_command(tmp_path):
    result = CliRunner().invoke(app, ["synth-flight", str(tmp_path / "f"), "--area", "320", "--seed", "1",
                                      "--frames", "2", "--altitude", "30", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert "frames            2 in" in result.output
    again = CliRunner().invoke(app, ["synth-flight", str(tmp_path / "f"), "--area", "320", "--frames", "2",
                                     "--altitude", "30", "--size", "32"])
    assert again.exit_code == 2 and "--overwrite" in again.output
