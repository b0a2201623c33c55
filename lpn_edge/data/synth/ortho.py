"""Top-down rendering of a neighbourhood: the colour orthophoto (with cast shadows) and the height map.

The orthophoto is north-up: pixel (row, col) has its centre at x = -half + (col + 0.5) / ppm,
y = half - (row + 0.5) / ppm (metres), where ``ppm`` is pixels per metre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from lpn_edge.data.synth.noise import fractal_noise
from lpn_edge.data.synth.world import Building, Neighbourhood

# One sun for the whole world (the satellite images are taken at one time): in the south-south-east, so shadows
# fall to the north-north-west.
SUN_AZIMUTH = math.radians(155.0)  # clockwise from north
SUN_ELEVATION = math.radians(50.0)
SUN = np.array([math.sin(SUN_AZIMUTH) * math.cos(SUN_ELEVATION), math.cos(SUN_AZIMUTH) * math.cos(SUN_ELEVATION),
                math.sin(SUN_ELEVATION)])  # unit vector towards the sun (x east, y north, z up)
SHADOW_TINT = np.array([0.52, 0.55, 0.64], np.float32)  # what a full shadow multiplies colours by (skylight is blue)
_SHADOW_SOFTNESS = 0.8  # metres of occlusion over which a shadow goes from none to full (penumbra)
_SHADOW_CELL = 0.5  # metres: grid of the shadow computation


@dataclass
class Ortho:
    image: np.ndarray  # (n, n, 3) uint8, north up: what a satellite sees
    ground: np.ndarray  # (n, n, 3) uint8: the same without buildings and trees (perspective views extrude them)
    height: np.ndarray  # (n, n) float32 metres above ground (roofs, tree crowns)
    ppm: float  # pixels per metre
    half: float  # the image covers [-half, half]^2 metres

    def pixel_coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Array indices (col, row) of world points (metres), for `bilinear_sample`."""
        return (x + self.half) * self.ppm - 0.5, (self.half - y) * self.ppm - 0.5


class _Canvas:
    """Draws world-space polygons (metres) onto an image of ``ppm`` pixels per metre."""

    def __init__(self, image: Image.Image, half: float, ppm: float) -> None:
        self.image, self.half, self.ppm = image, half, ppm
        self.draw = ImageDraw.Draw(image)

    def px(self, points: np.ndarray) -> list[tuple[float, float]]:
        return [((x + self.half) * self.ppm, (self.half - y) * self.ppm) for x, y in points]

    def polygon(self, corners: np.ndarray, fill) -> None:
        self.draw.polygon(self.px(corners), fill=fill)

    def line(self, start, end, width_m: float, fill) -> None:
        self.draw.line(self.px(np.array([start, end])), fill=fill, width=max(1, int(round(width_m * self.ppm))))

    def disc(self, x: float, y: float, radius: float, fill) -> None:
        (cx, cy), = self.px(np.array([[x, y]]))
        r = radius * self.ppm
        self.draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)


def roof_faces(building: Building) -> list[tuple[np.ndarray, float]]:
    """The roof as planar polygons (k, 3) in metres with a brightness factor: one flat polygon per part, or two
    sloped halves for a gable roof (ridge along the rectangle's length, ``rise`` above the eaves).

    The factor is the sun's lighting of the face relative to a flat roof (the half facing the sun is brighter),
    shared by the orthophoto and the perspective views so that both agree.
    """
    eaves = building.height
    if building.rise <= 0:
        return [(np.column_stack([part.corners(), np.full(4, eaves)]), 1.0) for part in building.parts]
    part = building.parts[0]
    c = np.column_stack([part.corners(), np.full(4, eaves)])
    ridge = [(c[0] + c[3]) / 2 + (0, 0, building.rise), (c[1] + c[2]) / 2 + (0, 0, building.rise)]
    faces = []
    for half in (np.array([c[0], c[1], ridge[1], ridge[0]]), np.array([ridge[0], ridge[1], c[2], c[3]])):
        normal = np.cross(half[1] - half[0], half[3] - half[0])
        normal /= np.linalg.norm(normal) * np.sign(normal[2])  # upward
        faces.append((half, float(0.55 + 0.45 * max(0.0, normal @ SUN) / SUN[2])))
    return faces


def _ground(hood: Neighbourhood, n: int, rng: np.random.Generator) -> np.ndarray:
    """Grass with soil patches: (n, n, 3) float32 colours."""
    grass_a, grass_b = (np.array(c, np.float32) for c in hood.grass)
    mix = 1 / (1 + np.exp(-1.6 * fractal_noise(rng, n, n, cells=3, octaves=3)))
    ground = grass_a * mix[..., None] + grass_b * (1 - mix[..., None])
    soil = np.clip((fractal_noise(rng, n, n, cells=5, octaves=2) - 1.0) * 2.0, 0, 1)[..., None]
    return ground * (1 - soil) + np.array(hood.soil, np.float32) * soil


def _height_map(hood: Neighbourhood, n: int, ppm: float) -> np.ndarray:
    image = Image.new("F", (n, n), 0.0)
    canvas = _Canvas(image, hood.half, ppm)
    for building in sorted(hood.buildings, key=lambda b: b.height):
        for part in building.parts:
            canvas.polygon(part.corners(), float(building.height + building.rise / 2))
    for tree in hood.trees:
        canvas.disc(tree.x, tree.y, tree.radius, float(tree.height))
    return np.asarray(image, dtype=np.float32)


def _horizon(height: np.ndarray, metres_per_px: float) -> np.ndarray:
    """For each pixel, how high a point must be to see the sun: max over the path towards the sun of
    (height there - rise of the sun ray over that distance). A pixel lower than this is in shadow."""
    tan_elevation = math.tan(SUN_ELEVATION)
    steps = int(math.ceil(float(height.max()) / tan_elevation / metres_per_px)) + 1
    n = height.shape[0]
    pad = steps + 1
    padded = np.pad(height, pad)
    horizon = np.zeros_like(height)
    for step in range(1, steps + 1):
        dx = int(round(step * math.sin(SUN_AZIMUTH)))
        dy = int(round(-step * math.cos(SUN_AZIMUTH)))  # rows grow southwards
        shifted = padded[pad + dy : pad + dy + n, pad + dx : pad + dx + n]
        np.maximum(horizon, shifted - step * metres_per_px * tan_elevation, out=horizon)
    return horizon


def _shadow(fine_height: np.ndarray, half: float) -> np.ndarray:
    """Shadow strength 0..1 per orthophoto pixel.

    The horizon is computed on a coarser grid (cheap) from box-averaged heights, so that shadow edges come out
    anti-aliased; each fine pixel is then compared with its own height (a roof never shadows itself).
    """
    coarse_n = int(round(2 * half / _SHADOW_CELL))
    coarse = np.asarray(Image.fromarray(fine_height).resize((coarse_n, coarse_n), Image.Resampling.BOX))
    horizon = _horizon(coarse, _SHADOW_CELL)
    n = fine_height.shape[0]
    horizon_fine = np.asarray(Image.fromarray(horizon).resize((n, n), Image.Resampling.BILINEAR))
    return np.clip((horizon_fine - fine_height) / _SHADOW_SOFTNESS, 0.0, 1.0)


def _draw_roads(canvas: _Canvas, hood: Neighbourhood) -> None:
    for road in hood.roads:
        canvas.line(road.start, road.end, road.width + 2.5, (150, 148, 140))  # kerbs and pavements
    for road in hood.roads:
        canvas.line(road.start, road.end, road.width, (84, 84, 88) if road.main else (98, 97, 96))
    for road in hood.roads:
        if road.main:  # dashed centre line
            start, end = np.array(road.start), np.array(road.end)
            length = float(np.linalg.norm(end - start))
            direction = (end - start) / length
            for t in np.arange(0, length, 9.0):
                canvas.line(start + direction * t, start + direction * (t + 4.5), 0.3, (226, 226, 220))


def _draw_paved(canvas: _Canvas, hood: Neighbourhood) -> None:
    for rect, color in hood.paved:
        canvas.polygon(rect.corners(), color)
        if sum(color) < 330:  # dark asphalt: a car park, with bay lines along both long sides
            for side in (-1, 1):
                for t in np.arange(-rect.length / 2 + 1.5, rect.length / 2 - 1.5, 2.6):
                    c, s = math.cos(rect.angle), math.sin(rect.angle)
                    lx, ly = t, side * (rect.width / 2 - 2.5)
                    centre = np.array([rect.cx + lx * c - ly * s, rect.cy + lx * s + ly * c])
                    across = np.array([-s, c]) * 2.3
                    canvas.line(centre - across, centre + across, 0.15, (210, 210, 204))


def _shade(color, factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color)  # type: ignore[return-value]


def _draw_buildings(canvas: _Canvas, hood: Neighbourhood) -> None:
    for building in sorted(hood.buildings, key=lambda b: b.height):
        for part in building.parts:  # a darker rim (parapet / eaves) around the whole footprint
            canvas.polygon(part.corners(margin=0.35), _shade(building.roof, 0.7))
        for vertices, light in roof_faces(building):
            canvas.polygon(vertices[:, :2], _shade(building.roof, light))
        for box, color in building.details:
            canvas.polygon(box.corners(margin=0.2), _shade(color, 0.6))
            canvas.polygon(box.corners(), color)


def _draw_trees(canvas: _Canvas, hood: Neighbourhood) -> None:
    toward_sun = np.array([math.sin(SUN_AZIMUTH), math.cos(SUN_AZIMUTH)])
    for tree in hood.trees:
        canvas.disc(tree.x, tree.y, tree.radius, _shade(tree.color, 0.8))
        lit = np.array([tree.x, tree.y]) + toward_sun * tree.radius * 0.25
        canvas.disc(lit[0], lit[1], tree.radius * 0.6, _shade(tree.color, 1.15))


def render_ortho(hood: Neighbourhood, ppm: float) -> Ortho:
    """Render the neighbourhood top-down at ``ppm`` pixels per metre (north up, shadows cast by the sun)."""
    n = int(round(2 * hood.half * ppm))
    rng = np.random.default_rng(hood.ground_seed)
    canvas = _Canvas(Image.fromarray(np.clip(_ground(hood, n, rng), 0, 255).astype(np.uint8)), hood.half, ppm)
    fields = Image.new("L", (n, n), 0)
    field_canvas = _Canvas(fields, hood.half, ppm)
    for rect, color in hood.fields:
        canvas.polygon(rect.corners(), color)
        field_canvas.polygon(rect.corners(), 255)
    _draw_paved(canvas, hood)
    _draw_roads(canvas, hood)
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32) / ppm
    rows = np.sin(2 * np.pi * (xs * math.cos(hood.field_angle) + ys * math.sin(hood.field_angle)) / hood.field_period)
    # one multiplier for crop rows in the fields, patches of wear and dirt, and pixel grain
    texture = 1 + 0.12 * rows * (np.asarray(fields, np.float32) / 255)
    texture += 0.05 * fractal_noise(rng, n, n, cells=2 * hood.half / 8, octaves=2)
    texture += 0.04 * fractal_noise(rng, n, n, cells=n / 3, octaves=1)
    ground_layer = np.asarray(canvas.image, dtype=np.float32)
    _draw_buildings(canvas, hood)
    _draw_trees(canvas, hood)
    height = _height_map(hood, n, ppm)
    # shade = texture x shadow; roofs and crowns are never below their own horizon, so they stay unshadowed
    shade = (texture[..., None] * (1 - _shadow(height, hood.half)[..., None] * (1 - SHADOW_TINT))).astype(np.float32)

    def finish(layer: np.ndarray) -> np.ndarray:
        return np.clip(layer * shade + 0.5, 0, 255).astype(np.uint8)

    return Ortho(finish(np.asarray(canvas.image, np.float32)), finish(ground_layer), height, ppm, hood.half)
