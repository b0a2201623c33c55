"""Render and write every image of one location (the unit of work of the generator, run in worker processes)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lpn_edge.data.synth.ortho import Ortho, render_ortho
from lpn_edge.data.synth.render import Scene, render_view
from lpn_edge.data.synth.views import (
    SATELLITE_EXTENT,
    drone_camera,
    google_camera,
    random_look,
    split_groups,
    street_camera,
)
from lpn_edge.data.synth.world import generate_neighbourhood

NEIGHBOURHOOD_HALF = 170.0  # metres: what a long drone view sees around the target
ORTHO_OVERSAMPLE = 1.5  # the ortho is this much finer than the satellite tile, for sharp close drone views
PNG_COMPRESSION = 1  # fixed, so that files are byte-identical for a seed; 1 is 6x faster than 6, 6 % larger
GOOGLE_SHARE = 0.7  # the other training classes get an empty google folder, as in University-1652


@dataclass(frozen=True)
class LocationJob:
    seed: int
    number: int  # the location's id as a number; also its place in the world
    role: str  # train | test | distractor
    drone_views: int
    size: int
    root: str  # dataset root being written

    @property
    def name(self) -> str:
        return f"{self.number:04d}"


@dataclass(frozen=True)
class LocationFiles:
    """What a job wrote, relative to the root: its satellite tile, and one drone image per distance group."""

    name: str
    satellite: str
    drone_samples: tuple[str, ...]
    written: int  # files written (hard links included)


def save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=PNG_COMPRESSION)


def link_or_copy(source: Path, target: Path) -> None:
    """The same image in a second folder (query and gallery share files): a hard link, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def satellite_tile(ortho: Ortho, size: int) -> np.ndarray:
    """The north-up tile of SATELLITE_EXTENT metres centred on the target, resized to size x size (Lanczos)."""
    centre = ortho.image.shape[0] / 2
    half = SATELLITE_EXTENT / 2 * ortho.ppm
    box = (centre - half, centre - half, centre + half, centre + half)
    return np.asarray(Image.fromarray(ortho.image).resize((size, size), Image.Resampling.LANCZOS, box=box))


def render_location(job: LocationJob) -> LocationFiles:
    """Generate the location's neighbourhood and write its images (see `lpn_edge.data.synth.generate`)."""
    # separate streams: the place depends only on (seed, id), not on how many views are drawn of it
    world_seq, view_seq = np.random.SeedSequence([job.seed, job.number]).spawn(2)
    hood = generate_neighbourhood(np.random.default_rng(world_seq), half=NEIGHBOURHOOD_HALF)
    ortho = render_ortho(hood, ppm=job.size / SATELLITE_EXTENT * ORTHO_OVERSAMPLE)
    root, name = Path(job.root), job.name
    split = "train" if job.role == "train" else "test"
    satellite_folder = {"train": "satellite", "test": "query_satellite", "distractor": "gallery_satellite"}[job.role]
    satellite = root / split / satellite_folder / name / f"{name}.png"
    save_png(satellite_tile(ortho, job.size), satellite)
    written = 1
    if job.role == "distractor":  # distractors only pad the satellite gallery
        return LocationFiles(name, str(satellite.relative_to(root)), (), written)

    rng = np.random.default_rng(view_seq)
    scene = Scene(hood, ortho)
    target = hood.buildings[0]
    drone_folder = root / split / ("drone" if job.role == "train" else "query_drone") / name
    width = max(2, len(str(job.drone_views - 1)))
    samples: dict[str, str] = {}
    drone_files = []
    for index, group in enumerate(split_groups(job.drone_views)):
        path = drone_folder / f"{group}-{index:0{width}d}.png"
        save_png(render_view(scene, drone_camera(rng, group, target, job.size), random_look(rng)), path)
        samples.setdefault(group, str(path.relative_to(root)))
        drone_files.append(path)
    street = root / split / ("street" if job.role == "train" else "query_street") / name / "street.png"
    save_png(render_view(scene, street_camera(rng, target, job.size), random_look(rng)), street)
    written += len(drone_files) + 1
    if job.role == "train":
        google_folder = root / "train" / "google" / name
        google_folder.mkdir(parents=True, exist_ok=True)
        if rng.random() < GOOGLE_SHARE:
            save_png(render_view(scene, google_camera(rng, target, job.size), random_look(rng)),
                     google_folder / "google.png")
            written += 1
    else:  # University-1652's galleries hold the same images as the queries of the other direction
        for source, gallery in [(satellite, "gallery_satellite"), (street, "gallery_street")]:
            link_or_copy(source, root / "test" / gallery / name / source.name)
        for path in drone_files:
            link_or_copy(path, root / "test" / "gallery_drone" / name / path.name)
        written += 2 + len(drone_files)
    return LocationFiles(name, str(satellite.relative_to(root)), tuple(samples.values()), written)
