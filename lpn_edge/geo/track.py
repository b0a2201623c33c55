"""Sequence filter for consecutive frames of one flight: reject impossible jumps among the top-k candidates.

`track` (or `Tracker`, one frame at a time) walks the frames in order and keeps an ANCHOR: the last accepted
position and the time it was accepted.

1. The first frame with candidates accepts its best-scoring one (status "first"); frames before it have no
   estimate (NaN, status "held").
2. Every later frame at time t looks at the candidates within reach of the anchor: great-circle distance to the
   anchor at most ``max_speed * (t - t_anchor) + tolerance`` metres (``tolerance``: typically one tile size, for
   the tile-centre quantisation of the candidates). If there is one, the best-scoring reachable candidate is
   accepted and becomes the anchor (status "tracked").
3. If none is reachable (or the frame has no candidates), the frame is MISSED: its estimate is the anchor's
   position, held, and the anchor does not move (status "held"); the reach keeps growing with the time since the
   anchor, so a drone that flew on is found again.
4. On the ``patience``-th missed frame in a row the track is reset: that frame accepts its best-scoring
   candidate regardless of distance, which becomes the anchor (status "reset"), so one wrong anchor cannot hold
   the track forever. ``patience = 1`` resets at once on every missed frame. A frame without candidates is
   always held.

Scores: higher is better (cosine similarity); ties go to the earlier candidate. Times: ``times`` in seconds
(non-decreasing), or every frame ``frame_interval`` seconds after the previous one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.geo.georef import haversine_m


@dataclass(frozen=True)
class Track:
    """Per frame: the estimate, which candidate it is (-1: held), and the status (see the module docstring)."""

    latitude: np.ndarray
    longitude: np.ndarray
    choice: np.ndarray  # index into the frame's candidates, -1 when the anchor was held
    status: list[str]  # first | tracked | held | reset

    def counts(self) -> dict[str, int]:
        return {name: self.status.count(name) for name in ("first", "tracked", "held", "reset")}


def _as_candidates(frame, index: int) -> np.ndarray:
    array = np.asarray(frame, np.float64)
    if array.size == 0:
        return np.empty((0, 3))
    if array.ndim != 2 or array.shape[1] != 3 or not np.all(np.isfinite(array)):
        raise LpnEdgeError(f"frame {index}: candidates must be (latitude, longitude, score) rows of finite numbers")
    return array


class Tracker:
    """The rule of `track`, one frame at a time: `step(candidates, time)` returns that frame's (latitude, longitude,
    choice, status) at once (the rule is causal: a frame's answer depends only on it and the frames before), so a
    camera loop filters as it flies. `track` is a loop over `step`."""

    def __init__(self, max_speed: float, tolerance: float, patience: int = 3) -> None:
        if not max_speed > 0:
            raise LpnEdgeError(f"the maximum speed must be positive (m/s), got {max_speed}")
        if not tolerance >= 0:
            raise LpnEdgeError(f"the tolerance must be >= 0 metres, got {tolerance}")
        if patience < 1:
            raise LpnEdgeError(f"patience must be at least 1 frame, got {patience}")
        self.max_speed, self.tolerance, self.patience = float(max_speed), float(tolerance), int(patience)
        self.anchor: tuple[float, float, float] | None = None  # latitude, longitude, time
        self.missed = 0
        self.frames = 0
        self._last_time = -np.inf

    def step(self, candidates, time: float) -> tuple[float, float, int, str]:
        """One frame: (latitude, longitude, score) rows (any order) at ``time`` seconds (not before the previous
        frame's) -> (latitude, longitude, choice, status) as in `Track` (NaN position before the first fix)."""
        frame = _as_candidates(candidates, self.frames)
        if time < self._last_time:
            raise LpnEdgeError("frame times must not decrease")
        self._last_time = time
        self.frames += 1
        picked, state = -1, "held"
        anchor = self.anchor
        if anchor is None:
            if len(frame):
                picked, state = int(np.argmax(frame[:, 2])), "first"
        else:
            reach = self.max_speed * (time - anchor[2]) + self.tolerance
            if len(frame):
                distance = haversine_m(anchor[0], anchor[1], frame[:, 0], frame[:, 1])
                reachable = np.flatnonzero(distance <= reach)
                if len(reachable):
                    picked, state = int(reachable[np.argmax(frame[reachable, 2])]), "tracked"
                elif self.missed + 1 >= self.patience:
                    picked, state = int(np.argmax(frame[:, 2])), "reset"
        if picked >= 0:
            self.anchor = (float(frame[picked, 0]), float(frame[picked, 1]), float(time))
            self.missed = 0
        else:
            self.missed += 1
        if self.anchor is None:
            return np.nan, np.nan, picked, state
        return self.anchor[0], self.anchor[1], picked, state


def track(
    candidates: Sequence,
    max_speed: float,
    tolerance: float,
    times: Sequence[float] | None = None,
    frame_interval: float | None = None,
    patience: int = 3,
) -> Track:
    """Filter per-frame candidates (each a sequence of (latitude, longitude, score) rows, any order) into one
    position per frame; see the module docstring for the exact rule.

    Args:
        max_speed: metres per second the drone can fly (ground speed, with a margin for wind).
        tolerance: metres always added to the reach, typically the gallery's tile size.
        times / frame_interval: seconds of each frame, or between consecutive frames (exactly one of them).
        patience: missed frames in a row that reset the track (>= 1).
    """
    frames = [_as_candidates(frame, i) for i, frame in enumerate(candidates)]
    tracker = Tracker(max_speed, tolerance, patience)
    if (times is None) == (frame_interval is None):
        raise LpnEdgeError("give exactly one of the frame times (s) or the frame interval (s)")
    if times is None:
        if not frame_interval > 0:
            raise LpnEdgeError(f"the frame interval must be positive (s), got {frame_interval}")
        stamps = np.arange(len(frames)) * float(frame_interval)
    else:
        stamps = np.asarray(times, np.float64)
        if len(stamps) != len(frames):
            raise LpnEdgeError(f"{len(stamps)} times for {len(frames)} frames")
        if len(stamps) > 1 and np.any(np.diff(stamps) < 0):
            raise LpnEdgeError("frame times must not decrease")
    latitude, longitude = np.full(len(frames), np.nan), np.full(len(frames), np.nan)
    choice = np.full(len(frames), -1)
    status: list[str] = []
    for index, (frame, stamp) in enumerate(zip(frames, stamps)):
        latitude[index], longitude[index], choice[index], state = tracker.step(frame, float(stamp))
        status.append(state)
    return Track(latitude, longitude, choice, status)
