"""Perspective views of a neighbourhood (drone and street cameras).

The ground is the orthophoto's ground layer warped onto the image: each pixel's ray is intersected with the plane
z = 0 and the ortho is sampled there (the inverse of a homography, bilinear, from a mip pyramid so that distant
ground does not alias). Buildings and tree crowns are then drawn as projected 3-D polygons, far to near (the
painter's algorithm), so roofs and facades show the parallax of their height. Haze grows with distance; the
colour of each view is then graded (brightness, white balance, contrast) to mimic different flights.

`Scene` holds what does not change between the views of one location (pyramid, 3-D faces and their lit colours),
so a view costs one ground warp plus drawing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from lpn_edge.data.resample import bilinear_sample
from lpn_edge.data.synth.camera import NEAR, Camera, clip_near
from lpn_edge.data.synth.ortho import SHADOW_TINT, SUN, Ortho, roof_faces
from lpn_edge.data.synth.world import Building, Neighbourhood

_FLOOR = 3.0  # storey height (m) for the window bands
_WINDOW = (64, 74, 88)
_ZENITH = np.array([120, 156, 200], np.float32)
_MIP_LEVELS = 4


@dataclass(frozen=True)
class Look:
    """The photometric conditions of one view."""

    brightness: float  # overall gain
    white_balance: tuple[float, float, float]  # per-channel gains
    contrast: float  # around mid-grey
    visibility: float  # metres at which haze covers 63 % of the colour
    haze: tuple[float, float, float]  # colour of the haze / horizon sky
    grain_seed: int


# --- ground -----------------------------------------------------------------------------------------------------

class GroundPyramid:
    """The ortho's ground layer at 1, 1/2, 1/4, 1/8 resolution (box filtered) for distance-dependent sampling."""

    def __init__(self, ortho: Ortho) -> None:
        self.ortho = ortho
        image = Image.fromarray(ortho.ground)
        self.levels = [ortho.ground]
        for _ in range(_MIP_LEVELS - 1):
            image = image.reduce(2)
            self.levels.append(np.asarray(image))

    def sample(self, x: np.ndarray, y: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Colours (N, 3) at world points (N,) whose pixel footprint is ``footprint`` ortho pixels wide.

        Trilinear: bilinear in the two pyramid levels around log2(footprint), blended.
        """
        col, row = self.ortho.pixel_coords(x, y)
        level = np.clip(np.log2(np.maximum(footprint, 1e-6)), 0, _MIP_LEVELS - 1 - 1e-3)
        below = level.astype(np.int64)
        out = np.empty((len(x), 3), np.float32)
        for lvl in range(_MIP_LEVELS - 1):
            chosen = np.flatnonzero(below == lvl)
            if not len(chosen):
                continue
            blend = (level[chosen] - lvl)[:, None]
            colors = []
            for k in (lvl, lvl + 1):
                scale = 2.0**k  # pixel centres of level k sit at (index + 0.5) * scale - 0.5 in level-0 indices
                colors.append(bilinear_sample(
                    self.levels[k], (col[chosen] + 0.5) / scale - 0.5, (row[chosen] + 0.5) / scale - 0.5, "reflect"
                ))
            out[chosen] = colors[0] + (colors[1] - colors[0]) * blend
        return out


def _ground_layer(pyramid: GroundPyramid, camera: Camera, look: Look) -> np.ndarray:
    """Ground (hazed) and sky colours of every pixel: (height, width, 3) float32."""
    rays = camera.pixel_rays().reshape(-1, 3).astype(np.float32)
    lengths = np.sqrt(np.einsum("ij,ij->i", rays, rays))
    down = -rays[:, 2] / lengths  # sine of the angle below the horizon
    haze = np.array(look.haze, np.float32)
    hits = down > 1e-4
    all_ground = bool(hits.all())  # the usual drone view: no sky, skip the masking
    if not all_ground:
        colors = np.empty((len(rays), 3), np.float32)
        colors[~hits] = haze + (_ZENITH - haze) * np.clip(-down[~hits], 0, 1)[:, None]
        rays, lengths, down = rays[hits], lengths[hits], down[hits]
    cx, cy, cz = (float(v) for v in camera.position)  # Python floats keep the arrays float32
    t = cz / (down * lengths)  # ray parameter where z reaches 0
    distance = t * lengths
    x = cx + t * rays[:, 0]
    y = cy + t * rays[:, 1]
    # ground metres covered by one pixel: distance / focal across the ray, stretched by 1/sin(grazing angle)
    footprint = distance * (pyramid.ortho.ppm / camera.focal) / np.sqrt(np.maximum(down, 0.05))
    ground = pyramid.sample(x, y, footprint)
    ground += (haze - ground) * (1 - np.exp(-distance / look.visibility))[:, None]
    if all_ground:
        return ground.reshape(camera.height, camera.width, 3)
    colors[hits] = ground
    return colors.reshape(camera.height, camera.width, 3)


# --- 3-D objects --------------------------------------------------------------------------------------------------

def _lit(color, normal: np.ndarray) -> np.ndarray:
    """A facade colour under the sun: full colour facing it, the blue shade colour facing away."""
    direct = max(0.0, float(normal @ SUN))
    return np.asarray(color, np.float32) * (SHADOW_TINT + (1 - SHADOW_TINT) * min(1.0, 1.6 * direct))


@dataclass
class _Solid:
    """A building or tree ready to draw: polygons in drawing order groups, with their (unhazed) colours.

    Walls are drawn if they face the camera, sorted far to near; the windows of a wall follow it. Roofs and
    rooftop boxes come after all walls (a roof is never hidden by a wall of its own building).
    """

    centre: np.ndarray  # (3,) for the painter's order and culling
    radius: float
    walls: list[tuple[np.ndarray, np.ndarray, np.ndarray, list]]  # (quad, normal, colour, [(band, colour)])
    tops: list[tuple[np.ndarray, np.ndarray]]  # (polygon, colour): roofs, then rooftop boxes
    crown: tuple[float, np.ndarray] | None = None  # trees: (radius, colour); centre is the crown centre


def _wall_faces(building: Building) -> list[tuple[np.ndarray, np.ndarray]]:
    """Wall quads (4, 3) with outward normals, plus gable triangles for a pitched roof."""
    faces = []
    for part in building.parts:
        corners = part.corners()
        for i in range(4):
            a, b = corners[i], corners[(i + 1) % 4]
            edge = b - a
            normal = np.array([edge[1], -edge[0], 0.0]) / np.linalg.norm(edge)  # counter-clockwise: outward right
            top = building.height
            quad = np.array([[a[0], a[1], 0.0], [b[0], b[1], 0.0], [b[0], b[1], top], [a[0], a[1], top]])
            faces.append((quad, normal))
            if building.rise > 0 and i in (1, 3):  # the short sides carry the gables
                faces.append((np.array([quad[3], quad[2], [*(a + b) / 2, top + building.rise]]), normal))
    return faces


def _window_bands(quad: np.ndarray, height: float) -> list[np.ndarray]:
    """Dark horizontal bands, one per storey, inset 1 m from the wall's ends."""
    if len(quad) != 4:
        return []
    a, b = quad[0], quad[1]
    length = float(np.linalg.norm(b[:2] - a[:2]))
    if length < 4:
        return []
    a, b = a + (b - a) / length, b - (b - a) / length
    return [
        np.array([[a[0], a[1], low], [b[0], b[1], low], [b[0], b[1], low + 1.2], [a[0], a[1], low + 1.2]])
        for low in np.arange(int(height // _FLOOR)) * _FLOOR + 0.9
    ]


def _prepare_building(building: Building) -> _Solid:
    walls = []
    for quad, normal in _wall_faces(building):
        bands = _window_bands(quad, building.height) if building.windows else []
        walls.append((quad, normal, _lit(building.wall, normal), [(band, _lit(_WINDOW, normal)) for band in bands]))
    tops = [(vertices, np.asarray(building.roof, np.float32) * light) for vertices, light in roof_faces(building)]
    tops += [
        (np.column_stack([box.corners(), np.full(4, building.height + 0.05)]), np.asarray(color, np.float32))
        for box, color in building.details
    ]
    radius = max(max(p.length, p.width) for p in building.parts) + building.height
    return _Solid(np.array([*building.centre, building.height / 2]), radius, walls, tops)


class Scene:
    """One location, prepared for rendering many views."""

    def __init__(self, hood: Neighbourhood, ortho: Ortho) -> None:
        self.pyramid = GroundPyramid(ortho)
        self.solids = [_prepare_building(b) for b in hood.buildings]
        for tree in hood.trees:
            crown = (tree.radius, np.asarray(tree.color, np.float32))
            self.solids.append(
                _Solid(np.array([tree.x, tree.y, tree.height - tree.radius]), tree.radius, [], [], crown)
            )


class _Painter:
    """Projects and draws polygons onto the image, hazed by the distance of the object they belong to."""

    def __init__(self, camera: Camera, look: Look, image: Image.Image) -> None:
        self.camera, self.look = camera, look
        self.draw = ImageDraw.Draw(image)
        self.haze = np.array(look.haze, np.float32)
        self.fog = 0.0

    def set_distance(self, distance: float) -> None:
        self.fog = 1 - math.exp(-distance / self.look.visibility)

    def color(self, color: np.ndarray) -> tuple[int, int, int]:
        mixed = color + (self.haze - color) * self.fog
        return (int(mixed[0]), int(mixed[1]), int(mixed[2]))

    def polygon(self, vertices: np.ndarray, color: np.ndarray) -> None:
        points = self.camera.to_camera(vertices)
        if points[:, 2].min() < NEAR:
            points = clip_near(points)
            if len(points) < 3:
                return
        pixels = self.camera.to_pixels(points)
        self.draw.polygon(list(map(tuple, pixels)), fill=self.color(color))

    def disc(self, u: float, v: float, r: float, color: np.ndarray) -> None:
        self.draw.ellipse([u - r, v - r, u + r, v + r], fill=self.color(color))


def _in_view(camera: Camera, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Rough frustum test of bounding spheres (N,): in front of the camera and near the image."""
    points = camera.to_camera(centres)
    depth = points[:, 2]
    safe = np.maximum(depth, NEAR)
    pixels = points[:, :2] / safe[:, None] * camera.focal + (camera.width / 2, camera.height / 2)
    margin = radii * camera.focal / safe
    inside = (
        (pixels[:, 0] > -margin) & (pixels[:, 0] < camera.width + margin)
        & (pixels[:, 1] > -margin) & (pixels[:, 1] < camera.height + margin)
    )
    return (depth > -radii) & ((depth <= NEAR + radii) | inside)


def _draw_solid(painter: _Painter, solid: _Solid) -> None:
    camera = painter.camera
    if solid.crown is not None:
        radius, color = solid.crown
        point = camera.to_camera(solid.centre[None])
        if point[0, 2] < NEAR + radius:
            return
        (u, v), = camera.to_pixels(point)
        r = radius * camera.focal / point[0, 2]
        painter.disc(u, v, r, color * 0.75)
        # the sunlit side of the crown, shifted towards where the sun is in the image
        (su, sv), = camera.to_pixels(camera.to_camera((solid.centre + SUN * radius)[None]))
        shift = np.array([su - u, sv - v])
        shift *= r * 0.3 / max(float(np.linalg.norm(shift)), 1e-6)
        painter.disc(u + shift[0], v + shift[1], r * 0.65, color * 1.1)
        return
    to_camera = camera.position
    visible = [w for w in solid.walls if float(w[1] @ (to_camera - w[0][0])) > 0]
    visible.sort(key=lambda w: -float(np.sum((w[0].mean(axis=0) - to_camera) ** 2)))
    for quad, _normal, color, bands in visible:
        painter.polygon(quad, color)
        for band, band_color in bands:
            painter.polygon(band, band_color)
    tops = sorted(solid.tops, key=lambda t: -float(np.sum((t[0].mean(axis=0) - to_camera) ** 2)))
    for polygon, color in tops:
        painter.polygon(polygon, color)


def _grade(image: np.ndarray, look: Look) -> np.ndarray:
    height, width = image.shape[:2]
    image = image * (np.array(look.white_balance, np.float32) * look.brightness)
    image = (image - 128.0) * look.contrast + 128.0
    grain = np.random.default_rng(look.grain_seed).standard_normal((height, width), dtype=np.float32)
    image *= (1 + 0.015 * grain)[..., None]  # sensor noise
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def render_view(scene: Scene, camera: Camera, look: Look) -> np.ndarray:
    """Render what ``camera`` sees of the scene under ``look``: (height, width, 3) uint8."""
    image = Image.fromarray(np.clip(_ground_layer(scene.pyramid, camera, look), 0, 255).astype(np.uint8))
    painter = _Painter(camera, look, image)
    centres = np.array([s.centre for s in scene.solids])
    radii = np.array([s.radius for s in scene.solids])
    shown = np.flatnonzero(_in_view(camera, centres, radii))
    distances = np.linalg.norm(centres[shown] - camera.position, axis=1)
    for index, distance in sorted(zip(shown, distances), key=lambda item: -item[1]):  # far to near
        painter.set_distance(float(distance))
        _draw_solid(painter, scene.solids[index])
    return _grade(np.asarray(image, np.float32), look)
