import pytest

from lpn_edge.config import RunConfig, load_config, parse_override, save_config
from lpn_edge.errors import LpnEdgeError

CONFIGS = ["university1652.yaml", "university1652-authors.yaml", "cvusa.yaml", "cvact.yaml", "cpu-small.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_recipes_load(name):
    from pathlib import Path

    import lpn_edge

    config = load_config(Path(lpn_edge.__file__).parent / "configs" / name)
    assert config.model.parts >= 1


def test_paper_recipe_values():
    from pathlib import Path

    import lpn_edge

    paper = load_config(Path(lpn_edge.__file__).parent / "configs" / "university1652.yaml")
    model = paper.model
    assert (model.backbone, model.stride, model.parts, model.dropout) == ("resnet50", 1, 4, 0.75)
    assert paper.model.share_weights and paper.model.views == 3 and paper.data.use_google
    assert (paper.train.lr_backbone, paper.train.lr_head, paper.train.lr_steps) == (0.001, 0.01, (80,))
    authors = load_config(Path(lpn_edge.__file__).parent / "configs" / "university1652-authors.yaml")
    assert (authors.train.lr_backbone, authors.train.lr_head) == (0.0001, 0.001)
    assert paper.train.warmup_epochs == authors.train.warmup_epochs == 0  # run.sh passes no --warm_epoch


@pytest.mark.parametrize("name", ["cvusa.yaml", "cvact.yaml"])
def test_two_view_recipes_match_the_authors_scripts(name):
    """run_cvusa.sh / run_cvact.sh (ResNet-50 lines) with train_cvusa.py / train_cvact.py defaults: --lr 0.05 (heads;
    the backbone at 0.1 x lr), --warm_epoch 5, --batchsize 16, --block 8, --stride 1, 256 px, --droprate left at 0.5,
    no --share, RandomAffine(90) on satellite images, StepLR(80, 0.1), 120 epochs."""
    from pathlib import Path

    import lpn_edge

    config = load_config(Path(lpn_edge.__file__).parent / "configs" / name)
    model, data, train = config.model, config.data, config.train
    assert (model.backbone, model.stride, model.parts, model.pool, model.views) == ("resnet50", 1, 8, "avg", 2)
    assert (model.dropout, model.share_weights, model.image_size) == (0.5, False, (256, 256))
    assert (data.batch_size, data.pad, data.satellite_rotation, data.polar) == (16, 10, True, False)
    assert (train.lr_head, train.lr_backbone, train.warmup_epochs) == (0.05, 0.005, 5)
    assert (train.epochs, train.lr_steps, train.lr_gamma) == (120, (80,), 0.1)
    assert (train.momentum, train.nesterov, train.weight_decay) == (0.9, True, 0.0005)


def test_round_trip(tmp_path):
    config = RunConfig().replace({"model.parts": 6, "train.lr_steps": [10, 20], "model.image_size": [192, 160]})
    save_config(config, tmp_path / "run.yaml")
    assert load_config(tmp_path / "run.yaml") == config


def test_unknown_key_names_key_file_and_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  partz: 4\n")
    with pytest.raises(LpnEdgeError) as info:
        load_config(path)
    message = str(info.value)
    assert "model.partz" in message and str(path) in message and "parts" in message and "backbone" in message


def test_unknown_section(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("modle:\n  parts: 4\n")
    with pytest.raises(LpnEdgeError, match="'modle'.*model, data, train$"):
        load_config(path)


@pytest.mark.parametrize("text,match", [
    ("model:\n  parts: four\n", "model.parts.*number"),
    ("model:\n  backbone: resnet101\n", "model.backbone must be one of"),
    ("train:\n  nesterov: 1\n", "train.nesterov.*true or false"),
    ("model: [1, 2]\n", "must be a mapping"),
    ("model:\n  parts: [4\n", "not valid YAML"),
])
def test_bad_values_are_errors(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(LpnEdgeError, match=match):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(LpnEdgeError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_overrides():
    assert parse_override("train.epochs=2") == ("train.epochs", 2)
    assert parse_override("model.image_size=[96, 96]") == ("model.image_size", [96, 96])
    with pytest.raises(LpnEdgeError, match="section.key=value"):
        parse_override("epochs")
    with pytest.raises(LpnEdgeError, match="unknown config key"):
        RunConfig().replace({"train.epoch": 3})


def test_polar_excludes_satellite_rotation():
    with pytest.raises(LpnEdgeError, match="satellite_rotation: false"):
        RunConfig().replace({"data.polar": True})
    assert RunConfig().replace({"data.polar": True, "data.satellite_rotation": False}).data.polar


def test_export_section_is_refused_in_yaml_and_dropped_from_old_checkpoints(tmp_path):
    """Export options live in ExportOptions; an old checkpoint's unused export section still loads."""
    path = tmp_path / "with-export.yaml"
    path.write_text("export:\n  opset: 18\n")
    with pytest.raises(LpnEdgeError, match="has an export section, which a run config no longer holds"):
        load_config(path)
    old = RunConfig().to_dict() | {"export": {"opset": 18, "view": "drone"}}
    assert RunConfig.from_dict(old, "old checkpoint") == RunConfig()
