"""Write the benchmark subject: a random-weight LPN checkpoint with realistic BatchNorm statistics, and optionally
its ONNX exports (fp32, and the two int8 graphs of `lpn-edge export --int8`, calibrated on real photos when
../shared/data/u1652-mosaic is there).

    python benchmarks/make_bench_model.py --out /tmp/bw                       # ResNet-50, stride 1, 4 parts, 256 px
    python benchmarks/make_bench_model.py --out /tmp/bw --onnx --int8   # + bench-drone{,.int8,.int8-cpu}.onnx

Random weights time exactly like trained ones, but they make a poor subject for int8 accuracy figures: with the
identity BatchNorm statistics of a fresh model every image gets nearly the same embedding and the activations have
no realistic range. So every BatchNorm gets a random scale/shift and running statistics measured on sample images
(as training would), like the export tests' fixture (tests/test_export_fixtures.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from lpn_edge.bench.subject import measure_batchnorm, write_calibration_folder
from lpn_edge.checkpoint import save_checkpoint
from lpn_edge.config import ModelConfig, RunConfig, TrainConfig
from lpn_edge.model import build_model
from lpn_edge.runtime.preprocessing import find_images, preprocess

REAL_DATA = Path(os.environ.get("LPN_EDGE_MOSAIC") or Path(__file__).resolve().parents[2] / "shared/data/u1652-mosaic")
if not (REAL_DATA / "drone").is_dir():
    REAL_DATA = Path("/work/shared/data/u1652-mosaic")


def sample_images(size: tuple[int, int], count: int, offset: int = 0) -> torch.Tensor:
    """`count` preprocessed images: real drone + satellite photos when the mosaic is present, else noise."""
    if (REAL_DATA / "drone").is_dir():
        half = count // 2
        paths = find_images(REAL_DATA / "drone")[offset:offset + half] + \
            find_images(REAL_DATA / "satellite")[offset:offset + count - half]
        return torch.from_numpy(preprocess(paths, size))
    return torch.randn(count, 3, *size, generator=torch.Generator().manual_seed(offset))


def make_checkpoint(path: Path, backbone: str = "resnet50", size: tuple[int, int] = (256, 256), parts: int = 4,
                    stride: int = 1, samples: int = 16, seed: int = 0) -> Path:
    """A checkpoint whose BatchNorms have random affine parameters and statistics measured on `samples` images."""
    torch.manual_seed(seed)
    config = RunConfig(model=ModelConfig(backbone=backbone, stride=stride, parts=parts, image_size=size),
                       train=TrainConfig(backbone_weights="none"))
    model = build_model(config.model)
    # sample ids from 200: the accuracy check does not use them
    measure_batchnorm(model, lambda: sample_images(size, samples, offset=200).split(8),
                      torch.Generator().manual_seed(seed))
    return save_checkpoint(path, model, config)


def write_calibration(folder: Path, count: int = 32) -> Path:
    """`count` JPEGs for int8 calibration (real photos, ids 100+, else smooth random fields)."""
    return write_calibration_folder(folder, count, (128, 128), REAL_DATA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--name", default="bench")
    parser.add_argument("--onnx", action="store_true", help="also export the drone view to ONNX fp32")
    parser.add_argument("--int8", action="store_true",
                        help="also write the int8 graphs (TensorRT and ONNX Runtime CPU placements; 32 calibration "
                             "images)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = make_checkpoint(args.out / f"{args.name}.pt", args.backbone, (args.size, args.size))
    print(f"wrote {ckpt}", file=sys.stderr)
    if args.onnx or args.int8:
        from lpn_edge.export import ExportOptions, export_model

        small = dict(parity_queries=4, parity_gallery=8)
        export_model(ckpt, args.out, ExportOptions(formats={"onnx"}, **small),
                     progress=lambda text: print(text, file=sys.stderr))
        if args.int8:
            # The quantizers directly, not export_model: the export keeps an int8 graph only when it passes the int8
            # parity thresholds, which a random-weight ResNet-50 misses (its accuracy figures are printed by
            # `lpn-edge bench`; the timing does not depend on the weights).
            from lpn_edge.export.calibration import calibration_images
            from lpn_edge.export.int8_placements import INT8_PLACEMENTS

            calib = calibration_images(write_calibration(args.out / "calib"), (args.size, args.size), 32)
            for placement in INT8_PLACEMENTS:
                destination = args.out / f"{args.name}-drone.{placement.suffix}.onnx"
                summary = placement.quantize(args.out / f"{args.name}-drone.onnx", destination, calib)
                print(f"wrote {destination}: {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
