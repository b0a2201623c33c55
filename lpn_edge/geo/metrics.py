"""How well a flight was localised: position error in metres, and how often the true tile was retrieved.

* `position_errors`: per frame, the great-circle distance (haversine, metres) between the estimated and the true
  position.
* `summarize_errors`: median, 90th percentile (numpy's linear interpolation between order statistics), mean,
  maximum, and the share of frames within 25 m and 50 m (``error <= threshold``).
* `true_tiles`: the true tile of each frame is the gallery tile whose centre is nearest its true position; with
  ``tile_size_m`` given, a frame outside every tile's square (beyond the gallery) gets -1, which no ranking hits.
* `topk_hit_rates`: the share of frames whose true tile is among the first k ranked tiles, for each k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.geo.georef import haversine_m, metres_per_degree

THRESHOLDS_M = (25.0, 50.0)


def _column(name: str, values, length: int | None = None) -> np.ndarray:
    array = np.asarray(values, np.float64).reshape(-1)
    if length is not None and len(array) != length:
        raise LpnEdgeError(f"{name} has {len(array)} values, expected {length} (one per frame)")
    if not np.all(np.isfinite(array)):
        raise LpnEdgeError(f"{name} holds a value that is not a finite number")
    return array


def position_errors(est_lat, est_lon, true_lat, true_lon) -> np.ndarray:
    """Per-frame error in metres between estimated and true WGS84 positions (degrees)."""
    true_lat = _column("true latitude", true_lat)
    n = len(true_lat)
    return haversine_m(_column("estimated latitude", est_lat, n), _column("estimated longitude", est_lon, n),
                       true_lat, _column("true longitude", true_lon, n))


@dataclass(frozen=True)
class ErrorSummary:
    frames: int
    median_m: float
    p90_m: float
    mean_m: float
    max_m: float
    within: dict[float, float]  # threshold (m) -> share of frames with error <= threshold

    def as_dict(self) -> dict:
        return {"frames": self.frames, "median_m": self.median_m, "p90_m": self.p90_m, "mean_m": self.mean_m,
                "max_m": self.max_m, **{f"within_{t:g}m": share for t, share in self.within.items()}}

    def __str__(self) -> str:
        within = ", ".join(f"{100 * share:.1f} % within {t:g} m" for t, share in self.within.items())
        return (f"position error over {self.frames} frames: median {self.median_m:.1f} m, 90th percentile "
                f"{self.p90_m:.1f} m, mean {self.mean_m:.1f} m, max {self.max_m:.1f} m; {within}")


def summarize_errors(errors_m, thresholds: Sequence[float] = THRESHOLDS_M) -> ErrorSummary:
    errors = _column("errors", errors_m)
    if not len(errors):
        raise LpnEdgeError("no frames to summarise")
    return ErrorSummary(
        frames=len(errors),
        median_m=float(np.median(errors)),
        p90_m=float(np.percentile(errors, 90)),
        mean_m=float(errors.mean()),
        max_m=float(errors.max()),
        within={float(t): float(np.mean(errors <= t)) for t in thresholds},
    )


def true_tiles(true_lat, true_lon, tile_lat, tile_lon, tile_size_m: float | None = None) -> np.ndarray:
    """Index of each frame's true tile: the tile whose centre is nearest its true position (the first of equals).

    With ``tile_size_m``, a frame whose position lies in no tile's square (centre +- half the size, east-west and
    north-south) gets -1. Distances are local metres (fine for tiles, not for continents).
    """
    true_lat, true_lon = _column("true latitude", true_lat), _column("true longitude", true_lon, len(true_lat))
    tile_lat = _column("tile latitude", tile_lat)
    tile_lon = _column("tile longitude", tile_lon, len(tile_lat))
    if not len(tile_lat):
        raise LpnEdgeError("no tiles")
    lat_m, lon_m = metres_per_degree(float(np.mean(tile_lat)))
    north = (true_lat[:, None] - tile_lat[None, :]) * lat_m
    east = (true_lon[:, None] - tile_lon[None, :]) * lon_m
    nearest = np.argmin(north**2 + east**2, axis=1)
    if tile_size_m is not None:
        rows = np.arange(len(true_lat))
        inside = (np.abs(north[rows, nearest]) <= tile_size_m / 2) & (np.abs(east[rows, nearest]) <= tile_size_m / 2)
        nearest = np.where(inside, nearest, -1)
    return nearest


def topk_hit_rates(ranked, true, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Share of frames whose true tile is among the first k of its ranking, for each k.

    ``ranked``: per frame, tile ids (or indices) best first, at least max(ks) of them unless the gallery is
    smaller; ``true``: per frame, the true tile's id (or index; -1 or None for no true tile, never a hit).
    """
    ranked = [list(row) for row in ranked]
    true = list(true)
    if len(ranked) != len(true):
        raise LpnEdgeError(f"{len(ranked)} rankings but {len(true)} true tiles: one of each per frame")
    if not ranked:
        raise LpnEdgeError("no frames")
    return {int(k): float(np.mean([t in row[:k] for row, t in zip(ranked, true)])) for k in ks}
