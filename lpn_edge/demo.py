"""`lpn-edge demo`: the main job on the built-in default data, end to end on a CPU.

Synthesises a cross-view world, trains LPN (4 square-ring parts) and the global-pooling baseline (1 part) with the
small CPU recipe, evaluates both in both directions, exports the LPN to ONNX (checked against PyTorch) and writes
`summary.json` naming every artifact and metric.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lpn_edge.errors import LpnEdgeError


@dataclass(frozen=True)
class DemoPlan:
    """How big the demo is: `default` fits 10 minutes on 2 CPU cores, `quick` 2 minutes (measured: see README)."""

    locations: int
    drone_per_location: int
    size: int
    distractors: int
    epochs: int
    lr_steps: tuple[int, ...]


PLANS = {
    "default": DemoPlan(locations=64, drone_per_location=12, size=128, distractors=32, epochs=9, lr_steps=(7,)),
    "quick": DemoPlan(locations=20, drone_per_location=6, size=96, distractors=10, epochs=4, lr_steps=(3,)),
}
MODELS = {"LPN (4 parts)": 4, "baseline (1 part)": 1}
# Real University-1652 photos shared beside a checkout (run from its root); the export's parity checks use them
# as a second image set when present.
SHARED_MOSAIC = Path("..") / "shared" / "data" / "u1652-mosaic"


def run_demo(out_dir: str | Path, quick: bool = False, seed: int = 0, force: bool = False,
             say: Callable[[str], None] = print) -> dict:
    """Run the demo into `out_dir` and return the summary (also written to `out_dir/summary.json`)."""
    from importlib.resources import files

    from lpn_edge.config import load_config
    from lpn_edge.data.synth import synthesize
    from lpn_edge.eval.evaluate import EvalOptions, evaluate
    from lpn_edge.eval.metrics import format_metrics_table
    from lpn_edge.fileio import atomic_write_text
    from lpn_edge.train import ProgressPrinter, train

    plan = PLANS["quick" if quick else "default"]
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise LpnEdgeError(f"demo directory {out_dir} is not empty: pass --force to replace it, or another --out")
    started = time.perf_counter()
    world = synthesize(out_dir / "world", locations=plan.locations, seed=seed,
                       drone_per_location=plan.drone_per_location, size=plan.size, distractors=plan.distractors,
                       preview=True, overwrite=True)
    say(str(world))
    recipe = load_config(Path(str(files("lpn_edge") / "configs" / "cpu-small.yaml")))
    summary: dict = {"plan": plan.__dict__, "world": str(world.root), "preview": str(world.preview),
                     "geo_csv": str(world.geo_csv), "models": {}}
    table: dict[str, dict[str, float]] = {}
    for name, parts in MODELS.items():
        config = recipe.replace({"model.parts": parts, "model.image_size": [plan.size, plan.size],
                                 "train.epochs": plan.epochs, "train.lr_steps": list(plan.lr_steps),
                                 "train.seed": seed}, "demo plan")
        run_dir = out_dir / ("lpn" if parts > 1 else "baseline")
        say(f"training {name}: {plan.epochs} epochs ...")
        # a line every 10 seconds with the pace and the time left: minutes of silence look like a hang
        result = train(config, world.root, run_dir, force=force, progress=ProgressPrinter(say, prefix="  "),
                       say=lambda line: say(f"  {line}"))
        # last.pt (weights + optimiser state) only serves --resume of an unfinished run; model.pt is what users need
        (run_dir / "last.pt").unlink(missing_ok=True)
        last = result.history[-1]
        say(f"  loss {last['loss']:.3f}, training accuracy {last['accuracy']:.3f}, {last['images_per_s']:.0f} img/s")
        report = evaluate(result.model, world.root, EvalOptions(progress=False, distance_groups=True))
        for task, metrics in report.metrics.items():
            table[f"{name}: {task}"] = metrics
        summary["models"][name] = {"parts": parts, "checkpoint": str(result.model), "run_dir": str(run_dir),
                                   "metrics_json": str(report.json_path), "metrics": report.metrics,
                                   "training": last}
    results_table = format_metrics_table({k: v for k, v in table.items() if "[" not in k})
    say(results_table)
    summary["onnx"] = _export(summary["models"]["LPN (4 parts)"]["checkpoint"], out_dir / "export", say)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary_path = out_dir / "summary.json"
    atomic_write_text(summary_path, json.dumps(summary, indent=2))
    results_path = atomic_write_text(out_dir / "results.md", results_markdown(summary, results_table, quick))
    say(f"summary: {summary_path}, results: {results_path} ({summary['seconds']} s)")
    return summary


def results_markdown(summary: dict, table: str, quick: bool) -> str:
    """The demo's results as markdown that README quotes verbatim: what ran, where, when, and the metrics."""
    plan = summary["plan"]
    speeds = ", ".join(f"{name} {model['training']['images_per_s']:.0f} img/s"
                       for name, model in summary["models"].items())
    return "\n".join([
        f"`lpn-edge demo{' --quick' if quick else ''}`, lpn-edge {_version()}, {_today()}, {_machine()}: "
        f"{summary['seconds']:.0f} s in all (training {speeds}).",
        f"World: {plan['locations']} locations (train + test), {plan['drone_per_location']} drone views each, "
        f"{plan['size']} px, {plan['distractors']} distractor tiles; {plan['epochs']} epochs. Metrics in percent:",
        "",
        table,
        "",
    ])


def _version() -> str:
    """The package version, with the git commit when running from a checkout (what README quotes)."""
    import subprocess

    from lpn_edge import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__} (commit {commit})" if commit else __version__


def _today() -> str:
    import datetime

    return datetime.date.today().isoformat()


def _machine() -> str:
    """CPU model and core count, e.g. 'AMD EPYC 7B13, 2 cores' (what the timings depend on)."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def _export(checkpoint: str, out_dir: Path, say: Callable[[str], None]) -> dict:
    """ONNX export of the drone encoder with its parity check; skipped with a note when onnx is not installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        say("export skipped: install the onnx extra (pip install 'lpn-edge[onnx]')")
        return {"skipped": "onnx / onnxruntime not installed"}
    from lpn_edge.export.options import ExportOptions
    from lpn_edge.export.pipeline import export_model

    options = ExportOptions(formats=frozenset({"onnx"}), view="drone", parity_queries=8, parity_gallery=16,
                            parity_data=SHARED_MOSAIC if SHARED_MOSAIC.is_dir() else None)
    result = export_model(checkpoint, out_dir, options)
    for line in result.lines():
        say(f"  {line}")
    return {"artifacts": [str(p) for p in result.paths()], "parity": [f.line() for f in result.parity]}
