"""The reference implementations the benchmark compares against, re-implemented from the authors' code (wtyhub/LPN,
model.py) so that no clone is needed: their ring pooling by slicing. (The reference encoder is this project's own
`LPN.embed` in eager fp32, which benchmarks/bench_encode.py checks against the authors' three_view_net to cosine
0.9999999 and times within a few percent of it.)
"""

from __future__ import annotations

import math


def slicing_ring_pool(x, block: int = 4):
    """The authors' `get_part_pool(x, pool='avg', no_overlap=True)` (wtyhub/LPN model.py, ft_net_LPN), line for line:
    square rings cut out of the (B, C, H, W) map by slicing, the inner square subtracted after zero padding, each
    ring average-pooled over its whole (padded) window. Returns (B, C, block, 1), the outermost ring first.

    (Their average of a ring is over the window, zeros included: `AdaptiveAvgPool2d` of the padded difference; the
    project's pooling matrix reproduces exactly that.)
    """
    import torch
    import torch.nn.functional as F

    result = []
    pooling = torch.nn.AdaptiveAvgPool2d((1, 1))
    H, W = x.size(2), x.size(3)
    c_h, c_w = int(H / 2), int(W / 2)
    per_h, per_w = H / (2 * block), W / (2 * block)
    if per_h < 1 and per_w < 1:
        new_H, new_W = H + (block - c_h) * 2, W + (block - c_w) * 2
        x = F.interpolate(x, size=[new_H, new_W], mode="bilinear")
        H, W = x.size(2), x.size(3)
        c_h, c_w = int(H / 2), int(W / 2)
        per_h, per_w = H / (2 * block), W / (2 * block)
    per_h, per_w = math.floor(per_h), math.floor(per_w)
    for i in range(1, block + 1):
        if i < block:
            x_curr = x[:, :, (c_h - i * per_h):(c_h + i * per_h), (c_w - i * per_w):(c_w + i * per_w)]
            if i > 1:
                x_pre = x[:, :, (c_h - (i - 1) * per_h):(c_h + (i - 1) * per_h),
                          (c_w - (i - 1) * per_w):(c_w + (i - 1) * per_w)]
                x_pad = F.pad(x_pre, (per_h, per_h, per_w, per_w), "constant", 0)
                x_curr = x_curr - x_pad
            result.insert(0, pooling(x_curr))
        else:
            if i > 1:
                x_pre = x[:, :, (c_h - (i - 1) * per_h):(c_h + (i - 1) * per_h),
                          (c_w - (i - 1) * per_w):(c_w + (i - 1) * per_w)]
                pad_h = c_h - (i - 1) * per_h
                pad_w = c_w - (i - 1) * per_w
                if x_pre.size(2) + 2 * pad_h == H:
                    x_pad = F.pad(x_pre, (pad_h, pad_h, pad_w, pad_w), "constant", 0)
                else:
                    ep = H - (x_pre.size(2) + 2 * pad_h)
                    x_pad = F.pad(x_pre, (pad_h + ep, pad_h, pad_w + ep, pad_w), "constant", 0)
                x = x - x_pad
            result.insert(0, pooling(x))
    return torch.cat(result, dim=2)
