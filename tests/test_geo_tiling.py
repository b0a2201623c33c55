"""Tiling an orthophoto: tile count, centres to 1e-6 degrees, resampled size and content, uncovered edges,
world file = bounds, resuming, GeoTIFF (rasterio), errors, and the `index tile` command."""

import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lpn_edge.cli import app
from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import TEMPORARY_GLOB
from lpn_edge.geo.georef import EARTH_RADIUS_M, georef_from_bounds
from lpn_edge.geo.tiling import plan_tiles, read_geo_csv, tile_orthophoto

W, H = 400, 300
NORTH, WEST = 47.0, 8.0
DEG_LAT = 0.98 / 111195.08  # pixels of about 0.98 m: a 100 m tile is about 102 px
LAT_C = NORTH - H / 2 * DEG_LAT
DEG_LON = 0.98 / (111195.08 * math.cos(math.radians(LAT_C)))
BOUNDS = f"{NORTH!r},{WEST!r},{NORTH - H * DEG_LAT!r},{WEST + W * DEG_LON!r}"


def expected_grid(tile_m, stride_m):
    """Tile count and centres computed independently of the code: pixel metres from the sphere's scale."""
    m_per_deg = math.pi / 180 * EARTH_RADIUS_M
    px_x = DEG_LON * m_per_deg * math.cos(math.radians(LAT_C))
    px_y = DEG_LAT * m_per_deg
    tile_x, tile_y, step_x, step_y = tile_m / px_x, tile_m / px_y, stride_m / px_x, stride_m / px_y
    cols = int((W - tile_x) // step_x) + 1
    rows = int((H - tile_y) // step_y) + 1
    centres = [(NORTH - (r * step_y + tile_y / 2) * DEG_LAT, WEST + (c * step_x + tile_x / 2) * DEG_LON)
               for r in range(rows) for c in range(cols)]
    return rows, cols, np.array(centres), (tile_x, tile_y, step_x, step_y)


@pytest.fixture()
def orthophoto(tmp_path):
    """A PNG whose red channel is the column / 2 and green channel the row / 2: tiles show where they came from."""
    rows, cols = np.mgrid[0:H, 0:W]
    pixels = np.stack([cols // 2, rows // 2, np.full_like(rows, 90)], axis=-1).astype(np.uint8)
    path = tmp_path / "area.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("tile_m, stride_m", [(100.0, None), (100.0, 50.0), (60.0, 75.0)])
def test_png_with_bounds_count_centres_and_size(orthophoto, tmp_path, tile_m, stride_m):
    out = tmp_path / "tiles"
    summary = tile_orthophoto(orthophoto, out, tile_m, stride_m, size=32, bounds=BOUNDS)
    rows, cols, centres, (tile_x, tile_y, step_x, step_y) = expected_grid(tile_m, stride_m or tile_m)
    assert (summary.plan.rows, summary.plan.cols) == (rows, cols)
    geo = read_geo_csv(out / "geo.csv")
    assert len(geo["id"]) == rows * cols == len(list((out / "tiles").glob("*.png")))
    assert geo["id"][0] == "0000" and list(geo["row"][: cols + 1]) == [0] * cols + [1]
    np.testing.assert_allclose(np.stack([geo["latitude"], geo["longitude"]], 1), centres, rtol=0, atol=1e-6)
    assert set(geo["tile_size_m"]) == {tile_m}
    # every tile is resampled to size x size, and holds the pixels around its centre
    for index in [0, rows * cols - 1]:
        tile = np.asarray(Image.open(out / "tiles" / f"{geo['id'][index]}.png"))
        assert tile.shape == (32, 32, 3)
        col_centre = geo["col"][index] * step_x + tile_x / 2
        row_centre = geo["row"][index] * step_y + tile_y / 2
        assert tile[..., 0].mean() == pytest.approx(col_centre / 2, abs=1.0)
        assert tile[..., 1].mean() == pytest.approx(row_centre / 2, abs=1.0)
    # the edges left over are said, in metres and pixels
    east_px = W - ((cols - 1) * step_x + tile_x)
    assert summary.plan.uncovered_east_px == pytest.approx(east_px, abs=1e-6)
    assert f"east edge: {summary.plan.uncovered_east_m:.1f} m ({east_px:.1f} px) not covered" in str(summary)


def test_world_file_gives_the_same_tiles_as_the_bounds(orthophoto, tmp_path):
    # the world file names the centre of the upper-left pixel: half a pixel inside the bounds' corner
    (orthophoto.with_suffix(".pgw")).write_text(
        f"{DEG_LON!r}\n0.0\n0.0\n{-DEG_LAT!r}\n{WEST + DEG_LON / 2!r}\n{NORTH - DEG_LAT / 2!r}\n")
    tile_orthophoto(orthophoto, tmp_path / "world", 100.0, size=16)
    tile_orthophoto(orthophoto, tmp_path / "bounds", 100.0, size=16, bounds=BOUNDS)
    assert (tmp_path / "world" / "geo.csv").read_text() == (tmp_path / "bounds" / "geo.csv").read_text()
    _, _, centres, _ = expected_grid(100.0, 100.0)
    geo = read_geo_csv(tmp_path / "world" / "geo.csv")
    np.testing.assert_allclose(np.stack([geo["latitude"], geo["longitude"]], 1), centres, rtol=0, atol=1e-6)


def test_rerun_skips_finished_tiles_and_refuses_another_tiling(orthophoto, tmp_path):
    out = tmp_path / "tiles"
    first = tile_orthophoto(orthophoto, out, 100.0, size=16, bounds=BOUNDS)
    assert (first.written, first.skipped) == (first.plan.count, 0)
    (out / "tiles" / "0001.png").unlink()
    (out / "tiles" / ".tmp-0123abcd-0002.png").write_bytes(b"half a tile")  # an interrupted write (fileio.Staging)
    again = tile_orthophoto(orthophoto, out, 100.0, size=16, bounds=BOUNDS)
    assert (again.written, again.skipped) == (1, first.plan.count - 1)
    assert not list((out / "tiles").glob(TEMPORARY_GLOB))
    with pytest.raises(LpnEdgeError, match="cut another way.*tile_size_m"):
        tile_orthophoto(orthophoto, out, 80.0, size=16, bounds=BOUNDS)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(LpnEdgeError, match="not empty"):
        tile_orthophoto(orthophoto, foreign, 100.0, size=16, bounds=BOUNDS)


def test_bad_requests_are_one_line_errors(orthophoto, tmp_path):
    with pytest.raises(LpnEdgeError, match="larger than the image"):
        tile_orthophoto(orthophoto, tmp_path / "a", 350.0, bounds=BOUNDS)  # the image is 294 m tall
    with pytest.raises(LpnEdgeError, match="no georeference"):
        tile_orthophoto(orthophoto, tmp_path / "b", 100.0)
    with pytest.raises(LpnEdgeError, match="--stride must be a positive"):
        tile_orthophoto(orthophoto, tmp_path / "c", 100.0, -5.0, bounds=BOUNDS)
    with pytest.raises(LpnEdgeError, match="--size"):
        tile_orthophoto(orthophoto, tmp_path / "d", 100.0, size=2, bounds=BOUNDS)
    rotated = georef_from_bounds(BOUNDS, W, H)
    with pytest.raises(LpnEdgeError, match="rotated"):
        plan_tiles(type(rotated)(W, H, (DEG_LON, 1e-6, WEST, 0.0, -DEG_LAT, NORTH)), 100.0)


def test_geotiff_tiles_in_any_crs(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin
    from rasterio.warp import transform as warp

    path = tmp_path / "utm.tif"
    with rasterio.open(path, "w", driver="GTiff", width=350, height=250, count=3, dtype="uint8", crs="EPSG:32632",
                       transform=from_origin(500000.0, 5200000.0, 1.0, 1.0), tiled=True, blockxsize=64,
                       blockysize=64) as ds:
        ds.write(np.full((3, 250, 350), 120, np.uint8))
    summary = tile_orthophoto(path, tmp_path / "tiles", 100.0, size=24)
    assert (summary.plan.rows, summary.plan.cols) == (2, 3)
    tile_x, tile_y = summary.plan.tile_px
    assert tile_x == pytest.approx(100, rel=5e-3)  # 1 m grid; metres on the sphere (see georef)
    geo = read_geo_csv(tmp_path / "tiles" / "geo.csv")
    xs = [500000.0 + c * tile_x + tile_x / 2 for _ in range(2) for c in range(3)]
    ys = [5200000.0 - (r * tile_y + tile_y / 2) for r in range(2) for _ in range(3)]
    lon, lat = warp("EPSG:32632", "EPSG:4326", xs, ys)
    np.testing.assert_allclose(geo["latitude"], lat, rtol=0, atol=1e-6)
    np.testing.assert_allclose(geo["longitude"], lon, rtol=0, atol=1e-6)
    tile = np.asarray(Image.open(tmp_path / "tiles" / "tiles" / "0005.png"))
    assert tile.shape == (24, 24, 3) and (tile == 120).all()


def test_index_tile_command(orthophoto, tmp_path):
    result = CliRunner().invoke(app, ["index", "tile", str(orthophoto), "--tile-size", "100", "--stride", "50",
                                      "--size", "16", "--out", str(tmp_path / "t"), "--bounds", BOUNDS])
    assert result.exit_code == 0, result.output
    assert "grid          4 rows x 6 columns = 24 tiles (24 written, 0 already there)" in result.output
    assert "east edge:" in result.output
    bad = CliRunner().invoke(app, ["index", "tile", str(orthophoto), "--tile-size", "100", "--out",
                                   str(tmp_path / "u")])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "error:" in bad.output


def test_the_image_is_read_once_top_to_bottom(orthophoto, tmp_path, monkeypatch):
    from lpn_edge.geo import georef as georef_module

    reads = []
    original = georef_module.PillowRaster.read

    def recording_read(self, box):
        reads.append(box)
        return original(self, box)

    monkeypatch.setattr(georef_module.PillowRaster, "read", recording_read)
    tile_orthophoto(orthophoto, tmp_path / "t", 100.0, 50.0, size=16, bounds=BOUNDS)  # overlapping rows of tiles
    assert all(box[0] == 0 and box[2] == W for box in reads)  # full-width strips
    assert all(after[1] == before[3] for before, after in zip(reads, reads[1:]))  # each starts where one ended
    assert reads[-1][3] <= H


def test_large_png_is_read_through_rasterio_with_the_same_tiles(orthophoto, tmp_path, monkeypatch):
    pytest.importorskip("rasterio")
    from lpn_edge.geo import georef as georef_module

    tile_orthophoto(orthophoto, tmp_path / "pillow", 100.0, 50.0, size=16, bounds=BOUNDS)
    monkeypatch.setattr(georef_module, "LARGE_IMAGE_PIXELS", 1000)
    with georef_module.open_raster(orthophoto, BOUNDS) as raster:
        assert isinstance(raster, georef_module.RasterioRaster)
    tile_orthophoto(orthophoto, tmp_path / "gdal", 100.0, 50.0, size=16, bounds=BOUNDS)
    for name in ["geo.csv", *(f"tiles/{p.name}" for p in (tmp_path / "pillow" / "tiles").iterdir())]:
        assert (tmp_path / "pillow" / name).read_bytes() == (tmp_path / "gdal" / name).read_bytes(), name
