"""Where the cameras of each view kind stand, and the lighting of each shot.

Drone views follow University-1652's flight pattern: the drone circles the target at three distances (short,
middle, long), always looking at it; the heading is random. Street and Google views are low oblique shots.
"""

from __future__ import annotations

import math

import numpy as np

from lpn_edge.data.synth.camera import Camera
from lpn_edge.data.synth.render import Look
from lpn_edge.data.synth.world import Building

# group -> ((horizontal distance range), (altitude range)) in metres; the pitch is about 45-50 degrees down
DRONE_GROUPS = {
    "short": ((42.0, 52.0), (48.0, 60.0)),
    "middle": ((66.0, 80.0), (76.0, 92.0)),
    "long": ((95.0, 115.0), (105.0, 125.0)),
}
DRONE_FOV = 50.0  # vertical field of view, degrees
STREET_FOV = 60.0
SATELLITE_EXTENT = 100.0  # metres covered by a satellite tile, centred on the target


def split_groups(count: int) -> list[str]:
    """The distance group of each of ``count`` drone views: as equal as possible, short first."""
    names = list(DRONE_GROUPS)
    sizes = [count // 3 + (i < count % 3) for i in range(3)]
    return [name for name, size in zip(names, sizes) for _ in range(size)]


def _orbit_camera(
    rng: np.random.Generator, distance: float, altitude: float, aim_height: float, fov: float, size: int,
    roll: float,
) -> Camera:
    heading = rng.uniform(0, 2 * math.pi)
    position = (-distance * math.sin(heading), -distance * math.cos(heading), altitude)
    aim = (*rng.normal(0, 2.0, size=2), aim_height)  # the target is near, not exactly at, the image centre
    return Camera.look_at(position, aim, fov, size, size, roll_deg=rng.normal(0, roll))


def drone_camera(rng: np.random.Generator, group: str, target: Building, size: int) -> Camera:
    (d_low, d_high), (a_low, a_high) = DRONE_GROUPS[group]
    return _orbit_camera(rng, rng.uniform(d_low, d_high), rng.uniform(a_low, a_high), target.height * 0.4,
                         DRONE_FOV, size, roll=2.0)


def street_camera(rng: np.random.Generator, target: Building, size: int) -> Camera:
    """A low oblique shot from a nearby rooftop or pole."""
    return _orbit_camera(rng, rng.uniform(50, 70), rng.uniform(9, 16), target.height * 0.5, STREET_FOV, size, 1.0)


def google_camera(rng: np.random.Generator, target: Building, size: int) -> Camera:
    """An oblique shot from higher up, like a 3-D map screenshot."""
    return _orbit_camera(rng, rng.uniform(70, 100), rng.uniform(35, 60), target.height * 0.5, 45.0, size, 0.5)


def random_look(rng: np.random.Generator) -> Look:
    """Brightness, white balance, contrast and haze of one shot (a different flight, hour or camera)."""
    warmth = rng.normal(0, 0.04)
    return Look(
        brightness=float(rng.uniform(0.82, 1.15)),
        white_balance=(1 + warmth + rng.normal(0, 0.015), 1 + rng.normal(0, 0.015), 1 - warmth + rng.normal(0, 0.015)),
        contrast=float(rng.uniform(0.85, 1.1)),
        visibility=float(rng.uniform(350, 1400)),
        haze=tuple(float(v) for v in np.array([196, 204, 214]) + rng.normal(0, 6, size=3)),  # type: ignore[arg-type]
        grain_seed=int(rng.integers(2**31)),
    )
