"""Backbone initialisation: torchvision's ImageNet weights (from the torch cache) or a local file."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from torch import nn

from lpn_edge.errors import LpnEdgeError
from lpn_edge.model.backbones import backbone_spec


def imagenet_cache_path(backbone: str) -> tuple[Path, str]:
    """Where torch looks for the backbone's ImageNet weights (the table's `imagenet_url`), and that URL."""
    spec = backbone_spec(backbone)
    if spec.imagenet_url is None:
        raise LpnEdgeError(f"no ImageNet weights are known for backbone {backbone}: pass --backbone-weights PATH "
                           f"(a state_dict of the trunk) or none")
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(spec.imagenet_url), spec.imagenet_url


def _imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    path, url = imagenet_cache_path(backbone)
    if not path.exists():
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)  # an offline machine should fail in seconds, not hang
        try:
            torch.hub.load_state_dict_from_url(url, progress=False)
        except Exception as exc:  # noqa: BLE001 - any download failure gets the same advice
            raise LpnEdgeError(
                f"ImageNet weights for {backbone} are not in the torch cache and could not be downloaded ({exc}). "
                f"Place the file {path.name} (from {url}) at {path}, or pass --backbone-weights PATH or none."
            ) from None
        finally:
            socket.setdefaulttimeout(previous)
    return _read_state_dict(path)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LpnEdgeError(f"backbone weights file {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise LpnEdgeError(
            f"cannot read backbone weights {path}: not a torch state_dict ({type(exc).__name__})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LpnEdgeError(f"backbone weights {path} must hold a state_dict, got {type(state).__name__}")
    return state


def load_backbone_weights(trunk: nn.Module, backbone: str, source: str) -> None:
    """Fill `trunk` from "imagenet" or a torchvision-style state_dict file; the ImageNet classifier (the table's
    `classifier_prefixes`: ResNet fc.*, VGG classifier.*) is not part of the trunk and is ignored."""
    spec = backbone_spec(backbone)
    state = _imagenet_state_dict(backbone) if source == "imagenet" else _read_state_dict(Path(source))
    wanted = trunk.state_dict()
    usable = {k: v for k, v in state.items() if not k.startswith(spec.classifier_prefixes)}
    missing = [k for k in wanted if k not in usable]
    unexpected = [k for k in usable if k not in wanted]
    mismatched = [k for k, v in usable.items() if k in wanted and v.shape != wanted[k].shape]
    if missing or unexpected or mismatched:
        raise LpnEdgeError(
            f"backbone weights {source} do not fit {backbone}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(mismatched)} shape mismatches "
            f"(e.g. {mismatched[:3]})"
        )
    trunk.load_state_dict(usable)
