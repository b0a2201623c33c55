"""The synthetic world: layout, geo-tags, determinism, argument checks, and the camera geometry."""

from __future__ import annotations

import csv
import hashlib
import math

import numpy as np
import pytest
from PIL import Image

from lpn_edge.data.check import check_dataset
from lpn_edge.data.synth import SynthSummary, synthesize
from lpn_edge.data.synth.camera import Camera, clip_near
from lpn_edge.data.synth.generate import METRES_PER_DEGREE, ORIGIN
from lpn_edge.data.synth.ortho import render_ortho
from lpn_edge.data.synth.views import split_groups
from lpn_edge.data.synth.world import TARGET_DESIGNS, generate_neighbourhood, target_building
from lpn_edge.data.transforms import eval_transform
from lpn_edge.data.university import RetrievalFolder, University1652Train
from lpn_edge.errors import LpnEdgeError

SMALL = dict(locations=4, drone_per_location=3, size=48, distractors=2, workers=1)


def digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def ids(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


def contains_origin(corners: np.ndarray) -> bool:
    """Whether a counter-clockwise convex polygon contains (0, 0): left of every edge."""
    edges = np.roll(corners, -1, axis=0) - corners
    return bool((edges[:, 0] * -corners[:, 1] - edges[:, 1] * -corners[:, 0] > 0).all())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "world"
    summary = synthesize(root, seed=5, preview=True, **SMALL)
    return root, summary


def test_layout_and_summary(world):
    root, summary = world
    assert isinstance(summary, SynthSummary)
    assert (summary.train_locations, summary.test_locations, summary.distractors) == (2, 2, 2)
    train, test = ids(root / "train" / "satellite"), ids(root / "test" / "query_satellite")
    assert train == {"0000", "0001"} and test == {"0002", "0003"}
    assert ids(root / "test" / "gallery_satellite") == test | {"0004", "0005"}
    for view in ("drone", "street", "google"):
        assert ids(root / "train" / view) == train
    for view in ("query_drone", "gallery_drone", "query_street", "gallery_street"):
        assert ids(root / "test" / view) == test
    assert sorted(p.name for p in (root / "train" / "drone" / "0001").iterdir()) == [
        "long-02.png", "middle-01.png", "short-00.png"]
    assert (root / "train" / "satellite" / "0000" / "0000.png").is_file()
    with Image.open(root / "test" / "query_drone" / "0002" / "middle-01.png") as image:
        assert image.size == (48, 48) and image.mode == "RGB"
    images = [p for p in root.rglob("*.png") if p.name != "preview.png"]
    assert summary.files == len(images) and summary.seconds > 0
    assert "2 train, 2 test, 2 distractor" in str(summary)


def test_geo_csv_covers_every_satellite_tile(world):
    root, _ = world
    rows = list(csv.DictReader((root / "geo.csv").open()))
    assert list(rows[0]) == ["split", "view", "id", "latitude", "longitude"]
    assert [(r["split"], r["view"], r["id"]) for r in rows] == [
        ("train", "satellite", "0000"), ("train", "satellite", "0001"),
        *[("test", "gallery_satellite", f"{i:04d}") for i in range(2, 6)],
    ]
    coords = np.array([(float(r["latitude"]), float(r["longitude"])) for r in rows])
    # within a few km of the origin, and never two locations closer than ~700 m (grid of 1 km, +-150 m jitter)
    metres = (coords - ORIGIN) * [METRES_PER_DEGREE, METRES_PER_DEGREE * math.cos(math.radians(ORIGIN[0]))]
    assert np.abs(metres).max() < 5000
    gaps = np.linalg.norm(metres[:, None] - metres[None], axis=-1) + np.eye(len(rows)) * 1e9
    assert gaps.min() > 690


def test_readers_accept_the_synthetic_dataset(world):
    root, _ = world
    report = check_dataset(root)
    assert report.layout == "university1652" and report.usable, report.problems
    assert report.unreadable == []
    transforms = {view: eval_transform(32) for view in ("satellite", "drone", "street", "google")}
    train = University1652Train(root, transforms)
    assert train.classes == ["0000", "0001"] and train[1]["label"] == 1
    gallery = RetrievalFolder(root / "test" / "gallery_satellite", eval_transform(32))
    assert gallery.labels.tolist() == [2, 3, 4, 5]


def test_preview_is_a_contact_sheet(world):
    root, summary = world
    with Image.open(summary.preview) as sheet:
        width, height = sheet.size
    # 4 rows (2 train + 2 test locations) of satellite + short + middle + long at 48 px
    assert width >= 4 * 48 and height >= 4 * 48
    assert summary.preview == root / "preview.png"


def test_preview_labels_say_training_or_test():
    from lpn_edge.data.synth.location import LocationFiles
    from lpn_edge.data.synth.preview import location_label

    train = LocationFiles("0001", "train/satellite/0001/0001.png", (), 1)
    test = LocationFiles("0040", "test/gallery_satellite/0040/0040.png", (), 1)
    assert (location_label(train), location_label(test)) == ("0001 TRAIN", "0040 TEST")


def test_same_seed_same_bytes_whatever_the_workers(world, tmp_path):
    root, _ = world
    again = tmp_path / "again"
    synthesize(again, seed=5, preview=True, **{**SMALL, "workers": 2})
    assert digest(again) == digest(root)


def test_different_seed_different_world(world, tmp_path):
    root, _ = world
    other = tmp_path / "other"
    synthesize(other, seed=6, **{**SMALL, "distractors": 0})
    first = (root / "train" / "satellite" / "0000" / "0000.png").read_bytes()
    assert (other / "train" / "satellite" / "0000" / "0000.png").read_bytes() != first


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"locations": 1}, "locations must be >= 2"),
        ({"size": 31}, "size must be between 32"),
        ({"drone_per_location": 2}, "--drone-per-location must be between 3"),
        ({"distractors": -1}, "distractors must be >= 0"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"locations": 9999, "distractors": 2}, "<= 10000"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, bad, message):
    with pytest.raises(LpnEdgeError, match=message):
        synthesize(tmp_path / "out", **{**SMALL, **bad})
    assert not (tmp_path / "out").exists()


def test_refuses_to_write_into_a_non_empty_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(LpnEdgeError, match="not empty"):
        synthesize(foreign, **{**SMALL, "distractors": 0})
    with pytest.raises(LpnEdgeError, match="not written by lpn-edge synth"):
        synthesize(foreign, overwrite=True, **{**SMALL, "distractors": 0})
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_an_output_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(LpnEdgeError, match="cannot create the output folder"):
        synthesize(tmp_path / "notes.txt" / "world", **SMALL)


def test_overwrite_replaces_an_earlier_synthetic_dataset(tmp_path):
    out = tmp_path / "world"
    out.mkdir()  # an existing empty folder is fine
    synthesize(out, seed=1, **{**SMALL, "locations": 3, "distractors": 0})
    synthesize(out, seed=1, overwrite=True, **{**SMALL, "distractors": 0})
    assert ids(out / "test" / "query_drone") == {"0002", "0003"}
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_drone_groups_split_evenly():
    assert split_groups(3) == ["short", "middle", "long"]
    assert [split_groups(50).count(g) for g in ("short", "middle", "long")] == [17, 17, 16]


@pytest.mark.parametrize("design", range(TARGET_DESIGNS))
def test_target_designs_are_centred(design):
    building = target_building(np.random.default_rng(design), design, angle=0.3)
    corners = np.concatenate([part.corners() for part in building.parts])
    assert np.abs((corners.min(axis=0) + corners.max(axis=0)) / 2).max() < 3.0  # bounding box centred
    inside = [contains_origin(part.corners()) for part in building.parts]
    assert any(inside) == (design != 3)  # design 3 has a courtyard in the middle


def test_ortho_height_map_shows_the_target_at_the_centre():
    hood = generate_neighbourhood(np.random.default_rng(0))
    ortho = render_ortho(hood, ppm=1.0)
    n = ortho.height.shape[0]
    target = hood.buildings[0]
    assert hood.design != 3  # seed 0 draws a solid design
    assert np.allclose(ortho.height[n // 2 - 2 : n // 2 + 3, n // 2 - 2 : n // 2 + 3], target.height, atol=0.01)
    assert ortho.image.shape == (n, n, 3) and ortho.ground.shape == (n, n, 3)
    # the ground layer has no roofs: it differs from the satellite image where the target stands
    assert np.abs(ortho.image[n // 2, n // 2].astype(int) - ortho.ground[n // 2, n // 2]).sum() > 20


def test_camera_projects_its_target_to_the_image_centre():
    camera = Camera.look_at((30.0, -40.0, 50.0), (0.0, 0.0, 5.0), 50.0, 64, 48)
    pixel = camera.to_pixels(camera.to_camera(np.array([[0.0, 0.0, 5.0]])))[0]
    assert pixel == pytest.approx((32, 24))
    rays = camera.pixel_rays()
    assert rays.shape == (48, 64, 3)
    # the ray through the image centre points at the target; image "up" points away from the ground
    centre_ray = (rays[23, 31] + rays[24, 32]) / 2
    to_target = np.array([-30.0, 40.0, -45.0])
    assert np.dot(centre_ray, to_target) / np.linalg.norm(centre_ray) / np.linalg.norm(to_target) > 0.9999
    assert rays[0, 32, 2] > rays[47, 32, 2]


def test_clip_near_keeps_the_visible_part():
    triangle = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 3.0], [-1.0, 0.0, 3.0]])
    clipped = clip_near(triangle)
    assert len(clipped) == 4 and (clipped[:, 2] >= 0.5 - 1e-9).all()
