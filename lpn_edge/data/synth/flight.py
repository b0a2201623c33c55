"""A synthetic flight: one contiguous geo-referenced area and the frames a drone's camera takes flying over it.

The area is one neighbourhood of the synthetic world (roads, fields, buildings, trees, sun shadows; see `world`)
``area`` metres square, centred on `FLIGHT_ORIGIN`. It is written as ``orthophoto.png`` (north up, the satellite
look) with its ESRI world file ``orthophoto.pgw`` in WGS84 degrees. The drone flies a smooth path (its curvature
wanders, bounded by a `TURN_RADIUS`; near the edges it turns back towards the centre; see `flight_path`) at
``speed`` m/s and takes a frame every ``interval`` seconds, looking forward along its
heading and down at `PITCH` degrees with the data generator's drone field of view (`views.DRONE_FOV`): the same
oblique views the model is trained on, rendered by `render.render_view`. The path keeps a margin from the edges
so that no frame sees beyond the area.

Files::

    orthophoto.png, orthophoto.pgw   the area and its georeference
    frames/<frame>.png               one image per frame, frame = 0000, 0001, ...
    flight.csv                       frame,latitude,longitude,heading,altitude,east_m,north_m,time_s,
                                     view_latitude,view_longitude
    flight.json                      the arguments (marks the folder as ours for --overwrite)

latitude/longitude are the drone's position; heading is degrees clockwise from north; east_m/north_m are metres
from the area's centre; view_latitude/view_longitude is the ground point at the centre of the frame (about
altitude / tan(PITCH) metres ahead of the drone), which is what a retrieved gallery tile shows. Everything is
byte-identical for a seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpn_edge.data.synth.camera import Camera
from lpn_edge.data.synth.generate import _prepare_output
from lpn_edge.data.synth.location import PNG_COMPRESSION, save_png
from lpn_edge.data.synth.ortho import render_ortho
from lpn_edge.data.synth.render import Scene, render_view
from lpn_edge.data.synth.views import DRONE_FOV, SATELLITE_EXTENT, random_look
from lpn_edge.data.synth.world import generate_neighbourhood
from lpn_edge.errors import LpnEdgeError
from lpn_edge.geo.georef import GeoRef, metres_per_degree, world_file_text

FLIGHT_ORIGIN = (46.95, 7.45)  # latitude, longitude of the area's centre (away from the synthetic world's)
FLIGHT_STREAM = 0xF1167  # seeds the flight apart from the world's locations (whose ids are below 10000)
MARKER = "flight.json"
PITCH = 48.0  # degrees below the horizon, as University-1652's orbits (altitude about 1.15 x distance)
TURN_RADIUS = 40.0  # metres: the tightest turn (smaller in a small area: at most a quarter of its inner side)
WANDER = 0.0012  # rad/m: how fast the path's curvature wanders, per metre (it relaxes by 2 % a metre)
ROLL = 1.5  # degrees: standard deviation of the camera's roll wobble
ORTHO_OVERSAMPLE = 1.5  # the orthophoto has this many pixels per frame pixel over a SATELLITE_EXTENT tile


@dataclass(frozen=True)
class FlightSummary:
    root: Path
    frames: int
    area_m: float
    orthophoto_px: int
    path_m: float
    seconds: float

    def __str__(self) -> str:
        return "\n".join([
            f"synthetic flight  {self.root}",
            f"orthophoto        {self.root / 'orthophoto.png'} ({self.orthophoto_px} x {self.orthophoto_px} px, "
            f"{self.area_m:g} m square) + orthophoto.pgw",
            f"frames            {self.frames} in {self.root / 'frames'}, {self.path_m:.0f} m flown",
            f"truth             {self.root / 'flight.csv'}",
            f"took              {self.seconds:.1f} s",
        ])


def _camera(east: float, north: float, altitude: float, heading_deg: float, size: int, roll: float) -> Camera:
    heading = math.radians(heading_deg)
    ahead = altitude / math.tan(math.radians(PITCH))
    aim = (east + ahead * math.sin(heading), north + ahead * math.cos(heading), 0.0)
    return Camera.look_at((east, north, altitude), aim, DRONE_FOV, size, size, roll_deg=roll)


def camera_reach(altitude: float) -> float:
    """Metres from the drone to the farthest ground point its frame shows (the upper image corners)."""
    camera = _camera(0.0, 0.0, altitude, 0.0, 64, 3 * ROLL)
    rays = camera.pixel_rays()[[0, 0, -1, -1], [0, -1, 0, -1]]
    if (rays[:, 2] >= 0).any():
        raise LpnEdgeError("the camera sees the sky")  # not with PITCH > DRONE_FOV / 2
    ground = rays[:, :2] * (altitude / -rays[:, 2:3])
    return float(np.linalg.norm(ground, axis=1).max())


def flight_path(rng: np.random.Generator, inner: float, frames: int, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions (frames, 2) east/north in metres inside [-inner, inner]^2, ``spacing`` metres apart along a
    smooth path, and the heading (degrees clockwise from north) of the path at each.

    The drone is stepped one metre at a time; its curvature wanders (a mean-reverting random walk) and never
    exceeds 1 / `TURN_RADIUS`; within `TURN_RADIUS` of the square's edge, unless already heading for the centre,
    it turns towards the centre as hard as it may.
    """
    radius = min(TURN_RADIUS, inner / 2)
    k_max = 1.0 / radius
    metres = int(math.ceil((frames - 1) * spacing)) + 2
    point = rng.uniform(-0.5 * inner, 0.5 * inner, size=2)
    heading = rng.uniform(0, 2 * math.pi)
    curvature = 0.0
    noise = rng.normal(0, WANDER, size=metres)
    track = np.empty((metres, 2))
    headings = np.empty(metres)
    for step in range(metres):
        track[step], headings[step] = point, heading
        curvature = 0.98 * curvature + noise[step]
        if inner - np.abs(point).max() < radius:
            towards = math.atan2(-point[0], -point[1])
            off = (towards - heading + math.pi) % (2 * math.pi) - math.pi
            if abs(off) > math.pi / 4:
                curvature = math.copysign(k_max, off)
        curvature = min(k_max, max(-k_max, curvature))
        heading += curvature
        point = np.clip(point + (math.sin(heading), math.cos(heading)), -inner, inner)
    along = np.arange(frames) * spacing
    positions = np.stack([np.interp(along, np.arange(metres), track[:, k]) for k in range(2)], axis=1)
    return positions, np.degrees(np.interp(along, np.arange(metres), headings)) % 360.0


def _check(name: str, value: float, low: float, high: float) -> float:
    if not (low <= value <= high):
        raise LpnEdgeError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def synth_flight(
    out_dir: str | Path,
    area: float = 1200.0,
    seed: int = 0,
    frames: int = 40,
    altitude: float = 90.0,
    size: int = 256,
    speed: float = 12.0,
    interval: float = 2.5,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> FlightSummary:
    """Write a synthetic area and a flight over it to ``out_dir`` (see the module docstring).

    ``speed`` (m/s) x ``interval`` (s) is the distance between frames; the orthophoto has about ``size / 100 x 1.5``
    pixels per metre (rounded to a whole number of pixels across the area), so that a 100 m gallery tile cut from it
    is 1.5 x finer than ``size``, as the synthetic world's satellite tiles are rendered.
    """
    started = time.perf_counter()
    frames = int(_check("--frames", frames, 1, 100_000))
    altitude = _check("--altitude", altitude, 20, 500)
    size = int(_check("--size", size, 32, 1024))
    _check("speed", speed, 0.1, 100)
    _check("interval", interval, 0.01, 3600)
    reach = camera_reach(altitude)
    margin = reach + 10.0
    if not 2 * margin + 100 <= area <= 20_000:
        raise LpnEdgeError(f"--area must be between {math.ceil(2 * margin + 100)} and 20000 m at --altitude "
                           f"{altitude:g} (the camera sees {reach:.0f} m around the drone), got {area:g}")
    # a whole number of pixels across the area, so that its centre is the image's centre
    ppm = round(area * size / SATELLITE_EXTENT * ORTHO_OVERSAMPLE) / area
    if (area * ppm) ** 2 > 400e6:
        raise LpnEdgeError(f"--area {area:g} at --size {size} would need a {area * ppm:.0f} px orthophoto; "
                           f"use a smaller --area or --size")
    out = Path(out_dir)
    try:
        partial = _prepare_output(out, overwrite, MARKER, "lpn-edge synth-flight")
    except OSError as exc:
        raise LpnEdgeError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    try:
        world_seq, path_seq, view_seq = np.random.SeedSequence([seed, FLIGHT_STREAM]).spawn(3)
        hood = generate_neighbourhood(np.random.default_rng(world_seq), half=area / 2)
        ortho = render_ortho(hood, ppm=ppm)
        save_png(ortho.image, partial / "orthophoto.png")
        lat0, lon0 = FLIGHT_ORIGIN
        lat_m, lon_m = metres_per_degree(lat0)
        n = ortho.image.shape[0]
        # pixel (row, col) centre is at x = -half + (col + 0.5) / ppm, y = half - (row + 0.5) / ppm (see ortho)
        georef = GeoRef(n, n, (1 / ppm / lon_m, 0.0, lon0 - hood.half / lon_m, 0.0, -1 / ppm / lat_m,
                               lat0 + hood.half / lat_m))
        (partial / "orthophoto.pgw").write_text(world_file_text(georef))

        positions, headings = flight_path(np.random.default_rng(path_seq), area / 2 - margin, frames,
                                          speed * interval)
        rng = np.random.default_rng(view_seq)
        look = random_look(rng)  # one flight, one light; the sensor noise differs per frame
        scene = Scene(hood, ortho)
        ahead = altitude / math.tan(math.radians(PITCH))
        width = max(4, len(str(frames - 1)))
        rows = ["frame,latitude,longitude,heading,altitude,east_m,north_m,time_s,view_latitude,view_longitude"]
        for index, ((east, north), heading) in enumerate(zip(positions, headings)):
            camera = _camera(float(east), float(north), altitude, float(heading), size, float(rng.normal(0, ROLL)))
            frame_look = dataclasses.replace(look, grain_seed=int(rng.integers(2**31)))
            name = f"{index:0{width}d}"
            save_png(render_view(scene, camera, frame_look), partial / "frames" / f"{name}.png")
            view_east = east + ahead * math.sin(math.radians(heading))
            view_north = north + ahead * math.cos(math.radians(heading))
            rows.append(f"{name},{lat0 + north / lat_m:.8f},{lon0 + east / lon_m:.8f},{heading:.2f},{altitude:g},"
                        f"{east:.2f},{north:.2f},{index * interval:.2f},{lat0 + view_north / lat_m:.8f},"
                        f"{lon0 + view_east / lon_m:.8f}")
            if progress is not None:
                progress(index + 1, frames)
        (partial / "flight.csv").write_text("\n".join(rows) + "\n")
        arguments = {"generator": "lpn-edge synth-flight", "format": 1, "area_m": area, "seed": seed,
                     "frames": frames, "altitude_m": altitude, "size": size, "speed_m_s": speed,
                     "interval_s": interval, "pitch_deg": PITCH, "fov_deg": DRONE_FOV, "origin": list(FLIGHT_ORIGIN),
                     "orthophoto_ppm": ppm, "png_compression": PNG_COMPRESSION}
        (partial / MARKER).write_text(json.dumps(arguments, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)  # empty, or an earlier flight of ours: checked by _prepare_output
        os.replace(partial, out)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise LpnEdgeError(f"writing the synthetic flight to {out} failed: {exc}") from exc
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    path_m = float(np.linalg.norm(np.diff(positions, axis=0), axis=1).sum()) if frames > 1 else 0.0
    return FlightSummary(out, frames, area, n, path_m, time.perf_counter() - started)
