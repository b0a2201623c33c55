"""Evaluation end to end on a tiny world: CLI, JSON, robustness options and figures."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomise_batchnorm
from data_helpers import make_university_tree
from typer.testing import CliRunner

from lpn_edge.checkpoint import save_checkpoint
from lpn_edge.cli import app
from lpn_edge.config import ModelConfig, RunConfig
from lpn_edge.errors import LpnEdgeError
from lpn_edge.eval.evaluate import EvalOptions, evaluate
from lpn_edge.eval.features import extract_features, select_parts
from lpn_edge.eval.metrics import evaluate_retrieval
from lpn_edge.eval.tasks import distance_group
from lpn_edge.model import build_model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_university_tree(tmp_path_factory.mktemp("world"), classes=["0001", "0002"], drones=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = RunConfig(model=ModelConfig(backbone="resnet18", num_classes=2, image_size=(64, 64)))
    torch.manual_seed(0)
    model = build_model(config.model)
    randomise_batchnorm(model)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", model, config)


def test_cli_eval_prints_a_table_and_writes_json(world, checkpoint):
    result = CliRunner().invoke(app, ["eval", str(checkpoint), "--data", str(world), "--plots", "2"])
    assert result.exit_code == 0, result.output
    assert "| drone2sat" in result.output and "| sat2drone" in result.output
    payload = json.loads((checkpoint.parent / f"model.eval.{world.name}.json").read_text())
    assert f"metrics: {checkpoint.parent / f'model.eval.{world.name}.json'}" in result.output
    assert set(payload["metrics"]) == {"drone2sat", "sat2drone"}
    for metrics in payload["metrics"].values():
        assert set(metrics) == {"R@1", "R@5", "R@10", "R@top1%", "AP"}
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    figures = sorted(p.name for p in (checkpoint.parent / "model-plots").iterdir())
    assert figures == ["drone2sat-heatmaps.png", "drone2sat-retrieval.png", "sat2drone-heatmaps.png",
                       "sat2drone-retrieval.png"]


def test_metrics_equal_a_manual_computation(world, checkpoint, tmp_path):
    from lpn_edge import load_model
    from lpn_edge.data.transforms import eval_transform
    from lpn_edge.data.university import RetrievalFolder

    report = evaluate(checkpoint, world, EvalOptions(task="drone2sat", progress=False, out_json=tmp_path / "m.json"))
    model = load_model(checkpoint)
    query = RetrievalFolder(world / "test" / "query_drone", eval_transform((64, 64)))
    gallery = RetrievalFolder(world / "test" / "gallery_satellite", eval_transform((64, 64)))
    with torch.no_grad():
        qf = model.embed(torch.stack([query[i][0] for i in range(len(query))]), "drone").numpy()
        gf = model.embed(torch.stack([gallery[i][0] for i in range(len(gallery))]), "satellite").numpy()
    expected = evaluate_retrieval(qf, query.labels, gf, gallery.labels)
    assert report.metrics["drone2sat"] == pytest.approx(expected)


def test_robustness_options(world, checkpoint, tmp_path):
    plain = evaluate(checkpoint, world, EvalOptions(task="drone2sat", progress=False, out_json=tmp_path / "a.json"))
    distracted = evaluate(checkpoint, world, EvalOptions(
        task="drone2sat", progress=False, out_json=tmp_path / "b.json",
        distractors=world / "test" / "gallery_drone", distance_groups=True, parts=(0, 1), rotate=90))
    assert "drone2sat [unknown]" in distracted.metrics  # the helper tree's file names carry no distance
    assert distracted.metrics["drone2sat"] != plain.metrics["drone2sat"]
    options = json.loads((tmp_path / "b.json").read_text())["options"]
    assert options["rotate"] == 90 and options["parts"] == [0, 1]


def test_select_parts_keeps_the_layout():
    features = np.arange(2 * 12, dtype=np.float32).reshape(2, 12)  # 3 channels x 4 parts
    kept = select_parts(features, 4, [1, 3])
    assert kept[0].tolist() == [1, 3, 5, 7, 9, 11]
    from lpn_edge.errors import LpnEdgeError

    with pytest.raises(LpnEdgeError, match="indices from 0 to 3"):
        select_parts(features, 4, [4])


@pytest.mark.parametrize("name,group", [("short-03.png", "short"), ("long-11.jpeg", "long"),
                                        ("image-01.jpeg", "long"), ("image-30.jpeg", "middle"),
                                        ("image-54.jpeg", "short"), ("photo.jpg", None)])
def test_distance_groups_from_file_names(name, group):
    assert distance_group(Path(name)) == group


def test_bad_task_and_missing_folders(world, checkpoint, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(checkpoint), "--data", str(world), "--task", "sideways"])
    assert result.exit_code == 2 and "--task 'sideways' is not a task of a university1652 data set" in result.output
    assert "can run: drone2sat, sat2drone," in result.output  # the tiny world has no street folders
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["eval", str(checkpoint), "--data", str(empty)])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output


def test_task_errors_name_what_this_data_and_model_can_run(checkpoint, tmp_path):
    from data_helpers import make_class_tree

    make_class_tree(tmp_path / "pairs" / "drone", ["0001", "0002"], 1, seed=1)
    make_class_tree(tmp_path / "pairs" / "satellite", ["0001", "0002"], 1, seed=2)
    result = CliRunner().invoke(app, ["eval", str(checkpoint), "--data", str(tmp_path / "pairs"), "--task",
                                      "ground2sat"])
    assert result.exit_code == 2
    assert f"{tmp_path / 'pairs' / 'street'} is missing" in result.stderr
    assert result.stderr.strip().endswith("can run: drone2sat, sat2drone") and "University" not in result.stderr


def test_results_on_other_data_never_replace_earlier_ones(checkpoint, world, tmp_path):
    from lpn_edge.eval.evaluate import default_json_path

    other = make_university_tree(tmp_path / "other", classes=["0001", "0002"], drones=2)
    first = evaluate(checkpoint, world, EvalOptions(task="drone2sat", progress=False)).json_path
    second = evaluate(checkpoint, other, EvalOptions(task="drone2sat", progress=False)).json_path
    assert first != second and first.is_file() and second.is_file()
    assert json.loads(first.read_text())["data"] == str(world.resolve())
    # another folder of the same name elsewhere would write the same file: refused, not replaced
    twin = make_university_tree(tmp_path / "twin" / world.name, classes=["0001", "0002"], drones=2)
    with pytest.raises(LpnEdgeError, match="pass --json"):
        default_json_path(checkpoint, twin)


def test_a_part_the_model_lacks_is_refused_before_any_data_is_read(checkpoint, tmp_path):
    with pytest.raises(LpnEdgeError, match="this model has 4 parts"):
        evaluate(checkpoint, tmp_path / "not-even-there", EvalOptions(parts=(0, 9), progress=False))


def _embed_folder(model, folder, view, names):
    """Embeddings of <folder>/<name>/* in name then file order, and each image's label = the name's index in
    `names` (written out here, independently of the package's folder readers)."""
    from lpn_edge.data.images import load_rgb
    from lpn_edge.data.transforms import eval_transform

    transform = eval_transform(model.config.image_size)
    paths = [(label, path) for label, name in enumerate(names) for path in sorted((folder / name).iterdir())]
    with torch.no_grad():
        features = model.embed(torch.stack([transform(load_rgb(path)) for _, path in paths]), view).numpy()
    return features, np.array([label for label, _ in paths])


def test_view_folder_layout_equals_the_protocol_written_out(checkpoint, tmp_path):
    """14 locations (R@10 is not 1 by construction): both tasks equal the plain per-query loop of test_metrics."""
    from data_helpers import make_class_tree
    from metrics_helpers import loop_evaluation

    from lpn_edge import load_model

    names = [f"{i:04d}" for i in range(14)]
    make_class_tree(tmp_path / "pairs" / "drone", names, 2, seed=1)
    make_class_tree(tmp_path / "pairs" / "satellite", names, 1, seed=2)
    report = evaluate(checkpoint, tmp_path / "pairs", EvalOptions(progress=False, out_json=tmp_path / "m.json"))
    assert set(report.metrics) == {"drone2sat", "sat2drone"}
    model = load_model(checkpoint)
    drone = _embed_folder(model, tmp_path / "pairs" / "drone", "drone", names)
    satellite = _embed_folder(model, tmp_path / "pairs" / "satellite", "satellite", names)
    assert len(satellite[1]) > 10 and len(drone[1]) > 10
    for task, (query, gallery) in {"drone2sat": (drone, satellite), "sat2drone": (satellite, drone)}.items():
        expected = loop_evaluation(query[0], query[1], gallery[0], gallery[1])
        assert report.metrics[task] == pytest.approx(expected), task


def test_real_mosaic_pairs_through_eval(checkpoint, mosaic_dir, tmp_path):
    report = evaluate(checkpoint, mosaic_dir, EvalOptions(task="drone2sat", progress=False,
                                                          out_json=tmp_path / "m.json"))
    metrics = report.metrics["drone2sat"]
    assert 0.0 <= metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"] <= 1.0
    assert json.loads((tmp_path / "m.json").read_text())["layout"] == "view-folders"


def _named_id_pairs(root, query_folder, gallery_folder, query_ids, gallery_ids):
    """Query and gallery folders with named ids; an id's query image is a copy of its gallery image, so with the
    shared-weight model a query's embedding equals its own location's gallery embedding."""
    from data_helpers import noise_image, save

    for i, name in enumerate(sorted(set(query_ids) | set(gallery_ids))):
        image = noise_image(1000 + i, (48, 48))
        if name in query_ids:
            save(image, root / query_folder / name / "a.png")
        if name in gallery_ids:
            save(image, root / gallery_folder / name / "a.png")


@pytest.mark.parametrize("layout,task,query_folder,gallery_folder", [
    ("view-folders", "drone2sat", "./drone", "./satellite"),
    ("university1652", "drone2sat", "test/query_drone", "test/gallery_satellite"),
    ("cvusa", "ground2sat", "val/street", "val/satellite"),
])
def test_named_ids_share_one_label_table(checkpoint, tmp_path, layout, task, query_folder, gallery_folder):
    """paris must be scored against paris, not against the gallery's first id; a query id absent from the gallery
    (tokyo) has no true match and still counts in the denominator. Every folder layout."""
    from lpn_edge.data.layout import detect_layout

    root = tmp_path / "named"
    query_ids, gallery_ids = ("paris", "rome", "tokyo"), ("berlin", "paris", "rome")
    _named_id_pairs(root, query_folder, gallery_folder, query_ids, gallery_ids)
    assert detect_layout(root) == layout
    report = evaluate(checkpoint, root, EvalOptions(task=task, progress=False, out_json=tmp_path / "m.json"))

    from lpn_edge import load_model
    from lpn_edge.data.transforms import eval_transform
    from lpn_edge.data.university import RetrievalFolder

    model = load_model(checkpoint)
    table = {name: i for i, name in enumerate(("berlin", "paris", "rome", "tokyo"))}  # written out here, by name
    query = RetrievalFolder(root / query_folder, eval_transform((64, 64)), id_to_label=table)
    gallery = RetrievalFolder(root / gallery_folder, eval_transform((64, 64)), id_to_label=table)
    query_view = "drone" if task == "drone2sat" else "ground"
    with torch.no_grad():
        qf = model.embed(torch.stack([query[i][0] for i in range(len(query))]), query_view).numpy()
        gf = model.embed(torch.stack([gallery[i][0] for i in range(len(gallery))]), "satellite").numpy()
    assert report.metrics[task] == pytest.approx(evaluate_retrieval(qf, query.labels, gf, gallery.labels))
    assert report.metrics[task]["R@10"] == pytest.approx(2 / 3)  # tokyo is never matched to another id
    if query_view == "drone":  # drone and satellite share the trunk: a copy of the gallery image scores highest
        scores = qf @ gf.T
        assert [gallery.ids[j] for j in scores.argmax(axis=1)[:2]] == ["paris", "rome"]
        assert report.metrics[task]["R@1"] == pytest.approx(2 / 3)


def test_a_query_id_absent_from_the_gallery_never_matches_a_distractor(checkpoint, tmp_path):
    """Query 0003 has no gallery image; the distractor tile must not take over its label (0003 = gallery max + 1)."""
    root = tmp_path / "numbered"
    _named_id_pairs(root, "drone", "satellite", ("0001", "0002", "0003"), ("0001", "0002"))
    from data_helpers import make_class_tree

    make_class_tree(tmp_path / "tiles", ["x"], 1, seed=9)
    report = evaluate(checkpoint, root, EvalOptions(task="drone2sat", progress=False, distractors=tmp_path / "tiles",
                                                    out_json=tmp_path / "m.json"))
    assert report.metrics["drone2sat"]["R@10"] == pytest.approx(2 / 3)  # 3 gallery items: ranks 0..2 all < 10
    assert report.metrics["drone2sat"]["R@1"] == pytest.approx(2 / 3)  # 0001 and 0002 find their copies first


def _shift_right_black(tensor, pixels):
    """The paper's shifted query, written out on a normalised (3, H, W) tensor: content moves `pixels` columns
    right, the first `pixels` columns become normalised black, rows stay."""
    from lpn_edge.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    black = (0.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    moved = torch.empty_like(tensor)
    moved[:, :, :pixels] = black.reshape(3, 1, 1).to(tensor.dtype)
    moved[:, :, pixels:] = tensor[:, :, :-pixels]
    return moved


@pytest.mark.parametrize("pixels", [1, 5, 20])
def test_query_shift_is_the_papers_black_left_padding(checkpoint, world, pixels):
    """eval --shift P (default mode): resize, then P black columns on the left, content moved right, same size."""
    from data_helpers import noise_image

    from lpn_edge.data.transforms import eval_transform
    from lpn_edge.eval.evaluate import _Encoder

    image = noise_image(7, (90, 70))
    encoder = _Encoder(None, (64, 64), world, "university1652", EvalOptions(shift=pixels, progress=False))
    shifted, plain = encoder.transform(perturbed=True)(image), eval_transform((64, 64))(image)
    assert shifted.shape == plain.shape == (3, 64, 64)
    assert torch.equal(shifted, _shift_right_black(plain, pixels))
    assert torch.equal(encoder.transform(perturbed=False)(image), plain)  # the gallery is never shifted


def test_reflect_shift_mode_moves_both_axes(checkpoint, world):
    from data_helpers import noise_image

    from lpn_edge.data.transforms import eval_transform
    from lpn_edge.errors import LpnEdgeError
    from lpn_edge.eval.evaluate import _Encoder

    image = noise_image(8, (64, 64))
    options = EvalOptions(shift=3, shift_mode="reflect", progress=False)
    shifted = _Encoder(None, (64, 64), world, "university1652", options).transform(perturbed=True)(image)
    plain = eval_transform((64, 64))(image)
    assert torch.equal(shifted[:, 3:, 3:], plain[:, :-3, :-3])
    assert torch.equal(shifted[:, 3:, 2], plain[:, :-3, 1])  # reflected, not black
    with pytest.raises(LpnEdgeError, match="shift mode"):
        evaluate(checkpoint, world, EvalOptions(shift=3, shift_mode="wrap", progress=False))
    result = CliRunner().invoke(app, ["eval", str(checkpoint), "--data", str(world), "--shift", "3",
                                      "--shift-mode", "wrap"])
    assert result.exit_code == 2 and "shift mode must be one of paper, reflect" in result.output


def test_shifted_evaluation_equals_shifting_the_queries_by_hand(world, checkpoint, tmp_path):
    """End to end: eval --shift 9 gives the metrics of queries shifted in this test and an unshifted gallery."""
    from lpn_edge import load_model
    from lpn_edge.data.transforms import eval_transform
    from lpn_edge.data.university import RetrievalFolder

    report = evaluate(checkpoint, world, EvalOptions(task="drone2sat", shift=9, progress=False,
                                                     out_json=tmp_path / "m.json"))
    model = load_model(checkpoint)
    query = RetrievalFolder(world / "test" / "query_drone", eval_transform((64, 64)))
    gallery = RetrievalFolder(world / "test" / "gallery_satellite", eval_transform((64, 64)))
    with torch.no_grad():
        qf = model.embed(torch.stack([_shift_right_black(query[i][0], 9) for i in range(len(query))]), "drone")
        gf = model.embed(torch.stack([gallery[i][0] for i in range(len(gallery))]), "satellite")
    expected = evaluate_retrieval(qf.numpy(), query.labels, gf.numpy(), gallery.labels)
    assert report.metrics["drone2sat"] == pytest.approx(expected)
    unshifted = evaluate_retrieval(model.embed(torch.stack([query[i][0] for i in range(len(query))]), "drone")
                                   .detach().numpy(), query.labels, gf.numpy(), gallery.labels)
    assert report.metrics["drone2sat"] != pytest.approx(unshifted)  # the shift reached the query images


@pytest.fixture
def tf32_enabled():
    """Turn TF32 on (PyTorch's cuDNN default; matmul as a user may set it) for the test, restore after."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32, matmul.allow_tf32 = True, True
    yield
    cudnn.allow_tf32, matmul.allow_tf32 = saved


def _tf32_flags():
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_exact_fp32_sets_and_restores_the_tf32_flags(tf32_enabled):
    from lpn_edge.eval.features import exact_fp32

    with exact_fp32():
        assert _tf32_flags() == (False, False)
    assert _tf32_flags() == (True, True)
    with pytest.raises(RuntimeError, match="boom"), exact_fp32():
        raise RuntimeError("boom")
    assert _tf32_flags() == (True, True)


def test_feature_extraction_runs_the_model_without_tf32(world, checkpoint, tf32_enabled):
    """The fp32 evaluation must not let cuDNN / cuBLAS use TF32: the flags seen inside the model's forward pass."""
    from lpn_edge import load_model
    from lpn_edge.data.transforms import eval_transform
    from lpn_edge.data.university import RetrievalFolder

    model = load_model(checkpoint)
    seen = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    handle = first_conv.register_forward_hook(lambda *_: seen.append(_tf32_flags()))
    dataset = RetrievalFolder(world / "test" / "query_drone", eval_transform((64, 64)))
    features = extract_features(model, dataset, "drone", flip=True, batch_size=3, device="cpu", progress=False)
    handle.remove()
    assert features.shape == (len(dataset), model.config.embedding_dim)
    assert seen and set(seen) == {(False, False)}
    assert _tf32_flags() == (True, True)  # restored for the caller
