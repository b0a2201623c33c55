"""The flight map: a valid PNG of the expected size, estimates drawn in their error colour where they are."""

import numpy as np
import pytest
from PIL import Image

from lpn_edge.errors import LpnEdgeError
from lpn_edge.geo.flight_map import GREEN, RED, YELLOW, draw_flight_map, error_colour
from lpn_edge.geo.georef import georef_from_bounds, offset_latlon

W, H = 300, 200
BOUNDS = (47.002, 8.0, 47.0, 8.004)  # about 304 x 222 m


def positions(east, north):
    centre_lat, centre_lon = 47.001, 8.002
    return offset_latlon(centre_lat, centre_lon, np.asarray(east, float), np.asarray(north, float))


def scene():
    georef = georef_from_bounds(BOUNDS, W, H)
    true_lat, true_lon = positions([0, 40, 80], [-20, -30, -40])
    est_lat, est_lon = positions([10, 40, 80], [-20, 10, 60])  # 10 m, 40 m and 100 m off
    return georef, (true_lat, true_lon), (est_lat, est_lon)


def test_error_colours():
    assert error_colour(0) == GREEN and error_colour(24.9) == GREEN
    assert error_colour(25) == YELLOW and error_colour(49.9) == YELLOW
    assert error_colour(50) == RED and error_colour(1e6) == RED


@pytest.mark.parametrize("max_side, size", [(1600, (W, H)), (150, (150, 100))])
def test_map_is_a_png_with_estimates_in_their_colours(tmp_path, max_side, size):
    georef, (true_lat, true_lon), (est_lat, est_lon) = scene()
    ortho = np.full((H, W, 3), 90, np.uint8)
    tile_lat, tile_lon = positions([-50, 50, -50, 50], [50, 50, -50, -50])
    out = draw_flight_map(ortho, tmp_path / "map.png", true_lat, true_lon, est_lat, est_lon, tile_lat=tile_lat,
                          tile_lon=tile_lon, tile_size_m=100.0, georef=georef, max_side=max_side,
                          note="median 40.0 m")
    image = Image.open(out)
    image.verify()  # a valid PNG
    image = Image.open(out)
    assert image.format == "PNG" and image.size == size and image.mode == "RGB"
    scale = size[0] / W
    pixels = np.asarray(image)
    for lat, lon, colour in zip(est_lat, est_lon, [GREEN, YELLOW, RED]):
        col, row = georef.latlon_to_pixel(lat, lon)
        assert tuple(pixels[int(row * scale), int(col * scale)]) == colour
    # the legend (upper left) is darker than the orthophoto; the far corner is the orthophoto as it was
    assert pixels[8, 8].mean() < 90 and tuple(pixels[-1, -1]) == (90, 90, 90)


def test_map_from_a_file_with_its_world_file(tmp_path):
    georef, (true_lat, true_lon), (est_lat, est_lon) = scene()
    path = tmp_path / "ortho.png"
    Image.new("RGB", (W, H), (90, 90, 90)).save(path)
    out = draw_flight_map(path, tmp_path / "m.png", true_lat, true_lon, est_lat, est_lon,
                          bounds="47.002,8.0,47.0,8.004")
    pixels = np.asarray(Image.open(out))
    col, row = georef.latlon_to_pixel(est_lat[2], est_lon[2])
    assert tuple(pixels[int(row), int(col)]) == RED
    # the true path is drawn between the first two true positions
    (c0, c1), (r0, r1) = georef.latlon_to_pixel(true_lat[:2], true_lon[:2])
    middle = pixels[int(round((r0 + r1) / 2)), int(round((c0 + c1) / 2))]
    assert middle[2] > 200 and middle[0] < 100


def test_mismatched_estimates_are_refused(tmp_path):
    georef, (true_lat, true_lon), (est_lat, est_lon) = scene()
    with pytest.raises(LpnEdgeError, match="one of each per frame"):
        draw_flight_map(np.zeros((H, W, 3), np.uint8), tmp_path / "m.png", true_lat, true_lon, est_lat[:2],
                        est_lon[:2], georef=georef)
