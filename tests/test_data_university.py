"""University-1652 readers: multi-view training items and retrieval folders."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from data_helpers import make_class_tree, make_university_tree, noise_image, save, write_broken
from torch.utils.data import DataLoader

from lpn_edge.data.images import UnreadableImage, load_rgb
from lpn_edge.data.transforms import eval_transform
from lpn_edge.data.university import RetrievalFolder, University1652Train
from lpn_edge.errors import LpnEdgeError

SIZE = 16
ALL_VIEWS = ("satellite", "drone", "street", "google")


def transforms() -> dict:
    plain = eval_transform(SIZE)
    return {view: plain for view in ALL_VIEWS}


def source_pixels(path) -> torch.Tensor | None:
    """The tensor a file gives, or None once the file is broken."""
    try:
        return eval_transform(SIZE)(load_rgb(path))
    except UnreadableImage:
        return None


def tensor_file(dataset: University1652Train, view: str, label: int, tensor: torch.Tensor):
    """Which file of class ``label`` in ``view`` produced ``tensor`` (images are distinct noise)."""
    matches = [
        path
        for path in dataset.images[view][label]
        if (pixels := source_pixels(path)) is not None and torch.equal(pixels, tensor)
    ]
    assert len(matches) == 1
    return matches[0]


@pytest.fixture
def tree(tmp_path):
    return make_university_tree(tmp_path / "u1652", classes=("0001", "0002", "0003", "0004"), drones=5)


def test_items_hold_one_class_across_views(tree):
    dataset = University1652Train(tree, transforms(), seed=3)
    assert dataset.classes == ["0001", "0002", "0003", "0004"]
    assert len(dataset) == 4
    for index in range(len(dataset)):
        item = dataset[index]
        label = item["label"]
        for view, key in (("satellite", "satellite"), ("drone", "drone"), ("street", "ground")):
            path = tensor_file(dataset, view, label, item[key])
            assert path.parent.name == dataset.classes[label]
        assert item["ground_valid"] is True
        assert item["satellite"].shape == (3, SIZE, SIZE)


def test_empty_google_class_keeps_its_index_and_gives_a_zero_tensor(tree):
    dataset = University1652Train(tree, transforms())
    last = dataset.class_to_index["0004"]
    assert last == 3 and dataset.images["google"][last] == []
    item = dataset[last]
    assert item["label"] == last
    assert item["google_valid"] is False
    assert torch.count_nonzero(item["google"]) == 0 and item["google"].shape == (3, SIZE, SIZE)
    assert dataset[0]["google_valid"] is True
    batch = next(iter(DataLoader(dataset, batch_size=4)))  # default collate copes with missing views
    assert batch["google_valid"].tolist() == [True, True, True, False]


def test_missing_google_folder_in_a_class_aligns_by_name(tree):
    # google has no folder at all for class 0002: classes must still come from satellite
    for path in (tree / "train" / "google" / "0002").iterdir():
        path.unlink()
    (tree / "train" / "google" / "0002").rmdir()
    dataset = University1652Train(tree, transforms())
    assert dataset.images["google"][1] == [] and dataset.images["google"][2] != []
    assert dataset[2]["google_valid"] is True and dataset[1]["google_valid"] is False


def test_choices_are_reproducible_per_seed_and_epoch(tree):
    def drone_files(dataset, epoch):
        dataset.set_epoch(epoch)
        return [tensor_file(dataset, "drone", i, dataset[i]["drone"]) for i in range(len(dataset))]

    first, again = University1652Train(tree, transforms(), seed=7), University1652Train(tree, transforms(), seed=7)
    epochs = [drone_files(first, epoch) for epoch in range(6)]
    # the same (seed, epoch) gives the same choices, whatever was requested before
    assert drone_files(again, 4) == epochs[4]
    assert drone_files(again, 0) == epochs[0]
    # choices do vary between epochs (4 classes x 5 drone images: all 6 epochs equal would be a broken RNG)
    assert len({tuple(files) for files in epochs}) > 1
    other_seed = University1652Train(tree, transforms(), seed=8)
    assert [drone_files(other_seed, e) for e in range(6)] != epochs


def test_drone_epoch_visits_every_drone_image_once(tree):
    dataset = University1652Train(tree, transforms(), views=("satellite", "drone"), epoch="drone")
    assert len(dataset) == 4 * 5
    seen = [tensor_file(dataset, "drone", item["label"], item["drone"]) for item in dataset]
    assert len(set(seen)) == 20
    assert set(dataset[0]) == {"label", "satellite", "drone"}


def test_views_subset_and_bad_arguments(tree):
    dataset = University1652Train(tree, transforms(), views=("satellite", "street"))
    assert set(dataset[0]) == {"label", "satellite", "ground", "ground_valid"}
    with pytest.raises(LpnEdgeError, match="must include 'satellite'"):
        University1652Train(tree, transforms(), views=("drone",))
    with pytest.raises(LpnEdgeError, match="epoch"):
        University1652Train(tree, transforms(), epoch="street")
    with pytest.raises(LpnEdgeError, match="no transform given for view"):
        University1652Train(tree, {"satellite": eval_transform(SIZE)})
    with pytest.raises(LpnEdgeError, match="no University-1652 training data"):
        University1652Train(tree / "test", transforms())


def test_unreadable_files_are_skipped_and_classes_without_drone_left_out(tree):
    drone = tree / "train" / "drone"
    for path in (drone / "0002").iterdir():
        write_broken(path, "truncated_jpeg")
    write_broken(drone / "0001" / "00.jpg", "zero_bytes")
    with pytest.warns(UserWarning) as caught:
        dataset = University1652Train(tree, transforms())
    messages = " | ".join(str(w.message) for w in caught)
    assert "skipped 6 unreadable" in messages and "left out of training" in messages
    assert dataset.trainable_classes == [0, 2, 3]
    assert len(dataset) == 3 and dataset.num_classes == 4
    assert [dataset[i]["label"] for i in range(3)] == [0, 2, 3]


def test_a_file_that_goes_bad_mid_run_is_replaced_and_counted(tree, caplog):
    dataset = University1652Train(tree, transforms(), views=("satellite", "drone"), epoch="drone")
    target = dataset.drone_items[0][1]
    write_broken(target, "text_as_jpeg")  # after the scan: the run must survive it
    with caplog.at_level(logging.WARNING, logger="lpn_edge.data.sampling"):
        item = dataset[0]
    assert item["label"] == dataset.drone_items[0][0]
    assert tensor_file(dataset, "drone", item["label"], item["drone"]) != target
    assert dataset.loader.failures == [target]
    assert str(target) in caplog.text


def test_a_lost_satellite_image_moves_to_the_next_class(tree):
    dataset = University1652Train(tree, transforms(), views=("satellite", "drone"))
    write_broken(dataset.images["satellite"][0][0], "zero_bytes")
    assert dataset[0]["label"] == 1
    assert len(dataset.loader.failures) == 1


def test_retrieval_folder_numeric_ids(tmp_path):
    written = make_class_tree(tmp_path / "gallery", ("0012", "0003", "0100"), 2)
    write_broken(tmp_path / "gallery" / "0100" / "zz.jpg", "truncated_png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        folder = RetrievalFolder(tmp_path / "gallery", eval_transform(SIZE))
    assert folder.labels.dtype == np.int64
    assert folder.labels.tolist() == [3, 3, 12, 12, 100, 100]
    assert folder.paths[0] == written["0003"][0]
    image, label = folder[4]
    assert label == 100 and torch.equal(image, source_pixels(written["0100"][0]))


def test_retrieval_folder_named_ids_and_shared_mapping(tmp_path):
    make_class_tree(tmp_path / "q", ("beta", "alpha"), 1)
    folder = RetrievalFolder(tmp_path / "q")
    assert folder.labels.tolist() == [0, 1] and folder.ids == ["alpha", "beta"]
    image, _ = folder[0]
    assert image.mode == "RGB"
    shared = RetrievalFolder(tmp_path / "q", id_to_label={"alpha": 5, "beta": 9})
    assert shared.labels.tolist() == [5, 9]
    with pytest.raises(LpnEdgeError, match="no label for id"):
        RetrievalFolder(tmp_path / "q", id_to_label={"alpha": 5})


def test_retrieval_folder_survives_a_single_image_going_bad(tmp_path):
    save(noise_image(0), tmp_path / "g" / "0001" / "a.png")
    folder = RetrievalFolder(tmp_path / "g", eval_transform(SIZE))
    write_broken(folder.paths[0], "zero_bytes")
    image, label = folder[0]
    assert label == 1 and torch.count_nonzero(image) == 0
    assert folder.loader.failures == [folder.paths[0]]
