"""Run configuration: small frozen dataclasses; YAML is only their saved form.

A config file has up to three sections (``model``, ``data``, ``train``); any key that is not a field is an error
naming the key, the file and the valid keys, so a typo never silently falls back to a default. Export options are
not part of a run: they are `lpn_edge.export.options.ExportOptions`, given to `lpn-edge export` (a YAML file with an
``export`` section is refused with that hint; checkpoints written before carry an unused one, dropped on load).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpn_edge.errors import LpnEdgeError
from lpn_edge.model.backbones import backbone_spec

POOLS = ("avg", "max", "avg+max")
# ring: square rings from the centre outwards (the paper); ring_outer_first: the same rings listed from the border
# inwards (the authors' two-view CVUSA/CVACT satellite branch); row / column: equal strips (panoramas).
PARTITIONS = ("ring", "ring_outer_first", "row", "column")
LEGACY_EXPORT_SECTION = "export"  # held unused export defaults until ExportOptions replaced them


@dataclass(frozen=True)
class ModelConfig:
    """What defines the network (and so the checkpoint's shapes)."""

    backbone: str = "resnet50"  # a row of the backbone table (lpn_edge.model.backbones)
    stride: int = 1  # 1: layer4 keeps 1/16 resolution (256 px -> 16x16 map); 2: torchvision default (1/32)
    parts: int = 4  # n, the number of partition parts (1 = global pooling, the paper's baseline)
    pool: str = "avg"
    views: int = 3  # 3: satellite + drone (+ground); 2: satellite + ground (CVUSA/CVACT)
    share_weights: bool = True  # satellite and drone share one backbone
    dropout: float = 0.75
    num_classes: int = 701
    bottleneck: int = 512
    satellite_partition: str = "ring"  # also used by the drone view
    ground_partition: str = "ring"
    image_size: tuple[int, int] = (256, 256)  # (H, W) the model is trained and exported at

    def __post_init__(self) -> None:
        backbone_spec(self.backbone, "model.backbone")
        _check_choice("model.pool", self.pool, POOLS)
        _check_choice("model.stride", self.stride, (1, 2))
        _check_choice("model.views", self.views, (2, 3))
        _check_choice("model.satellite_partition", self.satellite_partition, PARTITIONS)
        _check_choice("model.ground_partition", self.ground_partition, PARTITIONS)
        if self.parts < 1:
            raise LpnEdgeError(f"model.parts must be >= 1, got {self.parts}")
        if self.num_classes < 1:
            raise LpnEdgeError(f"model.num_classes must be >= 1, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise LpnEdgeError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if len(self.image_size) != 2 or min(self.image_size) < 32:
            raise LpnEdgeError(f"model.image_size must be (H, W) with both >= 32, got {self.image_size}")

    @property
    def embedding_dim(self) -> int:
        return self.bottleneck * self.parts


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are sampled and augmented."""

    dataset: str = "university1652"  # university1652 | cvusa | cvact
    pad: int = 10  # edge padding before the random crop (paper)
    color_jitter: bool = False
    satellite_rotation: bool = True  # random 90-degree-free rotation of satellite images (paper)
    use_google: bool = True  # the extra Google images of University-1652 train the ground branch
    polar: bool = False  # polar-transform satellite images (CVUSA/CVACT)
    batch_size: int = 8
    num_workers: int = 4
    # satellite: an epoch ends when every satellite image (class) was drawn once (the authors' loop, ~701 drone
    # images per epoch on University-1652); drone: an epoch draws every drone image once.
    epoch: str = "satellite"

    def __post_init__(self) -> None:
        _check_choice("data.dataset", self.dataset, ("university1652", "cvusa", "cvact"))
        _check_choice("data.epoch", self.epoch, ("satellite", "drone"))
        if self.batch_size < 2:
            # BatchNorm in training mode needs two items per batch to estimate a variance
            raise LpnEdgeError(f"data.batch_size must be >= 2 (BatchNorm needs two items per batch), "
                               f"got {self.batch_size}")
        if self.polar and self.satellite_rotation:
            raise LpnEdgeError("data.polar with data.satellite_rotation: rotating a polar-transformed satellite image "
                               "breaks its geometry; set satellite_rotation: false")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe (paper section IV-B)."""

    epochs: int = 120
    lr_backbone: float = 0.001
    lr_head: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_steps: tuple[int, ...] = (80,)
    lr_gamma: float = 0.1
    # The authors' warm-up (--warm_epoch, 0 in their University-1652 script, 5 in the CVUSA/CVACT ones): the loss of
    # the first warmup_epochs epochs is scaled by a factor rising linearly from 0.1 to 1, step by step.
    warmup_epochs: int = 0
    seed: int = 0
    # auto: bf16 on GPUs with native bf16 (compute capability >= 8.0), else fp16 with loss scaling; fp32 on CPU
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: bool = True  # only used on GPU
    checkpoint_every: int = 10
    backbone_weights: str = "imagenet"  # imagenet | none | PATH to a torchvision-style state_dict

    def __post_init__(self) -> None:
        _check_choice("train.precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        if self.epochs < 1:
            raise LpnEdgeError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.warmup_epochs < 0:
            raise LpnEdgeError(f"train.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.checkpoint_every < 1:
            raise LpnEdgeError(f"train.checkpoint_every must be >= 1, got {self.checkpoint_every}")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> RunConfig:
        if isinstance(data, dict) and LEGACY_EXPORT_SECTION in data:  # checkpoints written before ExportOptions
            data = {key: value for key, value in data.items() if key != LEGACY_EXPORT_SECTION}
        return _build(cls, data, source, prefix="")

    def replace(self, overrides: dict[str, Any], source: str = "<overrides>") -> RunConfig:
        """Apply dotted overrides such as ``{"train.epochs": 2}`` and return a new config."""
        merged = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in merged or not key:
                raise LpnEdgeError(
                    f"unknown config key {dotted!r} in {source}; expected SECTION.KEY with SECTION one of "
                    f"{', '.join(merged)}"
                )
            merged[section][key] = value
        return RunConfig.from_dict(merged, source)


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML run config; a missing file, bad YAML or unknown key is an `LpnEdgeError`."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise LpnEdgeError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise LpnEdgeError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise LpnEdgeError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    if LEGACY_EXPORT_SECTION in data:
        raise LpnEdgeError(f"config {path} has an export section, which a run config no longer holds: give export "
                           "options to `lpn-edge export` (see lpn-edge export --help)")
    return RunConfig.from_dict(data, str(path))


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write the config as YAML (atomically)."""
    import yaml

    from lpn_edge.fileio import atomic_write_text

    return atomic_write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a command-line override ``section.key=value``; the value is read as YAML (numbers, lists, booleans)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise LpnEdgeError(f"override {text!r} must look like section.key=value, e.g. train.epochs=2")
    return key.strip(), yaml.safe_load(raw)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise LpnEdgeError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise LpnEdgeError(f"{prefix.rstrip('.') or 'config'} in {source} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise LpnEdgeError(
            f"unknown config key '{prefix}{unknown[0]}' in {source}; valid keys"
            f"{' of ' + prefix.rstrip('.') if prefix else ''}: {', '.join(names)}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, source, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(hint, value, f"{prefix}{name}", source)
    try:
        return cls(**kwargs)
    except LpnEdgeError as exc:
        raise LpnEdgeError(f"{exc} (in {source})") from None


def _coerce(hint: Any, value: Any, name: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise LpnEdgeError(f"{name} in {source} must be a list, got {value!r}")
        (item_type, *_rest) = typing.get_args(hint)
        return tuple(_coerce(item_type, v, name, source) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise LpnEdgeError(f"{name} in {source} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LpnEdgeError(f"{name} in {source} must be a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise LpnEdgeError(f"{name} in {source} must be an integer, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise LpnEdgeError(f"{name} in {source} must be a string, got {value!r}")
        return value
    return value


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
