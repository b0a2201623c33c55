"""Benchmark and test subjects: random-weight LPNs that behave like trained ones where it matters for parity.

Random weights alone make a poor subject: BatchNorm running statistics stay the identity (a wrong BN export could
pass) and activations have unrealistic ranges (int8 calibration needs real ones). `measure_batchnorm` gives every
BatchNorm a random scale and shift, then measures its running statistics on sample images, as training would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch


def measure_batchnorm(model: torch.nn.Module, batches: Callable[[], Iterable[torch.Tensor]],
                      generator: torch.Generator) -> torch.nn.Module:
    """Randomise each BatchNorm's affine parameters (scale in [0.5, 1.5), shift in [-0.2, 0.2), drawn from
    `generator`), then set its running statistics to the cumulative average over `batches()` ((B, 3, H, W) tensors
    fed to every branch; called after the draws, so it may draw from the same generator). Returns the model in eval
    mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for norm in norms:
            norm.weight.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
            norm.bias.copy_(torch.rand(norm.num_features, generator=generator) * 0.4 - 0.2)
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the sample batches
        model.train()
        for batch in batches():
            model({"drone": batch, "ground": batch})  # every branch gets statistics
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def write_calibration_folder(folder: Path, count: int, size: tuple[int, int], real_data: Path | None) -> Path:
    """`count` JPEGs for int8 calibration: real photos from `real_data` (a folder with drone/ and satellite/, half
    of each, ids 100 on, which the parity sets do not use) while they last, then smooth random colour fields of
    `size` (H, W). Calibration images should be like what the model will see: the parity set runs both kinds."""
    import numpy as np
    from PIL import Image

    from lpn_edge.runtime.preprocessing import find_images

    folder.mkdir(parents=True, exist_ok=True)
    real = []
    if real_data is not None and (real_data / "drone").is_dir():
        half = count // 2
        real = find_images(real_data / "drone")[100:100 + count - half] + \
            find_images(real_data / "satellite")[100:100 + half]
    rng = np.random.default_rng(1)
    for i in range(count):
        if i < len(real):
            Image.open(real[i]).convert("RGB").save(folder / f"{i:03d}.jpg")
            continue
        colour_field(rng, size).save(folder / f"{i:03d}.jpg")
    return folder


def colour_field(rng, size: tuple[int, int]):
    """A smooth random colour field of `size` (H, W) as a PIL image: an 8 x 8 random image resized bicubically,
    a stand-in photo with real structure for JPEG and the model (unlike white noise)."""
    from PIL import Image

    coarse = rng.integers(0, 256, (8, 8, 3), dtype="uint8")
    return Image.fromarray(coarse).resize(size[::-1], Image.Resampling.BICUBIC)
