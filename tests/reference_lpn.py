"""An independent re-derivation of the authors' LPN computation, for parity tests (not used by the package)."""

import math

import torch
import torch.nn.functional as F


def official_square_ring_avg(x: torch.Tensor, block: int, align_corners: bool = True) -> torch.Tensor:
    """The authors' get_part_pool (avg, square maps) by slicing and zero-padding: (B, C, H, H) -> (B, C, block),
    centre first. Their three-view nets resize small maps with align_corners=True, their two-view ones with False."""
    H = x.shape[2]
    c, per = H // 2, H / (2 * block)
    if per < 1:
        new = H + (block - c) * 2
        x = F.interpolate(x, size=[new, new], mode="bilinear", align_corners=align_corners)
        H = new
        c, per = H // 2, H / (2 * block)
    per = math.floor(per)
    out = []
    for i in range(1, block + 1):
        if i < block:
            cur = x[:, :, c - i * per:c + i * per, c - i * per:c + i * per]
            if i > 1:
                pre = x[:, :, c - (i - 1) * per:c + (i - 1) * per, c - (i - 1) * per:c + (i - 1) * per]
                cur = cur - F.pad(pre, (per, per, per, per))
        else:
            cur = x
            if i > 1:
                pre = x[:, :, c - (i - 1) * per:c + (i - 1) * per, c - (i - 1) * per:c + (i - 1) * per]
                pad = c - (i - 1) * per
                cur = x - F.pad(pre, (pad, pad, pad, pad))
        out.append(cur.mean(dim=(2, 3)))
    return torch.stack(out, -1)


def official_border_first_ring_avg(x: torch.Tensor, block: int) -> torch.Tensor:
    """The two-view satellite branch (ft_net_cvusa_LPN_R / ft_net_VGG16_LPN_R): the same square rings, resized
    without align_corners, and listed from the border inwards (they insert each ring at the front of the list)."""
    return official_square_ring_avg(x, block, align_corners=False).flip(-1)


def official_row_avg(x: torch.Tensor, block: int) -> torch.Tensor:
    """The two-view street branch with row=True: AdaptiveAvgPool2d((block, 1)), top strip first."""
    return F.adaptive_avg_pool2d(x, (block, 1)).reshape(x.shape[0], x.shape[1], block)


def official_two_view_embedding(trunks: dict, state: dict, images: torch.Tensor, block: int, view: str,
                                share: bool) -> torch.Tensor:
    """two_view_net with LPN (ResNet-50): model_1 pools satellite images with border-first rings; model_2 pools
    street images with rows, unless weights are shared, where model_2 *is* model_1 (same trunk, same rings).
    `trunks` maps "satellite" / "ground" to layer4 feature-map functions."""
    if view == "satellite" or share:
        return official_embedding(trunks["satellite"], state, images, block, official_border_first_ring_avg)
    return official_embedding(trunks["ground"], state, images, block, official_row_avg)


def official_embedding(trunk, state: dict, images: torch.Tensor, block: int, pooling=None) -> torch.Tensor:
    """DESIGN.md section 3 from scratch: trunk -> rings -> Linear -> BatchNorm (eval) per part, flip-sum, then
    per-part L2 / sqrt(n), flattened as channel * n + part. `trunk` maps images to the layer4 feature map;
    `pooling` (default: the three-view centre-first rings) maps it to (B, C, block)."""
    pooling = pooling or official_square_ring_avg

    def bottlenecks(x):
        pooled = pooling(trunk(x), block)
        parts = []
        for i in range(block):
            p = f"classifier{i}.add_block."
            y = F.linear(pooled[:, :, i], state[p + "0.weight"], state[p + "0.bias"])
            y = (y - state[p + "1.running_mean"]) / torch.sqrt(state[p + "1.running_var"] + 1e-5)
            parts.append(y * state[p + "1.weight"] + state[p + "1.bias"])
        return torch.stack(parts, dim=2)

    summed = bottlenecks(images) + bottlenecks(images.flip(3))
    summed = summed / (summed.norm(dim=1, keepdim=True) * math.sqrt(block))
    return summed.reshape(summed.shape[0], -1)
