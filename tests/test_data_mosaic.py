"""The 300 real University-1652 drone/satellite pairs (../shared/data/u1652-mosaic) read like any retrieval set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lpn_edge.data.check import check_dataset
from lpn_edge.data.transforms import eval_transform
from lpn_edge.data.university import RetrievalFolder

MOSAIC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "u1652-mosaic"


@pytest.fixture(scope="module")
def mosaic() -> Path:
    if not (MOSAIC / "drone").is_dir():
        pytest.skip(f"real pairs not present at {MOSAIC}")
    return MOSAIC


def test_both_views_read_with_matching_labels(mosaic):
    drone = RetrievalFolder(mosaic / "drone", eval_transform(64))
    satellite = RetrievalFolder(mosaic / "satellite", eval_transform(64))
    assert len(drone) == len(satellite) == 300
    assert np.array_equal(drone.labels, np.arange(300)) and np.array_equal(satellite.labels, drone.labels)
    assert drone.paths[17].name == "0017.jpg" and drone.paths[17].parent.name == "0017"
    image, label = drone[17]
    assert label == 17 and image.shape == (3, 64, 64) and torch.isfinite(image).all()
    assert not torch.allclose(image, satellite[17][0])  # two different photographs of one place


def test_raw_images_are_128_px_rgb(mosaic):
    image, _ = RetrievalFolder(mosaic / "satellite")[0]
    assert image.mode == "RGB" and image.size == (128, 128)


def test_check_dataset_reports_the_pairs(mosaic):
    report = check_dataset(mosaic)
    assert report.layout == "view-folders" and report.usable and report.unreadable == []
    assert len(report.counts["."]["drone"]) == 300 and sum(report.counts["."]["satellite"].values()) == 300
