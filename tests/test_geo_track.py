"""The sequence filter on synthetic candidate lists whose right answers are known: a higher-scoring jump decoy
is rejected, a wrong start is reset after `patience` frames, time gaps widen the reach."""

import numpy as np
import pytest

from lpn_edge.errors import LpnEdgeError
from lpn_edge.geo.georef import offset_latlon
from lpn_edge.geo.metrics import position_errors
from lpn_edge.geo.track import Tracker, track

LAT0, LON0 = 47.0, 8.0


def at(east, north):
    lat, lon = offset_latlon(LAT0, LON0, east, north)
    return float(lat), float(lon)


def truth(frames, speed=20.0):
    """The drone flies east at ``speed`` m/s, a frame a second."""
    return [at(speed * i, 0.0) for i in range(frames)]


def test_a_higher_scoring_jump_decoy_is_rejected():
    true = truth(6)
    candidates = []
    for i, (lat, lon) in enumerate(true):
        frame = [(*at(20 * i + 15, 10), 0.6), (lat, lon, 0.7)]  # a near miss and the truth
        if i == 3:
            frame.insert(0, (*at(1500, 800), 0.95))  # a look-alike place 1.7 km away scores best
        candidates.append(frame)
    result = track(candidates, max_speed=25.0, tolerance=50.0, frame_interval=1.0)
    assert result.status == ["first", "tracked", "tracked", "tracked", "tracked", "tracked"]
    assert result.choice.tolist() == [1, 1, 1, 2, 1, 1]  # the truth, also where the decoy came first
    np.testing.assert_allclose(position_errors(result.latitude, result.longitude, *zip(*true)), 0, atol=1e-6)
    # without the filter frame 3 would be 1.7 km off
    best = [max(frame, key=lambda c: c[2]) for frame in candidates]
    assert position_errors([b[0] for b in best], [b[1] for b in best], *zip(*true))[3] > 1500


def test_among_reachable_candidates_the_best_score_wins():
    frames = [[(*at(0, 0), 0.9)], [(*at(30, 0), 0.5), (*at(10, 0), 0.8), (*at(500, 0), 0.99)]]
    result = track(frames, max_speed=20.0, tolerance=15.0, frame_interval=1.0)
    assert result.choice.tolist() == [0, 1]  # 30 m and 10 m are in reach (35 m); the best of them is 10 m


def test_a_wrong_start_is_reset_after_patience_missed_frames():
    true = truth(7)
    candidates = [[(lat, lon, 0.8)] for lat, lon in true]
    candidates[0] = [(*at(3000, 0), 0.9), (*true[0], 0.8)]  # the first frame's best is wrong
    result = track(candidates, max_speed=25.0, tolerance=50.0, frame_interval=1.0, patience=3)
    assert result.status == ["first", "held", "held", "reset", "tracked", "tracked", "tracked"]
    assert result.choice.tolist() == [0, -1, -1, 0, 0, 0, 0]
    errors = position_errors(result.latitude, result.longitude, *zip(*true))
    assert errors[1] == pytest.approx(3000 - 20, rel=1e-3)  # held at the wrong anchor
    np.testing.assert_allclose(errors[3:], 0, atol=1e-6)
    # patience 1: no holding at all
    assert track(candidates, 25.0, 50.0, frame_interval=1.0, patience=1).status[1] == "reset"


def test_the_reach_grows_with_the_time_since_the_anchor():
    frames = [[(*at(0, 0), 0.9)], [], [(*at(400, 0), 0.9)]]
    # 10 m/s: 2 s after the anchor the reach is 20 m + 50 m: 400 m is out; at t = 40 s it is in reach
    assert track(frames, 10.0, 50.0, times=[0, 1, 2], patience=5).status == ["first", "held", "held"]
    assert track(frames, 10.0, 50.0, times=[0, 1, 40], patience=5).status == ["first", "held", "tracked"]


def test_bad_arguments():
    frames = [[(LAT0, LON0, 1.0)]]
    with pytest.raises(LpnEdgeError, match="exactly one"):
        track(frames, 10.0, 50.0)
    with pytest.raises(LpnEdgeError, match="exactly one"):
        track(frames, 10.0, 50.0, times=[0.0], frame_interval=1.0)
    with pytest.raises(LpnEdgeError, match="maximum speed"):
        track(frames, 0.0, 50.0, frame_interval=1.0)
    with pytest.raises(LpnEdgeError, match="must not decrease"):
        track(frames * 2, 10.0, 50.0, times=[1.0, 0.0])
    with pytest.raises(LpnEdgeError, match="latitude, longitude, score"):
        track([[(LAT0, LON0)]], 10.0, 50.0, frame_interval=1.0)


def test_the_tracker_answers_each_frame_as_track_does_on_the_whole_flight():
    true = truth(7)
    candidates = [[(*at(3000, 0), 0.9), (*true[0], 0.8)]] + [[(*p, 0.7), (*at(900, 900), 0.8)] for p in true[1:]]
    candidates[3] = []
    whole = track(candidates, 25.0, 50.0, frame_interval=1.0, patience=2)
    tracker = Tracker(25.0, 50.0, patience=2)
    steps = [tracker.step(frame, float(t)) for t, frame in enumerate(candidates)]
    assert [s[3] for s in steps] == whole.status and [s[2] for s in steps] == whole.choice.tolist()
    np.testing.assert_array_equal([s[0] for s in steps], whole.latitude)
    assert np.isnan(Tracker(25.0, 50.0).step([], 0.0)[0])
    with pytest.raises(LpnEdgeError, match="must not decrease"):
        tracker.step([], 1.0)
