"""CVUSA / CVACT pairs (prepared and raw layouts) and the polar transform."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from data_helpers import make_class_tree, make_cvact_raw, make_cvusa_raw, mean_color, noise_image, write_broken
from PIL import Image

from lpn_edge.data.check import check_dataset
from lpn_edge.data.crossview import CrossViewPairs, list_pairs
from lpn_edge.data.polar import polar_grid, polar_transform
from lpn_edge.data.transforms import eval_transform
from lpn_edge.errors import LpnEdgeError


def test_cvusa_raw_pairs_match_by_row(tmp_path):
    root = make_cvusa_raw(tmp_path / "cvusa", {"train": ["0000001", "0000002", "0000003"], "val": ["0000004"]})
    pairs = list_pairs(root, "train")
    assert [p.key for p in pairs] == ["0000001", "0000002", "0000003"]
    dataset = CrossViewPairs(root, "train", eval_transform(16), eval_transform((8, 32)))
    assert len(dataset) == 3
    item = dataset[1]
    assert item["label"] == 1
    assert item["satellite"].shape == (3, 16, 16) and item["ground"].shape == (3, 8, 32)
    # key 0000002 is coded as red 40 in its satellite image and green 40 in its panorama
    assert mean_color(item["satellite"])[0] == pytest.approx(40, abs=4)
    assert mean_color(item["ground"])[1] == pytest.approx(40, abs=4)
    assert len(CrossViewPairs(root, "val")) == 1


def test_cvusa_raw_missing_and_broken_files_are_left_out(tmp_path):
    root = make_cvusa_raw(tmp_path / "cvusa", {"train": ["0000001", "0000002", "0000003"], "val": ["0000004"]})
    (root / "streetview" / "panos" / "0000001.jpg").unlink()
    write_broken(root / "bingmap" / "19" / "0000003.jpg", "truncated_jpeg")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        dataset = CrossViewPairs(root, "train")
    assert [p.key for p in dataset.pairs] == ["0000002"]
    report = check_dataset(root)
    assert report.layout == "cvusa-raw" and report.usable
    assert report.counts["train"]["street"] == {"0000001": 0, "0000002": 1, "0000003": 1}
    assert any("2 of 3 pairs are left out" in note for note in report.notes)


def test_cvusa_raw_without_val_split_is_unusable(tmp_path):
    root = make_cvusa_raw(tmp_path / "cvusa", {"train": ["0000001"]})
    report = check_dataset(root)
    assert not report.usable and "val-19zl.csv" in report.problems[0]


def test_bad_csv_row_names_file_and_line(tmp_path):
    root = make_cvusa_raw(tmp_path / "cvusa", {"train": ["0000001"], "val": ["0000002"]})
    (root / "splits" / "train-19zl.csv").write_text("bingmap/19/0000001.jpg,x.jpg\njust-one-column\n")
    with pytest.raises(LpnEdgeError, match="train-19zl.csv line 2"):
        list_pairs(root, "train")


def test_cvusa_prepared_pairs_by_id(tmp_path):
    root = tmp_path / "cvusa"
    make_class_tree(root / "train" / "satellite", ["0000001", "0000002", "0000005"], 1, seed=1)
    make_class_tree(root / "train" / "street", ["0000001", "0000002", "0000009"], 1, seed=2)
    pairs = list_pairs(root, "train")
    assert [p.key for p in pairs] == ["0000001", "0000002"]
    assert pairs[1].ground.parent.name == "0000002" and pairs[1].satellite.parent.parent.name == "satellite"


def test_cvact_raw_with_text_splits(tmp_path):
    root = make_cvact_raw(tmp_path / "cvact", ["aaa", "bbb", "ccc"])
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("ccc\n# comment\n\naaa\n")
    (root / "splits" / "val.txt").write_text("bbb\n")
    assert [p.key for p in list_pairs(root, "train")] == ["ccc", "aaa"]
    pair = list_pairs(root, "val")[0]
    assert pair.satellite.name == "bbb_satView_polish.jpg" and pair.ground.name == "bbb_grdView.jpg"
    assert check_dataset(root).usable


def test_cvact_mat_without_scipy_says_pip_install(tmp_path, monkeypatch):
    root = make_cvact_raw(tmp_path / "cvact", ["aaa"])
    (root / "ACT_data.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    monkeypatch.setitem(sys.modules, "scipy", None)  # makes "import scipy.io" fail as if not installed
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(LpnEdgeError, match="pip install scipy"):
        list_pairs(root, "train")


def test_cvact_mat_indices_are_one_based(tmp_path, monkeypatch):
    root = make_cvact_raw(tmp_path / "cvact", ["k0", "k1", "k2"])
    (root / "ACT_data.mat").write_bytes(b"stub")

    def loadmat(path):  # the structure scipy.io.loadmat returns for ACT_data.mat
        def struct(name, values):
            return np.array([[(np.array(values).reshape(-1, 1),)]], dtype=[(name, "O")])

        return {"panoIds": np.array(["k0", "k1", "k2"]), "trainSet": struct("trainInd", [3, 1]),
                "valSet": struct("valInd", [2])}

    scipy_io = types.ModuleType("scipy.io")
    scipy_io.loadmat = loadmat
    monkeypatch.setitem(sys.modules, "scipy", types.ModuleType("scipy"))
    monkeypatch.setitem(sys.modules, "scipy.io", scipy_io)
    assert [p.key for p in list_pairs(root, "train")] == ["k2", "k0"]
    assert [p.key for p in list_pairs(root, "val")] == ["k1"]


def test_pairs_need_a_pair_layout(tmp_path):
    make_class_tree(tmp_path / "train" / "satellite", ["1"], 1)
    make_class_tree(tmp_path / "train" / "drone", ["1"], 1)
    with pytest.raises(LpnEdgeError, match="university1652"):
        CrossViewPairs(tmp_path)


def test_polar_dataset_option(tmp_path):
    root = make_cvusa_raw(tmp_path / "cvusa", {"train": ["0000001"], "val": ["0000002"]})
    dataset = CrossViewPairs(root, "train", polar_size=(8, 32))
    assert dataset[0]["satellite"].size == (32, 8)


def test_polar_grid_geometry():
    x, y = polar_grid(100, 100, 10, 40)
    assert x.shape == (10, 40)
    # row 0 samples the outer circle, column 0 looks north (up), column W/4 east (right)
    assert (x[0, 0], y[0, 0]) == pytest.approx((49.5, -0.5))
    assert (x[0, 10], y[0, 10]) == pytest.approx((99.5, 49.5))
    radius = np.hypot(x + 0.5 - 50, y + 0.5 - 50)
    assert np.allclose(radius, (10 - np.arange(10))[:, None] / 10 * 50, atol=1e-4)


def test_polar_transform_maps_directions_to_columns():
    # east half red, west half blue: in the strip, columns looking east (j in (0, W/2)) must be red
    aerial = np.zeros((64, 64, 3), np.uint8)
    aerial[:, 32:, 0] = 255
    aerial[:, :32, 2] = 255
    strip = polar_transform(aerial, 16, 64)
    assert strip.shape == (16, 64, 3) and strip.dtype == np.uint8
    assert (strip[:, 4:28, 0] == 255).all() and (strip[:, 36:60, 2] == 255).all()
    as_image = polar_transform(Image.fromarray(aerial), 16, 64)
    assert isinstance(as_image, Image.Image) and np.array_equal(np.asarray(as_image), strip)


def test_polar_transform_of_a_radial_image_has_constant_rows():
    yy, xx = np.mgrid[0:128, 0:128] + 0.5
    radial = (np.hypot(xx - 64, yy - 64) * 3).astype(np.float32)
    strip = polar_transform(radial, 8, 90)
    # bilinear error only; row 0 touches the border (radius S/2), where the edge pixels are clamped
    assert np.allclose(strip[1:], strip[1:, :1], atol=0.1)
    assert np.allclose(strip[0], 192, atol=2)
    assert (np.diff(strip[:, 0]) < 0).all()  # top row is the outer circle
    with pytest.raises(LpnEdgeError):
        polar_transform(np.zeros((4, 4, 3, 1)), 8, 8)


def test_polar_then_eval_transform_shape():
    strip = polar_transform(noise_image(0, (64, 64)), 32, 128)
    tensor = eval_transform((32, 128))(strip)
    assert tensor.shape == (3, 32, 128) and torch.isfinite(tensor).all()
