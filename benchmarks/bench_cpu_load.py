"""Per-frame latency of the CPU runtime while another CPU-bound process runs, against its own idle median.

    python benchmarks/bench_cpu_load.py --model export/model-drone.onnx [--frames 15] [--busy-core 1]

A drone's companion computer runs other work. For each runtime configuration (ONNX Runtime threads, spinning,
CPU affinity of the encoding process), this encodes `--frames` single frames one after another with nothing else
of ours running (the idle median), then again while a competing process (`while True: pass`, pinned with
os.sched_setaffinity to --busy-core) runs, and reports the loaded p99 / idle median (target: <= 2).
Each configuration runs in its own child process, so its affinity and thread pools start fresh.

Configurations:
  ort-default  a plain ONNX Runtime session: its defaults (a thread per core, intra-op spinning on)
  runtime      the runtime's default (OnnxRunner(model): physical cores of the affinity mask, spinning off)
  2t-nospin    threads = 2, spinning off (cpu_session_options(2))
  1t           threads = 1, no affinity
  1t-pinned    threads = 1, the process pinned to the cores other than --busy-core (the recommended setting)
Prints one JSON document (and a summary on stderr). Other load on the machine is not controlled: the load average
is recorded beside every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "ort-default": {"threads": None, "plain": True, "pin": False},
    "runtime": {"threads": None, "plain": False, "pin": False},
    "2t-nospin": {"threads": 2, "plain": False, "pin": False},
    "1t": {"threads": 1, "plain": False, "pin": False},
    "1t-pinned": {"threads": 1, "plain": False, "pin": True},
}
BUSY = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def child(model: Path, config: dict, frames: int, busy_core: int) -> dict:
    """Runs in the child: pin if asked, open the session, time `frames` frames (after 2 warm-up frames)."""
    import numpy as np

    from lpn_edge.bench.stats import summarise
    from lpn_edge.runtime.onnx_runner import OnnxRunner

    if config["pin"]:
        allowed = sorted(set(os.sched_getaffinity(0)) - {busy_core}) or [0]
        os.sched_setaffinity(0, allowed)  # before the session exists: its threads inherit the mask
    import onnxruntime as ort

    plain = ort.SessionOptions() if config["plain"] else None  # ONNX Runtime's own defaults, none of lpn-edge's
    runner = OnnxRunner(model, ("cpu",), threads=config["threads"], session_options=plain)
    size = runner.session.get_inputs()[0].shape[2:]
    frame = np.random.default_rng(0).standard_normal((1, 3, *size), dtype=np.float32)
    for _ in range(2):
        runner.run(frame)
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        runner.run(frame)
        times.append(time.perf_counter() - start)
    return {**summarise(times), "affinity": sorted(os.sched_getaffinity(0)),
            "load_average": round(os.getloadavg()[0], 2)}


def run_child(args, name: str) -> dict:
    command = [sys.executable, __file__, "--model", str(args.model), "--frames", str(args.frames), "--busy-core",
               str(args.busy_core), "--child", name]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--busy-core", type=int, default=1)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, CONFIGS[args.child], args.frames, args.busy_core)))
        return
    from lpn_edge.bench.machine import describe

    document = {"machine": describe(), "model": str(args.model), "frames": args.frames, "busy_core": args.busy_core,
                "results": {}}
    for name in args.configs.split(","):
        idle = run_child(args, name)
        busy = subprocess.Popen([sys.executable, "-c", BUSY, str(args.busy_core)])
        try:
            time.sleep(0.5)
            loaded = run_child(args, name)
        finally:
            busy.kill()
            busy.wait()
        ratio = loaded["p99_ms"] / idle["median_ms"]
        document["results"][name] = {"config": CONFIGS[name], "idle": idle, "loaded": loaded,
                                     "loaded_p99_over_idle_median": ratio, "within_2x": ratio <= 2.0}
        print(f"{name:10s} idle median {idle['median_ms']:7.1f} ms (load {idle['load_average']}), loaded median "
              f"{loaded['median_ms']:7.1f} p99 {loaded['p99_ms']:7.1f} ms (load {loaded['load_average']}): "
              f"p99 / idle median {ratio:.2f} {'ok' if ratio <= 2 else 'OVER 2x'}", file=sys.stderr)
    document["machine"]["load_average_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
