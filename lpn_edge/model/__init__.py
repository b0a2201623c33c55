"""The single definition of LPN: backbones, partitions, heads and the model."""

from lpn_edge.model.lpn import LPN, EmbeddingModel, normalise_parts

__all__ = ["LPN", "EmbeddingModel", "build_model", "normalise_parts"]


def build_model(config, backbone_weights: str = "none") -> LPN:
    """Build an LPN for a `ModelConfig`; `backbone_weights` is "imagenet", "none" or a path (see model.weights)."""
    from lpn_edge.model.weights import load_backbone_weights

    model = LPN(config)
    if backbone_weights != "none":
        for trunk in model.backbones.values():
            load_backbone_weights(trunk, config.backbone, backbone_weights)
    return model
