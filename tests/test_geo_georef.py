"""Geo-referencing: the world-file convention (centre of the upper-left pixel), bounds (edges), GeoTIFF through
rasterio, distances in metres, and one-line errors."""

import math
import sys

import numpy as np
import pytest
from PIL import Image

from lpn_edge.errors import LpnEdgeError
from lpn_edge.geo.georef import (
    EARTH_RADIUS_M,
    GeoRef,
    georef_from_bounds,
    haversine_m,
    metres_per_degree,
    offset_latlon,
    open_raster,
    parse_bounds,
    read_world_file,
    require_rasterio,
    world_file_text,
)


def test_haversine_known_distances():
    one_degree = math.pi / 180 * EARTH_RADIUS_M  # 111195.08 m
    assert haversine_m(0, 0, 1, 0) == pytest.approx(one_degree, rel=1e-12)
    assert haversine_m(0, 0, 0, 1) == pytest.approx(one_degree, rel=1e-12)  # along the equator
    assert haversine_m(60, 10, 60, 11) == pytest.approx(one_degree * 0.5, rel=1e-4)  # cos 60 = 0.5
    assert haversine_m(47, 8, 47, 8) == 0
    assert haversine_m(0, 0, 0, 180) == pytest.approx(math.pi * EARTH_RADIUS_M)
    np.testing.assert_allclose(haversine_m([0, 0], [0, 0], [1, 0], [0, 1]), [one_degree, one_degree])


def test_metres_per_degree_agrees_with_haversine_for_local_offsets():
    lat_m, lon_m = metres_per_degree(47.0)
    assert lat_m == pytest.approx(111195.08, abs=0.01)
    assert lon_m == pytest.approx(111195.08 * math.cos(math.radians(47)), abs=0.01)
    lat, lon = offset_latlon(47.0, 8.0, 300.0, -400.0)
    assert haversine_m(47.0, 8.0, lat, lon) == pytest.approx(500.0, rel=1e-3)


def test_world_file_origin_is_the_centre_of_the_upper_left_pixel(tmp_path):
    # 0.001 degree pixels; the world file names the CENTRE of pixel (0, 0), half a pixel inside the corner
    world = tmp_path / "area.pgw"
    world.write_text("0.001\n0.0\n0.0\n-0.001\n8.0005\n47.0995\n")
    georef = read_world_file(world, 200, 100)
    lat, lon = georef.pixel_to_latlon(0.5, 0.5)  # centre of the upper-left pixel
    assert (float(lat), float(lon)) == pytest.approx((47.0995, 8.0005), abs=1e-12)
    lat, lon = georef.pixel_to_latlon(0, 0)  # the image's corner
    assert (float(lat), float(lon)) == pytest.approx((47.1, 8.0), abs=1e-12)
    lat, lon = georef.pixel_to_latlon(200, 100)  # the opposite corner
    assert (float(lat), float(lon)) == pytest.approx((47.0, 8.2), abs=1e-12)
    col, row = georef.latlon_to_pixel(47.05, 8.1)
    assert (float(col), float(row)) == pytest.approx((100, 50), abs=1e-9)
    # written back, the same six numbers
    assert [float(v) for v in world_file_text(georef).split()] == pytest.approx([0.001, 0, 0, -0.001, 8.0005, 47.0995])
    # the same image given by its edges has the same transform
    assert georef_from_bounds("47.1,8.0,47.0,8.2", 200, 100).transform == pytest.approx(georef.transform)


def test_bounds_are_the_image_edges():
    georef = georef_from_bounds((47.01, 8.0, 47.0, 8.02), 400, 100)
    assert georef.north_up
    assert [float(v) for v in georef.pixel_to_latlon(0, 0)] == pytest.approx([47.01, 8.0])
    assert [float(v) for v in georef.pixel_to_latlon(400, 100)] == pytest.approx([47.0, 8.02])
    px, py = georef.pixel_size_m()
    lat_m, lon_m = metres_per_degree(47.005)
    assert px == pytest.approx(0.02 / 400 * lon_m, rel=1e-6) and py == pytest.approx(0.01 / 100 * lat_m, rel=1e-6)


@pytest.mark.parametrize("text, message", [
    ("47,8,47.1,8.1", "south < north"),
    ("47.1,8.1,47,8", "west < east"),
    ("47.1,8,47", "north,west,south,east"),
    ("a,b,c,d", "north,west,south,east"),
])
def test_bad_bounds_are_one_line_errors(text, message):
    with pytest.raises(LpnEdgeError, match=message):
        parse_bounds(text)


def test_bad_world_files(tmp_path):
    short = tmp_path / "a.pgw"
    short.write_text("0.001\n0\n0\n-0.001\n8.0\n")
    with pytest.raises(LpnEdgeError, match="expected 6 numbers"):
        read_world_file(short, 10, 10)
    unknown = tmp_path / "a.txt"
    unknown.write_text("0.001\n0\n0\n-0.001\n8.0\n47.0\n")
    with pytest.raises(LpnEdgeError, match="unknown world file type"):
        read_world_file(unknown, 10, 10)
    metres = tmp_path / "b.pgw"  # UTM metres: not WGS84 degrees
    metres.write_text("1.0\n0\n0\n-1.0\n500000.5\n5200000.5\n")
    with pytest.raises(LpnEdgeError, match="not WGS84 degrees"):
        read_world_file(metres, 10, 10)


def test_open_raster_finds_the_world_file_or_says_what_is_missing(tmp_path):
    image = tmp_path / "area.png"
    Image.new("RGB", (20, 10), (10, 20, 30)).save(image)
    with pytest.raises(LpnEdgeError, match=r"no georeference.*area\.pgw.*--bounds"):
        open_raster(image)
    with pytest.raises(LpnEdgeError, match="does not exist"):
        open_raster(tmp_path / "absent.png")
    (tmp_path / "area.wld").write_text("0.001\n0\n0\n-0.001\n8.0005\n47.0095\n")
    with open_raster(image) as raster:
        assert raster.georef.width == 20 and "area.wld" in raster.georef.describe()
        assert raster.read((2, 1, 7, 4)).shape == (3, 5, 3)
        assert raster.read((0, 0, 1, 1))[0, 0].tolist() == [10, 20, 30]
    with open_raster(image, bounds="47.01,8.0,47.0,8.02") as raster:  # explicit bounds win
        assert raster.georef.transform[0] == pytest.approx(0.001)


def test_missing_rasterio_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio", None)
    with pytest.raises(LpnEdgeError, match=r'rasterio.*lpn-edge\[geo\]'):
        require_rasterio()


def test_geotiff_in_utm_is_reprojected_to_wgs84(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin
    from rasterio.warp import transform as warp

    path = tmp_path / "utm.tif"
    pixels = np.zeros((3, 40, 60), np.uint8)
    pixels[0] = 200
    with rasterio.open(path, "w", driver="GTiff", width=60, height=40, count=3, dtype="uint8", crs="EPSG:32632",
                       transform=from_origin(500000.0, 5200000.0, 2.0, 2.0)) as ds:
        ds.write(pixels)
    with open_raster(path) as raster:
        georef = raster.georef
        assert georef.crs is not None and georef.north_up
        lat, lon = georef.pixel_to_latlon(30, 20)  # centre: 60 m east, 40 m south of the corner
        (want_lon,), (want_lat,) = warp("EPSG:32632", "EPSG:4326", [500060.0], [5199960.0])
        assert (float(lat), float(lon)) == pytest.approx((want_lat, want_lon), abs=1e-9)
        col, row = georef.latlon_to_pixel(lat, lon)
        assert (float(col), float(row)) == pytest.approx((30, 20), abs=1e-6)
        # a 2 m grid; metres are measured on the sphere of the mean radius, which differs from the ellipsoid (and
        # UTM's scale factor) by a few tenths of a percent
        px, py = georef.pixel_size_m()
        assert px == pytest.approx(2.0, rel=5e-3) and py == pytest.approx(2.0, rel=5e-3)
        assert raster.read((0, 0, 5, 4)).shape == (4, 5, 3) and raster.read((0, 0, 1, 1))[0, 0].tolist() == [200, 0, 0]
        assert raster.overview(30).shape == (20, 30, 3)


def test_geotiff_without_georeference_is_refused(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(LpnEdgeError, match="no georeference"):
        open_raster(path)


def test_georef_is_plain_data():
    georef = GeoRef(10, 10, (0.1, 0.0, 8.0, 0.0, -0.1, 47.0))
    assert georef.north_up and georef.crs is None
    assert not GeoRef(10, 10, (0.1, 0.01, 8.0, 0.0, -0.1, 47.0)).north_up


def test_geo_is_torch_free():
    # the onboard runtime imports lpn_edge.geo: it must not pull in torch, onnx or the training/export stages
    import subprocess

    code = ("import sys, lpn_edge.geo.georef, lpn_edge.geo.tiling, lpn_edge.geo.metrics, lpn_edge.geo.track, "
            "lpn_edge.geo.flight_map; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', "
            "'onnxruntime', 'rasterio') or m.startswith(('lpn_edge.export', 'lpn_edge.train', 'lpn_edge.model', "
            "'lpn_edge.eval', 'lpn_edge.data'))))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
