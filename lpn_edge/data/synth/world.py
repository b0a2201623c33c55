"""The geometry of one location's neighbourhood: roads, paved areas, buildings and trees, in metres.

Coordinates: x east, y north, z up, origin at the centre of the location's target building. A neighbourhood is
generated from one random generator only, so a (seed, location) pair always gives the same place.

The densities (buildings, copses, lots, fields, streets) are tuned for a square of half-side `BASE_HALF`; a larger
area (a synthetic flight's) gets proportionally more of each, drawn from the same random sequence, so that an
area of the base size is exactly the place it always was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

Color = tuple[int, int, int]

BASE_HALF = 170.0  # metres: the half-side the densities below are tuned for (a location's neighbourhood)


def _area_scale(half: float) -> float:
    """How many times more ground than a base neighbourhood (1.0 up to `BASE_HALF`: smaller areas as before)."""
    return max(1.0, (half / BASE_HALF) ** 2)


@dataclass(frozen=True)
class Rect:
    """An oriented rectangle: centre (cx, cy), size along its own axes (length, width), rotation in radians."""

    cx: float
    cy: float
    length: float
    width: float
    angle: float

    def corners(self, margin: float = 0.0) -> np.ndarray:
        """(4, 2) corners counter-clockwise, the rectangle grown by ``margin`` metres on every side."""
        half_l, half_w = self.length / 2 + margin, self.width / 2 + margin
        local = np.array([[-half_l, -half_w], [half_l, -half_w], [half_l, half_w], [-half_l, half_w]])
        c, s = math.cos(self.angle), math.sin(self.angle)
        return local @ np.array([[c, s], [-s, c]]) + (self.cx, self.cy)


@dataclass
class Building:
    """A union of rectangles extruded to one eave height; optionally a gable roof (single rectangle only)."""

    parts: list[Rect]
    height: float
    roof: Color
    wall: Color
    rise: float = 0.0  # gable roofs: ridge height above the eaves (the ridge runs along the rectangle's length)
    details: list[tuple[Rect, Color]] = field(default_factory=list)  # rooftop boxes (flat roofs only)
    windows: bool = True  # rows of windows on the facades (not on sheds)

    @property
    def centre(self) -> np.ndarray:
        return np.mean([(p.cx, p.cy) for p in self.parts], axis=0)


@dataclass(frozen=True)
class Tree:
    x: float
    y: float
    radius: float
    height: float  # crown top (m)
    color: Color


@dataclass(frozen=True)
class Road:
    start: tuple[float, float]
    end: tuple[float, float]
    width: float
    main: bool


@dataclass
class Neighbourhood:
    """Everything rendered for one location; ``buildings[0]`` is the target."""

    half: float  # the area is the square [-half, half]^2 (m)
    ground_seed: int  # seeds the ground texture (grass, soil, fields)
    grass: tuple[Color, Color]
    soil: Color
    roads: list[Road]
    fields: list[tuple[Rect, Color]]  # farmland parcels, ploughed along field_angle
    field_angle: float
    field_period: float  # spacing of the crop rows (m)
    paved: list[tuple[Rect, Color]]
    buildings: list[Building]
    trees: list[Tree]
    design: int  # which look-alike target design (see `TARGET_DESIGNS`)


# --- palettes -------------------------------------------------------------------------------------------------

GRASS = [((96, 122, 62), (124, 140, 78)), ((82, 110, 58), (140, 146, 90)), ((110, 126, 70), (150, 142, 96))]
SOILS = [(150, 128, 98), (136, 116, 90), (164, 146, 112)]
FLAT_ROOFS = [(176, 176, 172), (128, 128, 126), (96, 98, 102), (200, 198, 190), (140, 136, 118), (110, 118, 112)]
PITCHED_ROOFS = [(160, 78, 58), (132, 66, 50), (96, 80, 72), (120, 120, 126), (176, 102, 70)]
WALLS = [(214, 206, 190), (190, 180, 164), (226, 222, 214), (170, 150, 130), (200, 190, 170)]
TREE_GREENS = [(52, 86, 40), (62, 98, 46), (44, 74, 40), (76, 104, 52)]
PAVING = [(172, 170, 162), (150, 148, 144), (92, 92, 96)]
CROPS = [(196, 176, 112), (112, 140, 72), (124, 100, 76), (154, 160, 92), (176, 150, 96)]


def _jitter(rng: np.random.Generator, color: Color, amount: int = 10) -> Color:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)  # type: ignore


def _pick(rng: np.random.Generator, options: list) -> object:
    return options[int(rng.integers(len(options)))]


# --- the look-alike target designs ----------------------------------------------------------------------------
# Four designs shared by all locations: two locations with the same design look alike from above, so only the
# neighbourhood (the context the LPN paper argues for) tells them apart. Each is centred on the origin, where
# the satellite tile and the drone cameras are centred.

def _placed(x: float, y: float, angle: float, lx: float, ly: float, length: float, width: float) -> Rect:
    """A rectangle at (lx, ly) in the frame of a building at (x, y) rotated by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    return Rect(x + lx * c - ly * s, y + lx * s + ly * c, length, width, angle)


def _design_parts(design: int, angle: float) -> tuple[list[Rect], float, Color]:
    def r(lx: float, ly: float, length: float, width: float) -> Rect:
        return _placed(0.0, 0.0, angle, lx, ly, length, width)

    if design == 0:  # long hall
        return [r(0, 0, 38, 20)], 13.0, (188, 188, 182)
    if design == 1:  # L-shaped block: a bar and an arm rising from its west end
        return [r(0, -5, 32, 12), r(-10, 7, 12, 16)], 17.0, (150, 84, 64)
    if design == 2:  # tower
        return [r(0, 0, 20, 20)], 34.0, (92, 96, 104)
    return [r(0, 12, 34, 10), r(0, -12, 34, 10), r(12, 0, 10, 14), r(-12, 0, 10, 14)], 12.0, (120, 128, 140)


TARGET_DESIGNS = 4


def target_building(rng: np.random.Generator, design: int, angle: float) -> Building:
    parts, height, roof = _design_parts(design, angle)
    details = [
        (Rect(p.cx + dx, p.cy + dy, 3.0, 2.5, angle), (210, 210, 206))
        for p in parts[:1]
        for dx, dy in rng.uniform(-4, 4, size=(2, 2))
    ]
    return Building(parts, height * rng.uniform(0.95, 1.05), _jitter(rng, roof, 6), _jitter(rng, (208, 200, 186)),
                    details=details)


# --- placement ------------------------------------------------------------------------------------------------

class Occupancy:
    """A 1 m raster of the ground already taken (roads, buildings, ...), for rejection sampling."""

    def __init__(self, half: float) -> None:
        self.half = half
        self.size = int(2 * half)
        self.image = Image.new("L", (self.size, self.size), 0)
        self.draw = ImageDraw.Draw(self.image)

    def _pixels(self, points: np.ndarray) -> list[tuple[float, float]]:
        return [(x + self.half, self.half - y) for x, y in points]

    def add_polygon(self, corners: np.ndarray) -> None:
        self.draw.polygon(self._pixels(corners), fill=255)

    def add_road(self, road: Road, margin: float) -> None:
        self.draw.line(self._pixels(np.array([road.start, road.end])), fill=255, width=int(road.width + 2 * margin))

    def is_free(self, corners: np.ndarray) -> bool:
        """True when the polygon lies inside the area and touches nothing taken."""
        pixels = np.array(self._pixels(corners))
        low, high = np.floor(pixels.min(axis=0)).astype(int), np.ceil(pixels.max(axis=0)).astype(int)
        if low.min() < 0 or high.max() >= self.size:
            return False
        mask = Image.new("L", tuple(high - low + 1), 0)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in pixels - low], fill=255)
        # crop before converting: converting the whole raster per test made large areas quadratic
        taken = np.asarray(self.image.crop((int(low[0]), int(low[1]), int(high[0]) + 1, int(high[1]) + 1)))
        return not np.any((np.asarray(mask) > 0) & (taken > 0))


def road_network(rng: np.random.Generator, half: float, angle: float) -> list[Road]:
    """A rotated grid of streets around the target's block (some missing or partial) plus one main road."""
    spacing = rng.uniform(85, 120, size=2)
    offset = spacing * rng.uniform(-0.05, 0.05, size=2)
    span = 1.5 * half
    c, s = math.cos(angle), math.sin(angle)
    along = [np.array([c, s]), np.array([-s, c])]
    roads = []
    streets = max(3, math.ceil(half / 85.0) + 1)  # each side of the centre: enough to cross the area
    for axis in range(2):
        normal, direction = along[1 - axis], along[axis]
        for k in range(-streets, streets):
            if rng.random() < 0.2:
                continue  # a missing street: blocks of different sizes
            distance = offset[axis] + (k + 0.5) * spacing[axis]
            if abs(distance) > half:
                continue
            start, end = -span, span
            if rng.random() < 0.3:  # a dead end
                start, end = (rng.uniform(-span, 0), span) if rng.random() < 0.5 else (-span, rng.uniform(0, span))
            base = normal * distance
            roads.append(Road(tuple(base + direction * start), tuple(base + direction * end),
                              float(rng.uniform(6, 8.5)), main=False))
    main_angle = rng.uniform(0, math.pi)
    main_dir = np.array([math.cos(main_angle), math.sin(main_angle)])
    main_normal = np.array([-main_dir[1], main_dir[0]])
    base = main_normal * rng.choice([-1, 1]) * rng.uniform(48, 75)
    roads.append(Road(tuple(base - main_dir * span), tuple(base + main_dir * span), float(rng.uniform(11, 14)), True))
    for _ in range(round(half / (2 * BASE_HALF)) - 1):  # large areas: more main roads, anywhere
        main_angle = rng.uniform(0, math.pi)
        main_dir = np.array([math.cos(main_angle), math.sin(main_angle)])
        base = np.array([-main_dir[1], main_dir[0]]) * rng.uniform(-0.8 * half, 0.8 * half)
        roads.append(Road(tuple(base - main_dir * span), tuple(base + main_dir * span), float(rng.uniform(11, 14)),
                          True))
    return roads


def _random_building(rng: np.random.Generator, cx: float, cy: float, angle: float) -> Building:
    kind = rng.choice(["house", "block", "ell", "shed"], p=[0.45, 0.3, 0.15, 0.1])
    if kind == "house":
        length, width = rng.uniform(9, 15), rng.uniform(7, 10)
        roof = _jitter(rng, _pick(rng, PITCHED_ROOFS))
        return Building([Rect(cx, cy, length, width, angle)], rng.uniform(4, 7), roof, _jitter(rng, _pick(rng, WALLS)),
                        rise=width * rng.uniform(0.25, 0.4))
    if kind == "ell":  # a bar of length a and width b, with an arm of length arm at one end
        a, b, arm = rng.uniform(18, 30), rng.uniform(9, 13), rng.uniform(16, 26)
        parts = [_placed(cx, cy, angle, 0, 0, a, b), _placed(cx, cy, angle, (a - b) / 2, (arm - b) / 2, b, arm)]
        height = rng.uniform(6, 16)
    elif kind == "shed":
        length, width = rng.uniform(26, 48), rng.uniform(12, 18)
        return Building([Rect(cx, cy, length, width, angle)], rng.uniform(5, 8), _jitter(rng, _pick(rng, FLAT_ROOFS)),
                        _jitter(rng, (176, 178, 180)), windows=False)
    else:
        parts, height = [Rect(cx, cy, rng.uniform(15, 32), rng.uniform(12, 22), angle)], rng.uniform(8, 26)
    roof = _jitter(rng, _pick(rng, FLAT_ROOFS))
    details = [
        (Rect(parts[0].cx + dx, parts[0].cy + dy, rng.uniform(1.5, 4), rng.uniform(1.5, 3), angle),
         _jitter(rng, (196, 196, 192), 20))
        for dx, dy in rng.uniform(-0.3, 0.3, size=(int(rng.integers(0, 4)), 2)) * parts[0].width
    ]
    return Building(parts, float(height), roof, _jitter(rng, _pick(rng, WALLS)), details=details)


def place_buildings(rng: np.random.Generator, occupancy: Occupancy, angle: float, half: float) -> list[Building]:
    density = rng.uniform(0.35, 1.0)  # rural to dense: locations differ in how built-up they are
    buildings = []
    for _ in range(int(260 * density * _area_scale(half))):
        cx, cy = rng.uniform(-half + 6, half - 6, size=2)
        rotation = angle + math.pi / 2 * int(rng.integers(4)) + rng.normal(0, 0.03)
        if rng.random() < 0.1:
            rotation = rng.uniform(0, math.pi)
        building = _random_building(rng, float(cx), float(cy), rotation)
        if all(occupancy.is_free(part.corners(margin=2.5)) for part in building.parts):
            for part in building.parts:
                occupancy.add_polygon(part.corners(margin=1.0))
            buildings.append(building)
    return buildings


def place_trees(rng: np.random.Generator, occupancy: Occupancy, roads: list[Road], half: float) -> list[Tree]:
    def tree_at(x: float, y: float) -> Tree | None:
        radius = float(rng.uniform(2.2, 4.5))
        square = Rect(x, y, 2 * radius, 2 * radius, 0.0).corners(margin=-0.5 * radius)
        if not occupancy.is_free(square):
            return None
        occupancy.add_polygon(Rect(x, y, radius, radius, 0.0).corners())
        return Tree(x, y, radius, float(rng.uniform(6, 13)), _jitter(rng, _pick(rng, TREE_GREENS), 8))

    candidates: list[tuple[float, float]] = []
    for _ in range(int(rng.integers(3, 10) * _area_scale(half))):  # copses and parks
        centre, spread = rng.uniform(-half, half, size=2), rng.uniform(6, 20)
        candidates += [tuple(p) for p in centre + rng.normal(0, spread, size=(int(rng.integers(5, 30)), 2))]
    for road in roads:  # alleys along some streets
        if rng.random() < 0.35:
            start, end = np.array(road.start), np.array(road.end)
            direction = (end - start) / np.linalg.norm(end - start)
            side = np.array([-direction[1], direction[0]]) * (road.width / 2 + 3.5) * rng.choice([-1, 1])
            step = rng.uniform(8, 12)
            for t in np.arange(0, np.linalg.norm(end - start), step):
                candidates.append(tuple(start + direction * t + side))
    trees = []
    for x, y in candidates:
        if abs(x) < half - 3 and abs(y) < half - 3:
            tree = tree_at(float(x), float(y))
            if tree is not None:
                trees.append(tree)
    return trees


def generate_neighbourhood(rng: np.random.Generator, half: float = 170.0) -> Neighbourhood:
    """A random neighbourhood around a target building of a random look-alike design."""
    angle = float(rng.uniform(0, math.pi / 2))
    design = int(rng.integers(TARGET_DESIGNS))
    target = target_building(rng, design, angle + math.pi / 2 * int(rng.integers(4)))
    occupancy = Occupancy(half)
    roads = road_network(rng, half, angle)
    for road in roads:
        occupancy.add_road(road, margin=1.5)
    plaza = Rect(0.0, 0.0, 38 + rng.uniform(10, 26), 38 + rng.uniform(10, 26), angle)
    paved = [(plaza, _jitter(rng, _pick(rng, PAVING), 6))]
    occupancy.add_polygon(plaza.corners())
    for _ in range(int(rng.integers(0, 4) * _area_scale(half))):  # parking lots and yards elsewhere
        lot = Rect(*rng.uniform(-half * 0.8, half * 0.8, size=2), rng.uniform(15, 40), rng.uniform(12, 30), angle)
        if occupancy.is_free(lot.corners()):
            occupancy.add_polygon(lot.corners())
            paved.append((lot, _jitter(rng, _pick(rng, PAVING), 6)))
    fields = []
    for _ in range(int(rng.integers(0, 6) * _area_scale(half))):  # farmland keeps its ground free of buildings
        parcel = Rect(*rng.uniform(-half, half, size=2), rng.uniform(35, 90), rng.uniform(25, 60), angle)
        if occupancy.is_free(parcel.corners(margin=-4)):
            occupancy.add_polygon(parcel.corners())
            fields.append((parcel, _jitter(rng, _pick(rng, CROPS), 8)))
    buildings = [target] + place_buildings(rng, occupancy, angle, half)
    trees = place_trees(rng, occupancy, roads, half)
    return Neighbourhood(
        half=half,
        ground_seed=int(rng.integers(2**31)),
        grass=_pick(rng, GRASS),  # type: ignore[arg-type]
        soil=_pick(rng, SOILS),  # type: ignore[arg-type]
        roads=roads,
        fields=fields,
        field_angle=angle,
        field_period=float(rng.uniform(2.5, 5.0)),
        paved=paved,
        buildings=buildings,
        trees=trees,
        design=design,
    )
