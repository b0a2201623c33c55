"""The reference implementations the benchmark compares against, re-implemented from the authors' code (wtyhub/LPN,
model.py) so that no clone is needed: their ring pooling by slicing. (The reference encoder is this project's own
`LPN.embed` in eager fp32, which benchmarks/bench_encode.py checks against the authors' three_view_net to cosine
0.9999999 and times within a few percent of it.)
"""

from __future__ import annotations


def slicing_ring_pool(x, block: int = 4):
    """Ring pooling the way the authors' code does it (wtyhub/LPN model.py, `get_part_pool`, avg, no overlap), as a
    timing reference: one tensor operation sequence per ring instead of one MatMul. Written here from what their code
    computes, for the maps the benchmark uses (square, every ring at least one cell wide, so no resize):

    for ring i = 1..n: take the centred box of side 2 * i * per (per = floor(side / 2n); the whole map for i = n),
    subtract box i-1 zero-padded back to that size (slice, pad, subtract: the three copies their code makes), and
    average over the whole box (an adaptive average pool, zeros included: the division by the outer box's area).

    x: (B, C, H, H) tensor. Returns (B, C, n, 1), the outermost ring first, as theirs.
    """
    import torch
    import torch.nn.functional as F

    side = x.size(2)
    if x.size(3) != side or side // (2 * block) < 1:
        raise ValueError(
            f"the slicing reference takes square maps with rings of at least one cell, got {tuple(x.shape)}"
        )
    centre, per = side // 2, side // (2 * block)
    average = torch.nn.AdaptiveAvgPool2d((1, 1))

    def box(i: int):
        low, high = (centre - i * per, centre + i * per) if i < block else (0, side)
        return x[:, :, low:high, low:high]

    rings = []
    for i in range(1, block + 1):
        outer = box(i)
        if i > 1:
            inner = box(i - 1)
            margin_low = (outer.size(2) - inner.size(2)) // 2
            margin_high = outer.size(2) - inner.size(2) - margin_low  # odd sides: the extra cell on one side
            outer = outer - F.pad(inner, (margin_low, margin_high, margin_low, margin_high), "constant", 0.0)
        rings.append(average(outer))
    return torch.cat(rings[::-1], dim=2)
