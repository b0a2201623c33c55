"""Partition pooling: square rings (the paper's LPN), rows and columns, over a backbone feature map.

This module is the single definition of the partitions. `pool_parts` is the reference; `partition_matrix` derives
the (H*W, n) weight matrix of avg pooling from it (so the two cannot drift apart), and the ONNX graph and the CUDA
kernel are tested against it.

Ring geometry (DESIGN.md section 3, mirroring wtyhub/LPN model.py `get_part_pool`), per axis of length L:
  if L / (2n) < 1 the map is first resized bilinearly (align_corners=True) to L + 2 * (n - floor(L / 2));
  c = floor(L / 2), per = floor(L / (2n)); part i < n is the box [c - i*per, c + i*per) minus part i-1's box,
  part n is the whole map minus part n-1's box.
avg pooling divides a ring's sum by the area of its *outer box* (the authors zero the inner box, then average over
the outer one); max pooling takes the max over the ring's own cells.

Deliberate differences from the reference code, which only handles square maps correctly:
  * non-square maps use the per-axis geometry above (the reference pads height and width in swapped order);
  * on odd-sized maps the last ring is the whole map minus the centred box (the reference subtracts a box shifted
    by one cell); the square, even-sized case used by every published model is reproduced exactly;
  * a map is resized along an axis whenever that axis is too short (the reference requires both to be).
`ring_outer_first` mirrors the authors' two-view satellite branches (`ft_net_cvusa_LPN_R`, `ft_net_VGG16_LPN_R`):
the same rings listed from the border inwards, and their resize uses align_corners=False (it matters for VGG16 maps,
8x8 at 256 px, with 8 parts).
Row / column partitions are the authors' `AdaptiveAvgPool2d((n, 1))` / `((1, n))`: strip i covers
[floor(i*L/n), ceil((i+1)*L/n)).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

KINDS = ("ring", "ring_outer_first", "row", "column")
POOLS = ("avg", "max", "avg+max")


def ring_resized_size(length: int, parts: int) -> int:
    """The axis length after the authors' resize rule (unchanged when every ring is at least one cell wide)."""
    if length / (2 * parts) < 1:
        return length + 2 * (parts - length // 2)
    return length


def _ring_boxes(length: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) of the outer box of each ring along one axis of the (resized) map; the last is the map."""
    centre, per = length // 2, length // (2 * parts)
    boxes = [(centre - i * per, centre + i * per) for i in range(1, parts)]
    return boxes + [(0, length)]


def _strips(length: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) of each strip, with the bounds of torch's adaptive pooling."""
    return [((i * length) // parts, -((-(i + 1) * length) // parts)) for i in range(parts)]


@lru_cache(maxsize=64)
def partition_masks(kind: str, height: int, width: int, parts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean part masks (n, H', W') over the pooled grid and the avg divisor (n,) of each part.

    For rings (H', W') is the resized size; for rows and columns it is (H, W). Masks tile the grid exactly once.
    """
    if kind not in KINDS:
        raise ValueError(f"partition kind must be one of {KINDS}, got {kind!r}")
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if kind in ("row", "column"):
        masks = torch.zeros(parts, height, width, dtype=torch.bool)
        along = height if kind == "row" else width
        for i, (lo, hi) in enumerate(_strips(along, parts)):
            if kind == "row":
                masks[i, lo:hi, :] = True
            else:
                masks[i, :, lo:hi] = True
        return masks, masks.flatten(1).sum(1).to(torch.float64)
    h2, w2 = ring_resized_size(height, parts), ring_resized_size(width, parts)
    boxes = list(zip(_ring_boxes(h2, parts), _ring_boxes(w2, parts)))
    masks = torch.zeros(parts, h2, w2, dtype=torch.bool)
    areas = torch.zeros(parts, dtype=torch.float64)
    for i, ((top, bottom), (left, right)) in enumerate(boxes):
        masks[i, top:bottom, left:right] = True
        areas[i] = (bottom - top) * (right - left)
        if i > 0:
            (ptop, pbottom), (pleft, pright) = boxes[i - 1]
            masks[i, ptop:pbottom, pleft:pright] = False
    if kind == "ring_outer_first":
        masks, areas = masks.flip(0), areas.flip(0)
    return masks, areas


def _resize_for_rings(feature_map: torch.Tensor, kind: str, parts: int) -> torch.Tensor:
    height, width = feature_map.shape[-2:]
    if kind in ("row", "column"):
        return feature_map
    size = (ring_resized_size(height, parts), ring_resized_size(width, parts))
    if size == (height, width):
        return feature_map
    return F.interpolate(feature_map, size=size, mode="bilinear", align_corners=kind == "ring")


def pool_parts(feature_map: torch.Tensor, parts: int, kind: str = "ring", pool: str = "avg") -> torch.Tensor:
    """Reference partition pooling.

    feature_map: (B, C, H, W), post-ReLU features. Returns (B, C, n) for avg or max and (B, 2C, n) for avg+max
    (avg channels first, then max, as the authors concatenate them).
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if pool == "avg+max":
        return torch.cat([pool_parts(feature_map, parts, kind, "avg"), pool_parts(feature_map, parts, kind, "max")], 1)
    height, width = feature_map.shape[-2:]
    masks, areas = partition_masks(kind, height, width, parts)
    grid = _resize_for_rings(feature_map, kind, parts)
    masks = masks.to(grid.device)
    pooled = []
    for i in range(parts):
        if pool == "avg":
            total = (grid * masks[i]).sum(dim=(-2, -1))
            pooled.append(total / float(areas[i]))
        else:
            pooled.append(grid.masked_fill(~masks[i], float("-inf")).amax(dim=(-2, -1)))
    return torch.stack(pooled, dim=-1)


@lru_cache(maxsize=64)
def partition_matrix(kind: str, height: int, width: int, parts: int) -> torch.Tensor:
    """The (H*W, n) float64 matrix M of avg pooling: pooled = feature_map.flatten(2) @ M.

    Derived by pooling the identity basis with `pool_parts`, so it includes the ring resize (a linear map too).
    """
    basis = torch.eye(height * width, dtype=torch.float64).reshape(height * width, 1, height, width)
    return pool_parts(basis, parts, kind, "avg").reshape(height * width, parts).contiguous()


def pool_parts_matmul(feature_map: torch.Tensor, parts: int, kind: str = "ring") -> torch.Tensor:
    """Avg partition pooling as one MatMul: (B, C, H, W) -> (B, C, n). Equals `pool_parts(..., "avg")`."""
    height, width = feature_map.shape[-2:]
    weights = partition_matrix(kind, int(height), int(width), parts)
    return feature_map.flatten(2) @ weights.to(device=feature_map.device, dtype=feature_map.dtype)
