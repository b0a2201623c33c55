"""Where an ONNX graph's CPU time goes, and whether a speed target is within reach of its kernels.

    python benchmarks/profile_onnx_cpu.py --model /tmp/bw/bench-drone.onnx --batch 1 --threads 1 \
        --reference-ms 737 --target 0.5 [--runs 4] [--json profile.json]

ONNX Runtime's own per-node profile with the runtime's session options (`lpn_edge.bench.profile`): time per
operator, then per convolution shape with its GFLOP/s, and the floor: the time if every convolution ran at the
fastest shape's rate. With the reference's median time (from `lpn-edge bench`) and a target ratio it says which
rate the target needs; a rate above the fastest shape's means no scheduling of these kernels can meet it.
"""

from __future__ import annotations

import argparse
import json
import sys

from lpn_edge.bench import machine
from lpn_edge.bench.profile import format_profile, profile_onnx_cpu
from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="ONNX graph (the full graph or a split backbone)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=4, help="profiled runs, averaged")
    parser.add_argument("--warmup", type=int, default=1, help="runs before them, left out")
    parser.add_argument("--reference-ms", type=float, help="the reference's median for the same batch and threads")
    parser.add_argument("--target", type=float, help="target ratio to the reference, e.g. 0.5")
    parser.add_argument("--json", help="also write the profile here")
    args = parser.parse_args()
    try:
        profile = profile_onnx_cpu(args.model, args.batch, args.threads, args.runs, args.warmup)
    except LpnEdgeError as exc:
        sys.exit(f"error: {exc}")
    print(format_profile(profile, args.reference_ms, args.target))
    if args.json:
        document = {"machine": machine.describe(), "profile": profile.as_dict(),
                    "reference_ms": args.reference_ms, "target": args.target}
        atomic_write_text(args.json, json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
