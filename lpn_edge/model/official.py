"""Import of state_dicts saved by the authors' code (wtyhub/LPN three_view_net / two_view_net with LPN).

Official keys (DESIGN.md section 3): `model_1.model.*` satellite trunk, `model_2.model.*` ground trunk,
`model_3.model.*` drone trunk (a duplicate of model_1 when weights are shared, and sometimes absent then),
`classifier{i}.add_block.{0,1}.*` and `classifier{i}.classifier.0.*`. Settings not recoverable from the tensors
(stride, views when ambiguous, dropout, image size) come from the run's opts.yaml or explicit options; a ResNet's
layer4 stride changes no weight shape, so without opts.yaml it must be given (the authors' scripts default to 2).
Their two-view models pool the satellite image with rings listed from the border inwards and the ground panorama
with rows, except with shared weights, where the ground branch is the satellite branch itself (rings too); their
three-view models use centre-outwards rings for every view.

The backbone is the row of the backbone table (`lpn_edge.model.backbones`) whose trunk has exactly the tensor names
and shapes under `model_1.<its official_prefix>`, the ImageNet classifier keys of the row aside.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from lpn_edge.config import ModelConfig, RunConfig
from lpn_edge.errors import LpnEdgeError
from lpn_edge.model.backbones import BackboneSpec, backbone_names, backbone_spec, backbone_specs

_TRUNK_PREFIX = re.compile(r"^model_(\d)\.(.+)$")  # model_<i>.<official_prefix of the backbone><trunk key>
_CLASSIFIER = re.compile(r"^classifier(\d+)\.(.+)$")
_GLOBAL_HEAD = re.compile(r"^classifier\.")


@dataclass
class ConversionReport:
    config: RunConfig
    # setting -> "weights" | "opts.yaml" | "option" | "default"
    settings_source: dict[str, str] = field(default_factory=dict)
    ignored_keys: list[str] = field(default_factory=list)
    dropped_duplicate: str | None = None


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise LpnEdgeError(f"official checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign files
        raise LpnEdgeError(f"{path} is not a readable PyTorch state_dict ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LpnEdgeError(f"{path} does not look like an official LPN state_dict (not a mapping)")
    # Models saved from nn.DataParallel carry a `module.` prefix; the authors' global-pooling baseline (their
    # ft_net, our LPN with one part) has a single `classifier.*` head.
    state = {_GLOBAL_HEAD.sub("classifier0.", str(k).removeprefix("module.")): v for k, v in state.items()}
    if not any(_CLASSIFIER.match(k) for k in state):
        raise LpnEdgeError(f"{path} does not look like an official LPN state_dict (no classifier<i>.* keys)")
    return state


def read_official_opts(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        opts = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LpnEdgeError(f"cannot read opts file {path}: {exc}") from None
    if not isinstance(opts, dict):
        raise LpnEdgeError(f"opts file {path} must be a mapping, got {type(opts).__name__}")
    return opts


def _trunks(state: dict[str, torch.Tensor]) -> dict[int, dict[str, torch.Tensor]]:
    trunks: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _TRUNK_PREFIX.match(key)
        if match:
            trunks.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return trunks


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _trunk_key(spec: BackboneSpec, rest: str) -> str | None:
    """Our trunk key for the part of an official key after `model_<i>.`; None for the unused ImageNet classifier
    (the authors' trunks keep it but never call it); `rest` itself when it is not under the backbone's prefix."""
    if not rest.startswith(spec.official_prefix):
        return rest
    key = rest[len(spec.official_prefix):]
    return None if key.startswith(spec.classifier_prefixes) else key


def _signature(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    # Checkpoints of PyTorch < 0.4.1 lack BatchNorm's num_batches_tracked; the loading step reports such gaps.
    return {k: v for k, v in shapes.items() if not k.endswith("num_batches_tracked")}


@cache
def _trunk_shapes(spec: BackboneSpec) -> dict[str, tuple[int, ...]]:
    """The parameter and buffer shapes of the row's trunk, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        trunk = spec.builder(spec)  # strides change no shape
    return _signature({k: tuple(v.shape) for k, v in trunk.state_dict().items()})


def _infer_backbone(trunk: dict[str, torch.Tensor], source: str | Path) -> str:
    """The registered backbone whose trunk has exactly the names and shapes of the official `model_1` trunk.

    Without an exact match, the row sharing the most (name, shape) pairs: loading then lists what differs."""
    overlap: dict[str, int] = {}
    for spec in backbone_specs():
        keys = {rest: _trunk_key(spec, rest) for rest in trunk}
        shapes = _signature({key: tuple(trunk[rest].shape) for rest, key in keys.items() if key is not None})
        wanted = _trunk_shapes(spec)
        overlap[spec.name] = -1 if shapes == wanted else sum(wanted.get(k) == v for k, v in shapes.items())
    exact = [name for name, common in overlap.items() if common == -1]
    if len(exact) > 1:
        raise LpnEdgeError(f"{source}: the model_1 trunk fits several backbones ({', '.join(exact)})")
    if exact:
        return exact[0]
    best = max(overlap, key=overlap.get)
    if overlap[best] == 0:
        raise LpnEdgeError(f"{source}: the model_1 trunk ({len(trunk)} tensors, e.g. {', '.join(list(trunk)[:3])}) "
                           f"is none of the known backbones ({', '.join(backbone_names())})")
    return best


def official_model_config(state: dict[str, torch.Tensor], opts: dict[str, Any] | None = None,
                          source: str | Path = "the checkpoint", **options: Any) -> ConversionReport:
    """Work out the ModelConfig of an official state_dict. `options` (views, stride, pool, classes, block) win over
    opts.yaml, which wins over what the tensors say; a contradiction with the tensors is an error. `source` names
    the checkpoint in error messages."""
    opts = opts or {}
    sources: dict[str, str] = {}

    def setting(name: str, opts_key: str, from_weights: Any, default: Any) -> Any:
        for source, value in (("option", options.get(name)), ("opts.yaml", opts.get(opts_key)),
                              ("weights", from_weights), ("default", default)):
            if value is not None:
                sources[name] = source
                return value
        return None

    trunks = _trunks(state)
    if 1 not in trunks:
        raise LpnEdgeError("official state_dict has no model_1.model.* keys (the satellite backbone)")
    parts_in_weights = len({m.group(1) for k in state if (m := _CLASSIFIER.match(k))})
    head_weight = state.get("classifier0.add_block.0.weight")
    classes_weight = state.get("classifier0.classifier.0.weight")
    if head_weight is None or classes_weight is None:
        raise LpnEdgeError("official state_dict lacks classifier0.add_block.0.weight or "
                           "classifier0.classifier.0.weight")
    backbone = _infer_backbone(trunks[1], source)
    spec = backbone_spec(backbone)
    pool_from_weights = "avg+max" if head_weight.shape[1] == 2 * spec.out_channels else None
    views_from_weights = 3 if 3 in trunks else None
    views = int(setting("views", "views", views_from_weights, None) or 0)
    if views not in (2, 3):
        raise LpnEdgeError("cannot tell a two-view model from a three-view model whose shared model_3 keys were "
                           "dropped: pass --views 2|3 or --opts opts.yaml")
    shared_partner = 3 if views == 3 else 2
    share_from_weights = _same(trunks[1], trunks[shared_partner]) if shared_partner in trunks else True
    share = bool(setting("share_weights", "share", share_from_weights, None))
    parts = int(setting("parts", "block", parts_in_weights, None))
    # Conv strides leave the weight shapes unchanged, so a ResNet's stride cannot come from the tensors. Backbones
    # without a stride rule ignore the option (the authors' VGG16 nets: their layer4 stride code is commented out).
    stride = setting("stride", "stride", None, None if spec.stride_convs else 1)
    if stride is None:
        raise LpnEdgeError(f"{source}: the {backbone} stride ({' + '.join(spec.stride_convs)}) is not in the weights"
                           f"{' nor in opts.yaml' if opts else ''}: pass --stride 1|2 (the authors' training scripts "
                           f"default to 2) or --opts with the run's opts.yaml")
    # two_view_net(share_weight=True) sets model_2 = model_1: street images then use the satellite rings.
    two_view_ground = "ring_outer_first" if share else "row"
    config = ModelConfig(
        backbone=backbone,
        stride=int(stride),
        parts=parts,
        pool=str(setting("pool", "pool", pool_from_weights, "avg")),
        views=views,
        share_weights=share,
        dropout=float(setting("dropout", "droprate", None, 0.75)),
        num_classes=int(setting("num_classes", "nclasses", classes_weight.shape[0], None)),
        bottleneck=int(head_weight.shape[0]),
        satellite_partition="ring" if views == 3 else "ring_outer_first",
        ground_partition="ring" if views == 3 else two_view_ground,
        image_size=(int(setting("height", "h", None, 256)), int(setting("width", "w", None, 256))),
    )
    sources["backbone"] = "weights"
    return ConversionReport(config=RunConfig(model=config), settings_source=sources)


def map_official_state_dict(state: dict[str, torch.Tensor], config: ModelConfig,
                            report: ConversionReport) -> dict[str, torch.Tensor]:
    """Rename official keys to ours. Unused torchvision classifier keys are dropped and listed in the report."""
    trunk_branch = {1: "satellite", 2: "ground", 3: "drone"}
    if config.views == 2:
        trunk_branch = {1: "satellite", 2: "ground"}
    shared_duplicate = 3 if config.views == 3 else 2
    spec = backbone_spec(config.backbone)
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        trunk_match, head_match = _TRUNK_PREFIX.match(key), _CLASSIFIER.match(key)
        if trunk_match:
            index, rest = int(trunk_match.group(1)), trunk_match.group(2)
            if not rest.startswith(spec.official_prefix):
                mapped[key] = value  # not a trunk tensor: reported as unexpected
                continue
            trunk_key = _trunk_key(spec, rest)
            if trunk_key is None:
                report.ignored_keys.append(key)
                continue
            if config.share_weights and index == shared_duplicate:
                report.dropped_duplicate = f"model_{index}"
                continue
            branch = trunk_branch.get(index)
            mapped[f"backbones.{branch}.{trunk_key}" if branch else key] = value
        elif head_match:
            mapped[f"classifiers.{head_match.group(1)}.{head_match.group(2)}"] = value
        else:
            mapped[key] = value
    return mapped


def convert_official(src: str | Path, opts_path: str | Path | None = None, **options: Any):
    """Read an official state_dict (+ optional opts.yaml) and return (LPN, ConversionReport).

    Every tensor must be used and every shape must match; otherwise an LpnEdgeError lists the missing, unexpected
    and mis-shaped keys.
    """
    from lpn_edge.model import LPN

    state = read_official_state_dict(src)
    opts = read_official_opts(opts_path) if opts_path else None
    report = official_model_config(state, opts, source=src, **{k: v for k, v in options.items() if v is not None})
    config = report.config.model
    if config.share_weights and (3 if config.views == 3 else 2) in _trunks(state):
        partner = 3 if config.views == 3 else 2
        if not _same(_trunks(state)[1], _trunks(state)[partner]):
            raise LpnEdgeError(f"{src}: weights are declared shared but model_{partner} differs from model_1")
    model = LPN(config)
    mapped = map_official_state_dict(state, config, report)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in mapped)
    unexpected = sorted(k for k in mapped if k not in expected)
    misshaped = sorted(f"{k} {tuple(mapped[k].shape)} vs {tuple(expected[k].shape)}"
                       for k in mapped if k in expected and mapped[k].shape != expected[k].shape)
    if missing or unexpected or misshaped:
        def listing(name: str, keys: list[str]) -> str:
            more = ", ..." if len(keys) > 5 else ""
            return f"{len(keys)} {name}" + (f" ({', '.join(keys[:5])}{more})" if keys else "")
        raise LpnEdgeError(
            f"{src} does not match a {config.views}-view {config.backbone} LPN with {config.parts} parts: "
            f"{listing('missing', missing)}; {listing('unexpected', unexpected)}; {listing('mis-shaped', misshaped)}"
        )
    model.load_state_dict(mapped)
    return model.eval(), report
