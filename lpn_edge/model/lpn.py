"""The Local Pattern Network: shared-weight backbones, partition pooling and one ClassBlock per part."""

from __future__ import annotations

import math

import torch
from torch import nn

from lpn_edge.config import ModelConfig
from lpn_edge.errors import LpnEdgeError
from lpn_edge.model.backbones import backbone_spec, build_backbone
from lpn_edge.model.heads import ClassBlock
from lpn_edge.model.partition import partition_matrix, pool_parts, pool_parts_matmul

# Which backbone encodes which input: the extra Google images of University-1652 go through the ground branch.
BRANCH_INPUTS = {"satellite": "satellite", "drone": "drone", "ground": "ground", "google": "ground"}
_POOLING_BUFFER = "pooling_"  # + partition kind: the (h*w, n) avg pooling matrix at the configured image size


class LPN(nn.Module):
    """LPN with two views (satellite + ground) or three (satellite + drone + ground).

    `backbones` holds one trunk per distinct branch; with `share_weights` the drone view (three views) or the ground
    view (two views) uses the satellite trunk. Training mode: `forward({view: images})` returns
    `{view: [logits of part 0, ..., part n-1]}`, each (B, classes). Eval mode: `embed` gives retrieval embeddings.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.branch_of = self._branches(config)
        self.backbones = nn.ModuleDict(
            {name: build_backbone(config.backbone, config.stride) for name in dict.fromkeys(self.branch_of.values())}
        )
        spec = backbone_spec(config.backbone)
        in_features = spec.out_channels * (2 if config.pool == "avg+max" else 1)
        self.classifiers = nn.ModuleList(
            ClassBlock(in_features, config.num_classes, config.dropout, config.bottleneck) for _ in range(config.parts)
        )
        # The avg pooling matrices of the configured input size are built now, in eager mode (torch.export and the
        # ONNX exporter cannot trace their construction: they read Python floats off tensors), and held as
        # non-persistent buffers: `.to(device)` moves them once, and state_dict keys stay those of the weights.
        # Stored in the default dtype (float32): a model cast to float64 pools with float32-rounded weights.
        self.pooling_map_size = self.feature_map_size(config.image_size)
        for kind in dict.fromkeys((config.satellite_partition, config.ground_partition)):
            weights = partition_matrix(kind, *self.pooling_map_size, config.parts).to(torch.get_default_dtype())
            self.register_buffer(_POOLING_BUFFER + kind, weights, persistent=False)

    @staticmethod
    def _branches(config: ModelConfig) -> dict[str, str]:
        return view_branches(config)

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.branch_of)

    def check_view(self, view: str) -> str:
        """The branch input a view uses ("google" -> "ground"); an LpnEdgeError for a view the model lacks."""
        branch_view = BRANCH_INPUTS.get(view)
        if branch_view not in self.branch_of:
            raise LpnEdgeError(f"view {view!r} is not part of this {self.config.views}-view model; expected one of "
                               f"{', '.join(self.views)}")
        return branch_view

    def feature_map(self, images: torch.Tensor, view: str) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C, h, w) backbone feature map of the view's branch."""
        return self.backbones[self.branch_of[self.check_view(view)]](images)

    def feature_map_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) cells of the backbone's feature map for (H, W) input pixels: each side divided by the backbone's
        stride (16 or 32), rounded up (the stride-2 convolutions and pooling of a ResNet pad to ceil)."""
        stride = backbone_spec(self.config.backbone).feature_stride(self.config.stride)
        return tuple(-(-int(side) // stride) for side in image_size)  # type: ignore[return-value]

    def partition_kind(self, view: str) -> str:
        view = self.check_view(view)
        return self.config.ground_partition if view == "ground" else self.config.satellite_partition

    def pooling_weights(self, view: str) -> torch.Tensor:
        """The view's (h*w, n) avg pooling matrix for the configured image size (a non-persistent buffer)."""
        return getattr(self, _POOLING_BUFFER + self.partition_kind(view))

    def pool(self, feature_map: torch.Tensor, view: str) -> torch.Tensor:
        """(B, C, h, w) -> (B, C', n) part features (C' = 2C for avg+max, avg channels first).

        Avg pooling runs as one MatMul (also the avg half of avg+max), max as a masked max per part: the same form
        is trained, evaluated and exported to ONNX. At the configured image size the MatMul uses the model's
        buffer; other sizes build (and cache) their matrix.
        """
        kind, parts, pool = self.partition_kind(view), self.config.parts, self.config.pool
        pooled = []
        if pool in ("avg", "avg+max"):
            pooled.append(self._pool_avg(feature_map, view))
        if pool in ("max", "avg+max"):
            pooled.append(pool_parts(feature_map, parts, kind, "max"))
        return pooled[0] if len(pooled) == 1 else torch.cat(pooled, 1)

    def _pool_avg(self, feature_map: torch.Tensor, view: str) -> torch.Tensor:
        if tuple(feature_map.shape[-2:]) != self.pooling_map_size:
            return pool_parts_matmul(feature_map, self.config.parts, self.partition_kind(view))
        weights = self.pooling_weights(view)
        return feature_map.flatten(2) @ weights.to(device=feature_map.device, dtype=feature_map.dtype)

    def part_logits(self, images: torch.Tensor, view: str) -> list[torch.Tensor]:
        parts = self.pool(self.feature_map(images, view), view)
        return [head(parts[:, :, i]) for i, head in enumerate(self.classifiers)]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """{view: (B, 3, H, W)} -> {view: n logits tensors (B, classes)}."""
        return {view: self.part_logits(images, view) for view, images in batch.items()}

    def bottlenecks(self, images: torch.Tensor, view: str) -> torch.Tensor:
        """(B, 3, H, W) -> (B, bottleneck, n): each part's BatchNorm output, the classifier Linear left out."""
        return self.bottlenecks_from_map(self.feature_map(images, view), view)

    def bottlenecks_from_map(self, feature_map: torch.Tensor, view: str) -> torch.Tensor:
        parts = self.pool(feature_map, view)
        return torch.stack([head.bottleneck(parts[:, :, i]) for i, head in enumerate(self.classifiers)], dim=-1)

    def embed(self, images: torch.Tensor, view: str, flip: bool = True) -> torch.Tensor:
        """Retrieval embedding (B, bottleneck * n), unit norm, official layout (index = channel * n + part).

        images: (B, 3, H, W) float, ImageNet-normalised. With `flip`, the bottlenecks of the image and of its
        horizontal mirror are summed before normalisation (the authors' test-time augmentation). Call in eval mode.
        """
        if self.training:
            raise LpnEdgeError("LPN.embed needs eval mode: call model.eval() first")
        features = self.bottlenecks(images, view)
        if flip:
            features = features + self.bottlenecks(torch.flip(images, dims=[3]), view)
        return normalise_parts(features)


def normalise_parts(features: torch.Tensor) -> torch.Tensor:
    """(B, D, n) -> (B, D * n): each part L2-normalised then divided by sqrt(n), flattened row-major."""
    parts = features.shape[-1]
    norms = features.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12) * math.sqrt(parts)
    return (features / norms).flatten(1)


class EmbeddingModel(nn.Module):
    """One view's embedding as a plain module (images -> embedding), the form that is exported."""

    def __init__(self, model: LPN, view: str, flip: bool = True) -> None:
        super().__init__()
        model.check_view(view)
        self.model, self.view, self.flip = model, view, flip
        self.train(model.training)  # a new Module starts in training mode; mirror the model's instead

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images, self.view, flip=self.flip)


def view_branches(config: ModelConfig) -> dict[str, str]:
    """View -> the branch (backbone) that embeds it: with `share_weights`, satellite and drone (three views) or
    satellite and ground (two views) go through one backbone."""
    if config.views == 3:
        drone = "satellite" if config.share_weights else "drone"
        return {"satellite": "satellite", "drone": drone, "ground": "ground"}
    return {"satellite": "satellite", "ground": "satellite" if config.share_weights else "ground"}
