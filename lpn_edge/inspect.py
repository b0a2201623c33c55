"""`lpn-edge inspect`: what a config or checkpoint builds, and the shape of its embedding."""

from __future__ import annotations

from pathlib import Path

from lpn_edge.errors import LpnEdgeError


def inspect_model(source: str | Path, view: str = "drone") -> str:
    """Build the model of a config (random weights) or load a checkpoint, embed one blank image, describe it."""
    import torch

    from lpn_edge.checkpoint import load_model
    from lpn_edge.config import load_config
    from lpn_edge.model import build_model

    source = Path(source)
    if source.suffix in (".yaml", ".yml"):
        config = load_config(source).model
        model = build_model(config, backbone_weights="none").eval()
    elif source.suffix == ".pt":
        model = load_model(source)
        config = model.config
    else:
        raise LpnEdgeError(f"{source}: expected a run config (.yaml) or an lpn-edge checkpoint (.pt)")
    if view not in model.views:
        raise LpnEdgeError(f"view {view!r} is not part of this model; expected one of {', '.join(model.views)}")
    height, width = config.image_size
    with torch.no_grad():
        feature_map = model.feature_map(torch.zeros(1, 3, height, width), view)
        embedding = model.embed(torch.zeros(1, 3, height, width), view)
    params = sum(p.numel() for p in model.parameters())
    return "\n".join([
        f"{source}: {config.views}-view LPN, backbone {config.backbone} (stride {config.stride}), "
        f"{params / 1e6:.1f} M parameters",
        f"  branches: {', '.join(f'{v}->{b}' for v, b in model.branch_of.items())}",
        f"  {view} input (1, 3, {height}, {width}) -> feature map {tuple(feature_map.shape)} -> "
        f"{config.parts} parts ({model.partition_kind(view)}, {config.pool}) -> embedding {tuple(embedding.shape)}",
    ])
