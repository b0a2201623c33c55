"""Time lpn-edge against the authors' implementation (wtyhub/LPN) in one run, on one device.

The reference code is not part of this project: clone it yourself and pass its folder, e.g.
    git clone https://github.com/wtyhub/LPN /tmp/LPN
    python benchmarks/bench_encode.py --reference /tmp/LPN [--device cuda] [--repeats 20]

Measures, for a ResNet-50 LPN (stride 1, 4 parts, 256x256, three views, random weights):
  * ring pooling of a (B, 2048, 16, 16) map: the authors' slicing vs our one-MatMul form;
  * drone-query encoding (test-time flip included, fp32) of 1 and of B images: the authors' three_view_net as their
    test.py uses it (two forward passes, sum, per-part norm) vs `LPN.embed`.
Prints one JSON line per figure with both times and the ratio; the embeddings are checked to agree first.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision


def load_reference(folder: Path):
    """Import the authors' model.py. Their backbones ask for ImageNet weights (a download) that timing does not
    need, so torchvision's resnet50 builder is made to ignore `pretrained` for the rest of this process."""
    original = torchvision.models.resnet50
    torchvision.models.resnet50 = lambda pretrained=False, **kw: original(**{"weights": None, **kw})
    spec = importlib.util.spec_from_file_location("lpn_reference_model", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.argv = sys.argv[:1]  # their module defines argparse at import time in some versions
    spec.loader.exec_module(module)
    return module


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of `fn()` in milliseconds (after two warm-up calls)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="folder of a wtyhub/LPN clone")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    from lpn_edge.model.official import convert_official
    from lpn_edge.model.partition import pool_parts_matmul

    reference_module = load_reference(args.reference)
    reference = reference_module.three_view_net(701, droprate=0.75, stride=1, pool="avg", share_weight=True,
                                                LPN=True, block=4).eval()
    state_path = Path("/tmp/lpn_edge_bench_reference.pth")
    torch.save(reference.state_dict(), state_path)
    ours, _ = convert_official(state_path, views=3, stride=1)
    for i in range(4):  # their test.py removes the classifier Linear to return the BatchNorm output
        getattr(reference, f"classifier{i}").classifier = torch.nn.Sequential()
    reference, ours = reference.to(device), ours.to(device).eval()

    def reference_embed(images):
        summed = None
        for flipped in (False, True):
            x = images.flip(3) if flipped else images
            _, _, out = reference(None, None, x)
            summed = out if summed is None else summed + out
        norm = summed.norm(p=2, dim=1, keepdim=True) * math.sqrt(4)
        return (summed / norm).reshape(summed.shape[0], -1)

    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    with torch.no_grad():
        images = torch.randn(args.batch, 3, 256, 256, device=device)
        cosine = torch.nn.functional.cosine_similarity(reference_embed(images), ours.embed(images, "drone"), dim=1)
        print(json.dumps({"check": "embedding cosine min", "value": round(cosine.min().item(), 7), **info}))
        feature_map = torch.rand(args.batch, 2048, 16, 16, device=device)
        rows = [
            (f"ring pooling {args.batch}x2048x16x16",
             lambda: reference.model_1.get_part_pool(feature_map), lambda: pool_parts_matmul(feature_map, 4, "ring")),
            ("encode 1 image (flip, fp32)",
             lambda: reference_embed(images[:1]), lambda: ours.embed(images[:1], "drone")),
            (f"encode {args.batch} images (flip, fp32)",
             lambda: reference_embed(images), lambda: ours.embed(images, "drone")),
        ]
        for name, reference_fn, ours_fn in rows:
            t_ref, t_ours = timed(reference_fn, args.repeats, device), timed(ours_fn, args.repeats, device)
            print(json.dumps({"what": name, "reference_ms": round(t_ref, 3), "lpn_edge_ms": round(t_ours, 3),
                              "speedup": round(t_ref / t_ours, 3), **info}))


if __name__ == "__main__":
    main()
