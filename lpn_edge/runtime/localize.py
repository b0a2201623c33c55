"""Where am I? A camera frame -> the best gallery tiles and one position estimate (`lpn-edge locate`).

    Localizer(model, index, device="cpu", top_k=5, engine="auto", radius_m=None)
        model   an exported artifact opened with `runtime.encoders.open_encoder(model, device=device)`, or an
                object of the `Encoder` protocol
        index   one gallery index (.lpnidx) or several (the shards of one build, or neighbouring areas): each is
                memory-mapped and checked against the encoder (`check_gallery`), searched on its own, and the
                results merged: rows are numbered through the indexes in the order given, the best `top_k` overall
                are kept, higher score first and equal scores by ascending row -- the answer of one index holding
                them all in that order (the matching engines' tie rule).
        engine  the matching engine (`match_engines.open_matcher`, one query at a time: FAISS with one thread);
                "auto": the GPU when one answers, else FAISS when installed (a copy of each gallery in memory),
                else numpy (the gallery stays memory-mapped)
    .locate(frame)          (H, W, 3) uint8 RGB frame (or an image file) -> Location
    .locate_batch(frames)   several frames through one encoder call and one search -> [Location]

A camera loop calls `.locate(frame)` per frame: the (1, 3, H, W) float32 input buffer is allocated once and refilled
in place (resize, then `preprocessing.normalise(..., out=)`), so the batch-1 path allocates no input tensor per
frame; `locate_batch` keeps a buffer that grows to the largest batch seen.

Position estimate (`POSITION_RULE`, quoted by `lpn-edge locate --help`): the score-weighted centre of the top-k
tiles that lie close to the best one; exactly: see `estimate_position`.

Timings (seconds, per frame, in `Location.timings`): decode (reading an image file; 0 for a frame given as pixels),
preprocess (resize + normalise), encode (the encoder's `embed`) and match (the top-k search and the estimate). A
batch's times are shared equally among its frames.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.geo.georef import haversine_m, metres_per_degree
from lpn_edge.runtime.encoder import Encoder
from lpn_edge.runtime.gallery import GalleryIndex
from lpn_edge.runtime.match_engines import open_matcher
from lpn_edge.runtime.matching import select_topk
from lpn_edge.runtime.preprocessing import load_rgb, normalise, resize

RADIUS_SPACINGS = 1.5  # default R = this x the gallery's tile spacing
SPACING_SAMPLE = 1024  # tiles whose nearest neighbour is measured for the spacing
GALLERY_VIEW = "satellite"
TIMINGS = ("decode", "preprocess", "encode", "match")
POSITION_RULE = (  # `lpn-edge locate --help` says the same (a test checks)
    "among the top-k tiles with coordinates the best-scoring one is the anchor; every top-k tile whose centre is "
    "within R metres (great-circle) of the anchor's centre, the anchor included, is averaged (latitude and "
    "longitude) with weight max(score, 0); when all those weights are 0 the estimate is the anchor's centre. R is "
    "--radius, by default 1.5 x the gallery's tile spacing (the median distance from a tile centre to the nearest "
    "other tile centre, measured on up to 1024 tiles): on a grid of stride s it takes in the anchor's 8 neighbours "
    "(s and 1.41 s away), not the next ring (2 s). No top-k tile with coordinates: no estimate.")


@dataclass
class Location:
    """What `Localizer.locate` finds for one frame: the top-k tiles best first, and one position estimate."""

    rows: np.ndarray  # (k,) int64 gallery rows (numbered through the indexes in the order given)
    tiles: list[str]  # (k,) tile ids
    scores: np.ndarray  # (k,) float32 cosine similarities, best first
    latitude: np.ndarray  # (k,) float64 tile centres, NaN where a tile has no coordinates
    longitude: np.ndarray
    estimate: tuple[float, float]  # (latitude, longitude) degrees; NaN when no top-k tile has coordinates
    used: int  # top-k tiles averaged into the estimate
    radius_m: float  # R of the estimate
    timings: dict[str, float] = field(default_factory=dict)  # seconds: decode, preprocess, encode, match
    name: str = ""

    @property
    def positioned(self) -> np.ndarray:
        """Positions in the top k (int64, best first) of the tiles that have both coordinates."""
        return np.flatnonzero(np.isfinite(self.latitude) & np.isfinite(self.longitude))

    @property
    def candidates(self) -> np.ndarray:
        """(m, 3) rows (latitude, longitude, score) of the top-k tiles with coordinates (`positioned`), best first:
        what `lpn_edge.geo.track` takes."""
        known = self.positioned
        return np.stack([self.latitude[known], self.longitude[known], self.scores[known].astype(np.float64)], 1)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> None)."""
        def number(value: float) -> float | None:
            return float(value) if np.isfinite(value) else None

        return {"frame": self.name,
                "estimate": {"latitude": number(self.estimate[0]), "longitude": number(self.estimate[1]),
                             "tiles": self.used, "radius_m": round(self.radius_m, 3)},
                "tiles": [{"id": tile, "score": round(float(score), 6), "latitude": number(lat),
                           "longitude": number(lon)}
                          for tile, score, lat, lon in zip(self.tiles, self.scores, self.latitude, self.longitude)],
                "timings_ms": {key: round(1000 * value, 3) for key, value in self.timings.items()}}


def estimate_position(latitude: np.ndarray, longitude: np.ndarray, scores: np.ndarray, radius_m: float,
                      anchor: int | None = None) -> tuple[float, float, int]:
    """The position estimate of one frame's top-k tiles (best first) -> (latitude, longitude, tiles averaged).

    The rule (`POSITION_RULE`): the anchor is the best-scoring tile with coordinates (or the given `anchor`
    index, e.g. the candidate a sequence filter chose); the estimate is the mean latitude/longitude of the tiles
    within `radius_m` metres of the anchor's centre (great-circle, anchor included) weighted by max(score, 0), or
    the anchor's centre when those weights are all 0. No tile with coordinates: (NaN, NaN, 0).
    """
    latitude, longitude = np.asarray(latitude, np.float64), np.asarray(longitude, np.float64)
    scores = np.asarray(scores, np.float64)
    known = np.isfinite(latitude) & np.isfinite(longitude)
    if anchor is None:
        positioned = np.flatnonzero(known)
        if not len(positioned):
            return np.nan, np.nan, 0
        anchor = int(positioned[np.argmax(scores[positioned])])  # the first of equal scores
    elif not known[anchor]:
        raise LpnEdgeError(f"the anchor tile {anchor} has no coordinates")
    distance = np.full(len(latitude), np.inf)
    distance[known] = haversine_m(latitude[anchor], longitude[anchor], latitude[known], longitude[known])
    near = distance <= radius_m
    near[anchor] = True
    weights = np.maximum(scores[near], 0.0)
    if not weights.sum() > 0:
        return float(latitude[anchor]), float(longitude[anchor]), 1
    return (float(np.average(latitude[near], weights=weights)), float(np.average(longitude[near], weights=weights)),
            int(near.sum()))


def tile_spacing_m(latitude: np.ndarray, longitude: np.ndarray, sample: int = SPACING_SAMPLE,
                   block: int = 64) -> float:
    """The median distance (metres) from a tile centre to the nearest other tile centre, over up to `sample`
    tiles evenly spread through the gallery (against all tiles; local metres around each sampled tile; centres
    closer than 1 mm count as the same place). 0 when fewer than two tiles have coordinates."""
    latitude, longitude = np.asarray(latitude, np.float64), np.asarray(longitude, np.float64)
    known = np.isfinite(latitude) & np.isfinite(longitude)
    lat, lon = latitude[known], longitude[known]
    if len(lat) < 2:
        return 0.0
    picks = np.unique(np.linspace(0, len(lat) - 1, min(len(lat), sample)).round().astype(np.int64))
    along, _ = metres_per_degree(0.0)
    nearest = []
    for start in range(0, len(picks), block):
        rows = picks[start : start + block]
        north = (lat[None, :] - lat[rows, None]) * along
        east = (lon[None, :] - lon[rows, None]) * along * np.cos(np.radians(lat[rows, None]))
        squared = north**2 + east**2
        squared[squared < 1e-6] = np.inf  # the tile itself, or another at the same place
        nearest.append(np.sqrt(squared.min(1)))
    found = np.concatenate(nearest)
    found = found[np.isfinite(found)]
    return float(np.median(found)) if len(found) else 0.0


def check_gallery(index: GalleryIndex, info) -> None:
    """Refuse (one line naming both) a gallery another model built, or one of another dimension or view.

    The gallery must come from the same checkpoint (fingerprint) with the same dimension, and be of the satellite
    view (the cross-view gallery) or of the query encoder's own view (same-view retrieval; also a model whose drone
    and satellite branches share their weights, exported once)."""
    index.expect(info.fingerprint, None, info.dim)
    if index.view not in (GALLERY_VIEW, info.view):
        raise LpnEdgeError(f"gallery index {index.path} holds {index.view} embeddings but the query model "
                           f"{info.fingerprint} embeds the {info.view} view; build the gallery with the "
                           f"{GALLERY_VIEW} (or {info.view}) view of this model (lpn-edge index build)")


class Localizer:
    """Frames -> top-k gallery tiles and a position estimate; see the module docstring."""

    def __init__(self, model: str | os.PathLike | Encoder, index: str | os.PathLike | Sequence[str | os.PathLike],
                 device: str = "cpu", top_k: int = 5, engine: str = "auto", radius_m: float | None = None,
                 verify: bool = True, **encoder_options: Any) -> None:
        self._owns_encoder = isinstance(model, (str, os.PathLike))
        if self._owns_encoder:
            from lpn_edge.runtime.encoders import open_encoder

            self.encoder = open_encoder(Path(model), device=device, **encoder_options)
        else:
            self.encoder = model
        info = self.encoder.info
        self.info = info
        paths = [Path(index)] if isinstance(index, (str, os.PathLike)) else [Path(p) for p in index]
        if not paths:
            raise LpnEdgeError("give at least one gallery index")
        if top_k < 1:
            raise LpnEdgeError(f"top-k must be at least 1, got {top_k}")
        self.indexes: list[GalleryIndex] = []
        try:
            for path in paths:
                opened = GalleryIndex.open(path, verify=verify)
                self.indexes.append(opened)
                check_gallery(opened, info)
            self.matchers = [open_matcher(ix.embeddings, engine, one_query=True) for ix in self.indexes if ix.count]
        except BaseException:
            self.close()
            raise
        counts = [ix.count for ix in self.indexes if ix.count]
        if not counts:
            raise LpnEdgeError(f"the gallery ({', '.join(map(str, paths))}) holds no tiles")
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.count = int(sum(counts))
        self.top_k = min(int(top_k), self.count)
        self.engine = self.matchers[0].engine
        self.latitude = np.concatenate([np.asarray(ix.latitude, np.float64) for ix in self.indexes if ix.count])
        self.longitude = np.concatenate([np.asarray(ix.longitude, np.float64) for ix in self.indexes if ix.count])
        self._owners = [ix for ix in self.indexes if ix.count]
        if radius_m is not None and not (radius_m >= 0 and np.isfinite(radius_m)):
            raise LpnEdgeError(f"the radius must be a number of metres >= 0, got {radius_m}")
        self.spacing_m = tile_spacing_m(self.latitude, self.longitude)
        self.radius_m = float(radius_m) if radius_m is not None else RADIUS_SPACINGS * self.spacing_m
        height, width = (int(v) for v in info.input_size)
        self.input_size = (height, width)
        self._one = np.empty((1, 3, height, width), np.float32)  # the camera loop's buffer, refilled in place
        self._many = np.empty((0, 3, height, width), np.float32)

    # -- the steps ---------------------------------------------------------------------------------------------

    def _pixels(self, frame: Any) -> tuple[np.ndarray, float]:
        """(H, W, 3) uint8 RGB of a frame or an image file, and the seconds spent decoding."""
        if isinstance(frame, (str, os.PathLike)):
            begin = time.perf_counter()
            pixels = np.asarray(load_rgb(frame), np.uint8)
            return pixels, time.perf_counter() - begin
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            shape, dtype = getattr(frame, "shape", None), getattr(frame, "dtype", type(frame).__name__)
            raise LpnEdgeError(f"a frame must be an (H, W, 3) uint8 RGB array; got shape {shape}, dtype {dtype}")
        return frame, 0.0

    def _preprocess(self, pixels: np.ndarray, out: np.ndarray) -> None:
        from PIL import Image

        if pixels.shape[:2] != self.input_size:
            pixels = resize(Image.fromarray(np.ascontiguousarray(pixels), "RGB"), self.input_size)
        normalise(pixels, out=out)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        embeddings = np.asarray(self.encoder.embed(batch), np.float32)
        if embeddings.shape != (len(batch), self.info.dim):
            raise LpnEdgeError(f"the encoder returned embeddings of shape {embeddings.shape} for {len(batch)} "
                               f"frames; expected ({len(batch)}, {self.info.dim})")
        return embeddings

    def search(self, embeddings: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) embeddings -> rows (Q, k) int64 and scores (Q, k) float32 over all indexes (see module doc)."""
        k = self.top_k if k is None else min(int(k), self.count)
        if len(self.matchers) == 1:
            return self.matchers[0].search(embeddings, k)
        found = [matcher.search(embeddings, min(k, owner.count))
                 for matcher, owner in zip(self.matchers, self._owners)]
        rows = np.concatenate([r + offset for (r, _), offset in zip(found, self.offsets)], 1)
        scores = np.concatenate([s for _, s in found], 1)
        return select_topk(scores, rows, k)  # the engines' rule: higher score first, then ascending row

    def tile_id(self, row: int) -> str:
        number = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return self._owners[number].tile_id(int(row - self.offsets[number]))

    def _location(self, rows: np.ndarray, scores: np.ndarray, timings: dict[str, float], name: str) -> Location:
        begin = time.perf_counter()
        latitude, longitude = self.latitude[rows], self.longitude[rows]
        lat, lon, used = estimate_position(latitude, longitude, scores, self.radius_m)
        timings["match"] += time.perf_counter() - begin
        return Location(rows=rows, tiles=[self.tile_id(r) for r in rows], scores=scores, latitude=latitude,
                        longitude=longitude, estimate=(lat, lon), used=used, radius_m=self.radius_m,
                        timings=timings, name=name)

    # -- the API -----------------------------------------------------------------------------------------------

    def locate(self, frame: np.ndarray | str | os.PathLike, name: str = "") -> Location:
        """One (H, W, 3) uint8 RGB frame (any size: resized to the model's input) or an image file -> Location."""
        pixels, decode = self._pixels(frame)
        begin = time.perf_counter()
        self._preprocess(pixels, self._one[0])
        encoded = time.perf_counter()
        embedding = self._embed(self._one)
        matched = time.perf_counter()
        rows, scores = self.search(embedding)
        done = time.perf_counter()
        timings = {"decode": decode, "preprocess": encoded - begin, "encode": matched - encoded,
                   "match": done - matched}
        if not name and isinstance(frame, (str, os.PathLike)):
            name = str(frame)
        return self._location(rows[0], scores[0], timings, name)

    def locate_batch(self, frames: Sequence[np.ndarray | str | os.PathLike] | np.ndarray,
                     names: Sequence[str] | None = None) -> list[Location]:
        """Several frames (a sequence of frames or files, or an (N, H, W, 3) uint8 array) through one encoder call
        and one search; each Location gets the batch's times divided by N."""
        frames = list(frames)
        if not frames:
            return []
        if names is not None and len(names) != len(frames):
            raise LpnEdgeError(f"{len(names)} names for {len(frames)} frames")
        if len(self._many) < len(frames):
            self._many = np.empty((len(frames), 3, *self.input_size), np.float32)
        batch = self._many[: len(frames)]
        decode = 0.0
        begin = time.perf_counter()
        for slot, frame in enumerate(frames):
            pixels, seconds = self._pixels(frame)
            decode += seconds
            self._preprocess(pixels, batch[slot])
        encoded = time.perf_counter()
        embeddings = self._embed(batch)
        matched = time.perf_counter()
        rows, scores = self.search(embeddings)
        done = time.perf_counter()
        share = 1.0 / len(frames)
        timings = {"decode": decode * share, "preprocess": (encoded - begin - decode) * share,
                   "encode": (matched - encoded) * share, "match": (done - matched) * share}
        return [self._location(rows[i], scores[i], dict(timings),
                               names[i] if names is not None else
                               str(frame) if isinstance(frame, (str, os.PathLike)) else "")
                for i, frame in enumerate(frames)]

    def describe(self) -> str:
        info = self.info
        indexes = ", ".join(str(ix.path) for ix in self.indexes)
        return (f"model {info.fingerprint} ({info.backend}, {info.provider}, {info.precision}, {info.view} view, "
                f"{info.input_size[0]}x{info.input_size[1]} px, dim {info.dim}); gallery {indexes}: {self.count} "
                f"tiles, tile spacing {self.spacing_m:.1f} m, estimate radius R {self.radius_m:.1f} m; matching "
                f"{self.engine}, top {self.top_k}")

    def close(self) -> None:
        """Release the gallery maps, and the encoder when this Localizer opened it."""
        for index in getattr(self, "indexes", []):
            index.close()
        if getattr(self, "_owns_encoder", False) and hasattr(self.encoder, "close"):
            self.encoder.close()

    def __enter__(self) -> Localizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
