"""`lpn-edge demo`: the main job on the built-in default data, end to end on a CPU.

Synthesises a cross-view world, trains LPN (4 square-ring parts) and the global-pooling baseline (1 part) with the
small CPU recipe, evaluates both in both directions, exports the LPN to ONNX (checked against PyTorch), evaluates the
ONNX model through the runtime's encoders beside its checkpoint (rows "LPN (4 parts), ONNX: <task>"), then flies:
a synthetic flight over an area the model never saw (`synth-flight`, another seed), its orthophoto cut into tiles
of the ground size the world's satellite tiles cover (`index tile`), a gallery built with the ONNX model
(`index build`), every frame located through the torch-free runtime (`locate --truth --track --plot`). Writes
`summary.json` naming every artifact and metric, `results.md` and `flight-map.png`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lpn_edge.errors import LpnEdgeError


@dataclass(frozen=True)
class DemoPlan:
    """How big the demo is: `default` took 4 min 20 s on 2 idle CPU cores, `quick` under a minute (README)."""

    locations: int
    drone_per_location: int
    size: int
    distractors: int
    epochs: int
    lr_steps: tuple[int, ...]
    flight_frames: int = 24


PLANS = {
    "default": DemoPlan(locations=48, drone_per_location=12, size=128, distractors=32, epochs=6, lr_steps=(5,)),
    "quick": DemoPlan(locations=20, drone_per_location=6, size=96, distractors=10, epochs=4, lr_steps=(3,),
                      flight_frames=16),
}
# The flight: a square area this many metres across (12 x 12 tiles of 100 m every 50 m cover it exactly), flown at
# synth-flight's default altitude and speed; tiles are the ground size of the world's satellite tiles.
FLIGHT_AREA_M = 650.0
FLIGHT_STRIDE_M = 50.0
FLIGHT_SEED_OFFSET = 1  # the flight's seed is the world's + this: an area the model never saw
FLIGHT_MAX_SPEED = 20.0  # m/s for --track: synth-flight flies 12 m/s
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
    summary["onnx"] = _export(summary["models"]["LPN (4 parts)"]["checkpoint"], out_dir / "export", say)
    if "model" in summary["onnx"]:  # what flies, evaluated with the same protocol through the runtime encoders
        onnx_report = evaluate(summary["onnx"]["model"], world.root, EvalOptions(progress=False, distance_groups=True))
        summary["onnx"].update(metrics=onnx_report.metrics, metrics_json=str(onnx_report.json_path),
                               notes=onnx_report.notes)
        for note in onnx_report.notes:
            say(f"note: {note}")
        for task, metrics in onnx_report.metrics.items():
            table[f"LPN (4 parts), ONNX: {task}"] = metrics
    results_table = format_metrics_table({k: v for k, v in _ordered(table).items() if "[" not in k})
    say(results_table)
    if "model" in summary["onnx"]:
        summary["flight"] = _flight(Path(summary["onnx"]["model"]), out_dir, plan, seed, say)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary_path = out_dir / "summary.json"
    atomic_write_text(summary_path, json.dumps(summary, indent=2))
    results_path = atomic_write_text(out_dir / "results.md", results_markdown(summary, results_table, quick))
    say(f"summary: {summary_path}, results: {results_path} ({summary['seconds']} s)")
    return summary


def _ordered(table: dict[str, dict]) -> dict[str, dict]:
    """Rows by model, each model's ONNX rows right after its checkpoint rows (LPN, LPN ONNX, baseline)."""
    ordered = {}
    for name in MODELS:
        ordered.update({k: v for k, v in table.items() if k.startswith(f"{name}: ")})
        ordered.update({k: v for k, v in table.items() if k.startswith(f"{name}, ONNX: ")})
    return ordered


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
        *_flight_markdown(summary.get("flight")),
    ])


def _flight_markdown(flight: dict | None) -> list[str]:
    """The flight's figures for results.md (nothing when the flight did not run)."""
    if not flight:
        return []
    truth = flight["locate"]["truth"]
    latency = flight["locate"]["latency_ms"]

    def figures(error: dict) -> str:
        return (f"median {error['median_m']:.1f} m, 90th percentile {error['p90_m']:.1f} m, "
                f"{100 * error['within_25m']:.0f} % within 25 m, {100 * error['within_50m']:.0f} % within 50 m")

    return [
        f"Flight over an area the model never saw (`synth-flight --seed {flight['seed']}`, {flight['area_m']:g} m "
        f"square, {flight['frames']} frames at {flight['altitude_m']:g} m): {flight['tiles']} gallery tiles of "
        f"{flight['tile_size_m']:g} m every {flight['stride_m']:g} m, indexed and located with the ONNX model "
        f"through the torch-free runtime ({flight['seconds']:.0f} s in all). Position error against the ground "
        f"point at each frame's centre:",
        "",
        f"- estimate (score-weighted centre of the top-5 tiles near the best): {figures(truth['error'])}; true "
        f"tile top-1 {100 * truth['hits']['top1']:.0f} %, top-5 {100 * truth['hits']['top5']:.0f} %",
        f"- with `--track` (max {flight['max_speed_m_s']:g} m/s): {figures(truth['track'])}",
        f"- latency per frame (median): {latency['total']['median']:.1f} ms, of which encode "
        f"{latency['encode']['median']:.1f} ms, match {latency['match']['median']:.1f} ms",
        "",
        f"Map: `{Path(flight['map']).name}`",
        "",
    ]


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
    return {"artifacts": [str(p) for p in result.paths()], "parity": [f.line() for f in result.parity],
            "model": str(result.paths("embedding")[0])}


def _flight(model: Path, out_dir: Path, plan: DemoPlan, seed: int, say: Callable[[str], None]) -> dict:
    """A synthetic flight over an unseen area located with the exported model through the torch-free runtime:
    synth-flight -> index tile -> index build -> locate --truth --track --plot. Per-frame lines go to
    flight/locate.txt; the figures are printed and returned."""
    import shutil

    from lpn_edge.data.synth.flight import synth_flight
    from lpn_edge.data.synth.views import SATELLITE_EXTENT
    from lpn_edge.fileio import atomic_write_text
    from lpn_edge.geo.tiling import tile_orthophoto
    from lpn_edge.locate import LocateOptions, run_locate
    from lpn_edge.runtime.encoders import open_encoder
    from lpn_edge.runtime.index_build import build_index

    started = time.perf_counter()
    root = out_dir / "flight"
    shutil.rmtree(root, ignore_errors=True)  # tiles of an earlier demo (--force) must not be reused
    flight_seed = seed + FLIGHT_SEED_OFFSET
    say(f"flight: synth-flight --area {FLIGHT_AREA_M:g} --seed {flight_seed} --frames {plan.flight_frames} "
        f"--size {plan.size}, tiles of {SATELLITE_EXTENT:g} m every {FLIGHT_STRIDE_M:g} m ...")
    area = synth_flight(root / "area", area=FLIGHT_AREA_M, seed=flight_seed, frames=plan.flight_frames,
                        size=plan.size)
    arguments = json.loads((area.root / "flight.json").read_text())
    tiling = tile_orthophoto(area.root / "orthophoto.png", root / "tiles", SATELLITE_EXTENT, FLIGHT_STRIDE_M,
                             size=plan.size)
    # The cpu-small LPN shares its satellite and drone weights: the exported drone graph embeds the tiles too.
    with open_encoder(model) as encoder:
        build = build_index(encoder, tiling.out / "tiles", root / "gallery.lpnidx", geo_csv=tiling.geo_csv)
    lines: list[str] = []
    map_path = out_dir / "flight-map.png"
    report = run_locate(LocateOptions(model=model, indexes=[build.out], inputs=[area.root / "frames"],
                                      truth=area.root / "flight.csv", track=True, max_speed=FLIGHT_MAX_SPEED,
                                      interval=arguments["interval_s"], plot=map_path,
                                      orthophoto=area.root / "orthophoto.png"),
                        say=lines.append, warn=lines.append)
    atomic_write_text(root / "locate.txt", "\n".join(lines) + "\n")
    for line in report.lines:
        say(f"  {line}")
    return {"seed": flight_seed, "area_m": FLIGHT_AREA_M, "frames": plan.flight_frames,
            "altitude_m": arguments["altitude_m"], "tile_size_m": SATELLITE_EXTENT, "stride_m": FLIGHT_STRIDE_M,
            "tiles": build.tiles, "max_speed_m_s": FLIGHT_MAX_SPEED, "model": str(model), "gallery": str(build.out),
            "frames_dir": str(area.root / "frames"), "truth": str(area.root / "flight.csv"),
            "locate_log": str(root / "locate.txt"), "map": str(map_path), "locate": report.summary,
            "seconds": round(time.perf_counter() - started, 1)}
