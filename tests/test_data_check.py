"""Layout detection and `check_dataset` reports."""

from __future__ import annotations

import shutil

import pytest
from data_helpers import make_class_tree, make_university_tree, noise_image, save, write_broken

from lpn_edge.data.check import check_dataset, format_report
from lpn_edge.data.layout import detect_layout
from lpn_edge.errors import LpnEdgeError


@pytest.fixture
def tree(tmp_path):
    return make_university_tree(tmp_path / "u1652")


def test_good_university_tree(tree):
    report = check_dataset(tree)
    assert report.layout == "university1652"
    assert report.usable and report.problems == []
    assert report.counts["train"]["drone"] == {"0001": 3, "0002": 3, "0003": 3}
    assert report.counts["train"]["google"]["0003"] == 0
    assert report.counts["test"]["gallery_satellite"] == {"0101": 1, "0102": 1, "0900": 1}
    assert any("train/google: 1 of 3 class folders" in note for note in report.notes)
    text = format_report(report)
    assert "usable  yes" in text
    # one table row per split and view: split, view, classes, images, min/class, max/class, empty
    assert "train  drone" in text and text.split("train  drone")[1].split()[:5] == ["3", "9", "3", "3", "0"]
    assert "test   gallery_satellite" in text


def test_unreadable_files_are_listed_but_do_not_make_it_unusable(tree):
    bad = write_broken(tree / "train" / "drone" / "0002" / "broken.jpg", "truncated_jpeg")
    empty = write_broken(tree / "test" / "query_drone" / "0101" / "empty.png", "zero_bytes")
    report = check_dataset(tree)
    assert report.usable
    assert sorted(f.path for f in report.unreadable) == sorted([bad, empty])
    assert report.counts["train"]["drone"]["0002"] == 3
    text = format_report(report)
    assert "unreadable files (2):" in text and str(bad) in text and "truncated" in text


def test_missing_train_satellite_is_unusable(tree):
    shutil.rmtree(tree / "train" / "satellite")
    report = check_dataset(tree)
    assert report.layout == "university1652" and not report.usable
    assert any("train/satellite" in problem for problem in report.problems)
    assert "usable  NO" in format_report(report)


def test_no_test_folders_is_unusable(tree):
    shutil.rmtree(tree / "test")
    report = check_dataset(tree)
    assert not report.usable
    assert len(report.problems) == 1 and "test/query_drone + test/gallery_satellite" in report.problems[0]


def test_query_without_gallery_is_unusable(tree):
    shutil.rmtree(tree / "test" / "gallery_satellite")
    shutil.rmtree(tree / "test" / "gallery_drone")
    assert not check_dataset(tree).usable


def test_empty_satellite_classes_are_unusable(tree):
    for path in (tree / "train" / "satellite").glob("*/*"):
        path.unlink()
    report = check_dataset(tree)
    assert not report.usable and "train/satellite" in report.problems[0]


def test_unknown_layout_says_what_was_expected(tmp_path):
    save(noise_image(0), tmp_path / "random" / "a.png")
    report = check_dataset(tmp_path)
    assert report.layout == "unknown" and not report.usable
    assert "layout not recognised" in report.problems[0] and "random" in report.problems[0]


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(LpnEdgeError, match="does not exist"):
        check_dataset(tmp_path / "nothing")


def test_detect_layouts(tmp_path):
    cvusa = tmp_path / "cvusa"
    make_class_tree(cvusa / "train" / "satellite", ["0000001"], 1)
    make_class_tree(cvusa / "train" / "street", ["0000001"], 1)
    assert detect_layout(cvusa) == "cvusa"
    cvact = tmp_path / "cvact"
    (cvact / "train" / "satview_polish").mkdir(parents=True)
    assert detect_layout(cvact) == "cvact"
    raw = tmp_path / "raw"
    (raw / "splits").mkdir(parents=True)
    (raw / "splits" / "train-19zl.csv").write_text("")
    assert detect_layout(raw) == "cvusa-raw"
    act_raw = tmp_path / "act"
    (act_raw / "ANU_data_small" / "streetview").mkdir(parents=True)
    assert detect_layout(act_raw) == "cvact-raw"
    views = tmp_path / "views"
    make_class_tree(views / "satellite", ["0000"], 1)
    make_class_tree(views / "drone", ["0000"], 1)
    assert detect_layout(views) == "view-folders"
    assert check_dataset(views).usable


def test_cvusa_prepared_report(tmp_path):
    root = tmp_path / "cvusa"
    for split in ("train", "val"):
        for view in ("satellite", "street"):
            make_class_tree(root / split / view, ["0000001", "0000002"], 1)
    report = check_dataset(root)
    assert report.layout == "cvusa" and report.usable
    shutil.rmtree(root / "val")
    report = check_dataset(root)
    assert not report.usable and "val/street + val/satellite" in report.problems[0]
