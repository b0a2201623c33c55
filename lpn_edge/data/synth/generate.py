"""`synthesize`: write a complete synthetic cross-view dataset in the University-1652 layout.

Layout written (ids are zero-padded 4-digit numbers; train, test and distractor ids are disjoint)::

    train/satellite/<id>/<id>.png       one north-up tile per training location
    train/drone/<id>/<group>-<nn>.png   drone views, group = short | middle | long (the distance)
    train/street/<id>/street.png        a low oblique view
    train/google/<id>/[google.png]      empty for about 30 % of the locations, as in the real data
    test/query_drone/<id>/*, test/gallery_drone/<id>/*           drone views of the test locations
    test/query_satellite/<id>/*, test/gallery_satellite/<id>/*   tiles; the gallery adds the distractors
    test/query_street/<id>/*, test/gallery_street/<id>/*
    geo.csv        split,view,id,latitude,longitude of every satellite tile centre
    synth.json     the arguments (marks the folder as generated, so it may be overwritten)
    preview.png    optional contact sheet

Gallery files are hard links to the query files where the file system allows. The output depends only on the
arguments (same seed => byte-identical files), not on the number of worker processes.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from lpn_edge.data.synth.location import LocationFiles, LocationJob, render_location
from lpn_edge.data.synth.preview import contact_sheet
from lpn_edge.errors import LpnEdgeError

MARKER = "synth.json"
ORIGIN = (47.0, 8.0)  # latitude, longitude (degrees) of the world's origin
METRES_PER_DEGREE = 111_320.0  # along a meridian; along a parallel it is this times cos(latitude)
LOCATION_SPACING = 1000.0  # metres between neighbouring locations (neighbourhoods never overlap)
_PREVIEW_ROWS = 4


@dataclass(frozen=True)
class SynthSummary:
    """What `synthesize` wrote, for the command line to print."""

    root: Path
    geo_csv: Path
    preview: Path | None
    train_locations: int
    test_locations: int
    distractors: int
    drone_per_location: int
    size: int
    files: int  # image files, hard-linked gallery copies included
    seconds: float

    def __str__(self) -> str:
        lines = [
            f"synthetic dataset  {self.root}",
            f"locations          {self.train_locations} train, {self.test_locations} test, "
            f"{self.distractors} distractor tiles",
            f"images             {self.files} files of {self.size}x{self.size} px "
            f"({self.drone_per_location} drone views per location)",
            f"geo-tags           {self.geo_csv}",
        ]
        if self.preview is not None:
            lines.append(f"preview            {self.preview}")
        lines.append(f"time               {self.seconds:.1f} s")
        return "\n".join(lines)


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise LpnEdgeError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise LpnEdgeError(f"{name} must be {bound}, got {value}")
    return int(value)


def _split_counts(locations: int, test_fraction: float) -> tuple[int, int]:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, Real) or not 0 < test_fraction < 1:
        raise LpnEdgeError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")
    test = min(locations - 1, max(1, round(locations * test_fraction)))
    return locations - test, test


def world_positions(seed: int, count: int) -> np.ndarray:
    """(count, 2) east/north positions in metres: locations on a jittered grid, in a shuffled order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6E0]))
    side = math.ceil(math.sqrt(count))
    cells = rng.permutation(side * side)[:count]
    grid = np.stack([cells % side, cells // side], axis=1).astype(np.float64)
    return (grid - (side - 1) / 2) * LOCATION_SPACING + rng.uniform(-150, 150, size=(count, 2))


def to_lat_lon(east_north: np.ndarray) -> np.ndarray:
    """Metres east/north of `ORIGIN` -> (latitude, longitude) degrees (local flat-earth approximation)."""
    lat0, lon0 = ORIGIN
    latitude = lat0 + east_north[:, 1] / METRES_PER_DEGREE
    longitude = lon0 + east_north[:, 0] / (METRES_PER_DEGREE * math.cos(math.radians(lat0)))
    return np.stack([latitude, longitude], axis=1)


def _geo_rows(seed: int, train: int, test: int, distractors: int) -> list[str]:
    coordinates = to_lat_lon(world_positions(seed, train + test + distractors))
    rows = ["split,view,id,latitude,longitude"]
    for number, (latitude, longitude) in enumerate(coordinates):
        view = "satellite" if number < train else "gallery_satellite"
        split = "train" if number < train else "test"
        rows.append(f"{split},{view},{number:04d},{latitude:.7f},{longitude:.7f}")
    return rows


def _prepare_output(out: Path, overwrite: bool, marker: str = MARKER, generator: str = "lpn-edge synth") -> Path:
    """Check that ``out`` may be written and return a fresh sibling folder to build the dataset in.

    A non-empty ``out`` is replaced only with ``overwrite`` and only when it holds ``marker`` (written by
    ``generator``)."""
    if out.exists():
        if not out.is_dir():
            raise LpnEdgeError(f"output {out} exists and is not a folder")
        if any(out.iterdir()):
            if not overwrite:
                raise LpnEdgeError(
                    f"output folder {out} is not empty; choose a new folder or pass --overwrite (overwrite=True)"
                )
            if not (out / marker).is_file():
                raise LpnEdgeError(
                    f"refusing to overwrite {out}: it is not empty and was not written by {generator} "
                    f"(no {marker} in it)"
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target and rename at the end: an interrupted run never leaves a half dataset behind
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # left over from an interrupted run of ours (the name is ours)
    partial.mkdir()
    return partial


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run(jobs: list[LocationJob], workers: int, progress: Callable[[int, int], None] | None) -> list[LocationFiles]:
    results = []
    if workers <= 1:
        outputs = map(render_location, jobs)
        executor = None
    else:
        # forkserver: workers start clean (no copy of a parent that may hold torch threads)
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
        outputs = executor.map(render_location, jobs)
    try:
        for done, files in enumerate(outputs, start=1):
            results.append(files)
            if progress is not None:
                progress(done, len(jobs))
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return results


def synthesize(
    out_dir: str | Path,
    locations: int = 100,
    seed: int = 0,
    drone_per_location: int = 12,
    size: int = 256,
    distractors: int = 0,
    preview: bool = False,
    test_fraction: float = 0.5,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write a synthetic cross-view dataset of ``locations`` places to ``out_dir`` (layout in the module doc).

    Args:
        locations: number of places (>= 2), split into train and test by ``test_fraction`` (each gets >= 1).
        seed: the world; the same arguments give byte-identical files.
        drone_per_location: drone views per place (>= 3), split evenly over short / middle / long distance.
        size: side of every image in pixels (>= 32); the satellite tile covers 100 m.
        distractors: extra places whose satellite tiles only pad test/gallery_satellite.
        preview: also write ``preview.png``, a contact sheet of a few places.
        overwrite: replace ``out_dir`` if it holds an earlier synthetic dataset (never anything else).
        workers: processes to render with (default: all available CPU cores).
        progress: called as ``progress(done, total)`` after each place.
    """
    started = time.perf_counter()
    locations = _check_int("--locations", locations, 2)
    seed = _check_int("--seed", seed, 0)
    drone_per_location = _check_int("--drone-per-location", drone_per_location, 3, 1000)
    size = _check_int("--size", size, 32, 4096)
    distractors = _check_int("--distractors", distractors, 0)
    if locations + distractors > 10_000:
        raise LpnEdgeError(f"--locations + --distractors must be <= 10000 (4-digit ids), got {locations + distractors}")
    workers = _check_int("workers", workers if workers is not None else _default_workers(), 1)
    train, test = _split_counts(locations, test_fraction)
    out = Path(out_dir)
    try:
        partial = _prepare_output(out, overwrite)
    except OSError as exc:
        raise LpnEdgeError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    try:
        roles = ["train"] * train + ["test"] * test + ["distractor"] * distractors
        jobs = [LocationJob(seed, number, role, drone_per_location, size, str(partial))
                for number, role in enumerate(roles)]
        written = _run(jobs, min(workers, len(jobs)), progress)
        (partial / "geo.csv").write_text("\n".join(_geo_rows(seed, train, test, distractors)) + "\n")
        arguments = {"generator": "lpn-edge synth", "format": 1, "locations": locations, "seed": seed,
                     "drone_per_location": drone_per_location, "size": size, "distractors": distractors,
                     "test_fraction": test_fraction, "train_ids": [0, train - 1], "test_ids": [train, locations - 1]}
        (partial / MARKER).write_text(json.dumps(arguments, indent=2, sort_keys=True) + "\n")
        if preview:
            shown = written[: _PREVIEW_ROWS // 2] + written[train : train + _PREVIEW_ROWS // 2]
            contact_sheet(partial, shown, cell=min(size, 192)).save(partial / "preview.png", compress_level=6)
        if out.exists():
            shutil.rmtree(out)  # empty, or an earlier synthetic dataset: checked by _prepare_output
        os.replace(partial, out)
    except OSError as exc:  # disk full, permissions: say where, and leave nothing half-written behind
        shutil.rmtree(partial, ignore_errors=True)
        raise LpnEdgeError(f"writing the synthetic dataset to {out} failed: {exc}") from exc
    except BaseException:  # including KeyboardInterrupt
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return SynthSummary(
        root=out,
        geo_csv=out / "geo.csv",
        preview=out / "preview.png" if preview else None,
        train_locations=train,
        test_locations=test,
        distractors=distractors,
        drone_per_location=drone_per_location,
        size=size,
        files=sum(files.written for files in written),
        seconds=time.perf_counter() - started,
    )
