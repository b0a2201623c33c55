"""Position error in metres and true-tile hit rates, on hand-made positions with known answers."""

import math

import numpy as np
import pytest

from lpn_edge.errors import LpnEdgeError
from lpn_edge.geo.georef import EARTH_RADIUS_M
from lpn_edge.geo.metrics import position_errors, summarize_errors, topk_hit_rates, true_tiles

M_PER_DEG = math.pi / 180 * EARTH_RADIUS_M  # 111195.08 m per degree of latitude


def test_errors_of_hand_made_positions():
    true_lat, true_lon = np.full(5, 47.0), np.full(5, 8.0)
    # due north by 0, 10, 20, 30 and 100 m
    est_lat = true_lat + np.array([0, 10, 20, 30, 100]) / M_PER_DEG
    errors = position_errors(est_lat, true_lon, true_lat, true_lon)
    np.testing.assert_allclose(errors, [0, 10, 20, 30, 100], atol=1e-6)
    summary = summarize_errors(errors)
    assert summary.frames == 5 and summary.median_m == pytest.approx(20)
    assert summary.p90_m == pytest.approx(30 + 0.6 * 70)  # linear between the 4th (30) and 5th (100) of 5
    assert summary.within == pytest.approx({25.0: 0.6, 50.0: 0.8})
    assert summary.mean_m == pytest.approx(32) and summary.max_m == pytest.approx(100)
    assert summary.as_dict()["within_25m"] == pytest.approx(0.6)
    assert "median 20.0 m" in str(summary) and "60.0 % within 25 m" in str(summary)


def test_east_errors_shrink_with_latitude():
    # 0.001 degree of longitude at 60 degrees north is half of what it is at the equator
    at_60 = position_errors([60.0], [8.001], [60.0], [8.0])[0]
    assert at_60 == pytest.approx(0.001 * M_PER_DEG * 0.5, rel=1e-4)


def test_threshold_is_inclusive():
    assert summarize_errors([25.0, 50.0, 50.1]).within == pytest.approx({25.0: 1 / 3, 50.0: 2 / 3})


def test_true_tiles_are_the_nearest_centres():
    # a 3 x 2 grid of 100 m tiles around (47, 8)
    lat_m, lon_m = M_PER_DEG, M_PER_DEG * math.cos(math.radians(47))
    east = np.array([-100, 0, 100, -100, 0, 100], float)
    north = np.array([50, 50, 50, -50, -50, -50], float)
    tile_lat, tile_lon = 47 + north / lat_m, 8 + east / lon_m
    frames_east = np.array([-90, 40, 60, 0, 130, 400], float)
    frames_north = np.array([60, 10, -20, -99, -1, -10], float)
    frames_lat, frames_lon = 47 + frames_north / lat_m, 8 + frames_east / lon_m
    assert true_tiles(frames_lat, frames_lon, tile_lat, tile_lon).tolist() == [0, 1, 5, 4, 5, 5]
    # with the tile size: the last frame is 250 m beyond the east edge of the gallery
    assert true_tiles(frames_lat, frames_lon, tile_lat, tile_lon, 100.0).tolist() == [0, 1, 5, 4, 5, -1]


def test_topk_hit_rates():
    ranked = [["a", "b", "c", "d", "e", "f"], ["b", "a", "c", "d", "e", "f"], ["f", "e", "d", "c", "b", "a"],
              ["c", "d", "e", "f", "b", "a"]]
    true = ["a", "a", "a", None]
    assert topk_hit_rates(ranked, true) == {1: 0.25, 5: 0.5}
    assert topk_hit_rates(ranked, true, ks=(1, 2, 6)) == {1: 0.25, 2: 0.5, 6: 0.75}
    assert topk_hit_rates(np.array([[3, 1], [0, 2]]), [1, -1], ks=(1, 2)) == {1: 0.0, 2: 0.5}


def test_bad_inputs_are_errors():
    with pytest.raises(LpnEdgeError, match="expected 2"):
        position_errors([47.0], [8.0], [47.0, 47.1], [8.0, 8.0])
    with pytest.raises(LpnEdgeError, match="not a finite number"):
        position_errors([np.nan], [8.0], [47.0], [8.0])
    with pytest.raises(LpnEdgeError, match="one of each per frame"):
        topk_hit_rates([["a"]], ["a", "b"])
