"""The single definition of LPN: backbones, partitions, heads and the model.

The names below are imported on first use, so that `lpn_edge.model.backbones` (the backbone table, which config
validation reads) can be imported without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lpn_edge.model.lpn import LPN, EmbeddingModel, normalise_parts

__all__ = ["LPN", "EmbeddingModel", "build_model", "normalise_parts"]


def __getattr__(name: str) -> Any:
    if name in ("LPN", "EmbeddingModel", "normalise_parts"):
        from lpn_edge.model import lpn

        return getattr(lpn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(config, backbone_weights: str = "none") -> LPN:
    """Build an LPN for a `ModelConfig`; `backbone_weights` is "imagenet", "none" or a path (see model.weights)."""
    from lpn_edge.model.lpn import LPN
    from lpn_edge.model.weights import load_backbone_weights

    model = LPN(config)
    if backbone_weights != "none":
        for trunk in model.backbones.values():
            load_backbone_weights(trunk, config.backbone, backbone_weights)
    return model
