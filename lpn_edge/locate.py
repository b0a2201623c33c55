"""`lpn-edge locate`: frames -> gallery tiles and positions, with the figures a flight is judged by.

Torch-free (the runtime and `lpn_edge.geo` only), so it runs on the drone. `run_locate(options)` does what the
command says: frames one at a time through `runtime.localize.Localizer` (per-frame lines, human-readable or JSON),
then the latency per step (median and 90th percentile), and with a truth table the position error (median, p90,
share within 25 m and 50 m: `geo.metrics`) and how often the true tile is in the top-1 / top-5; with `track` the
same figures for the sequence filter (`geo.track.Tracker`); with `plot` the map (`geo.flight_map`).

Truth (`--truth flight.csv`, as `lpn-edge synth-flight` writes it): columns frame, latitude, longitude, and when
present view_latitude, view_longitude -- the ground point at the centre of the frame, which is what the retrieved
tiles show (an oblique camera looks ahead of the drone). The truth position is that view point when the columns
are there, else latitude/longitude (the output says which). Rows are matched to frames by the frame file name's
stem ("0003.png" -> frame "0003"; equal numbers match too: "3" and "0003") or, for video, the frame number.
The true tile is the gallery tile whose centre is nearest the truth position.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.geo.metrics import ErrorSummary, position_errors, summarize_errors, topk_hit_rates, true_tiles
from lpn_edge.runtime.localize import TIMINGS, Localizer, estimate_position
from lpn_edge.runtime.tables import read_csv_table

HIT_KS = (1, 5)


@dataclass(frozen=True)
class LocateOptions:
    """What `lpn-edge locate` was asked; see its --help for each option."""

    model: Any  # a path, or an Encoder (the Python API and the tests)
    indexes: Sequence[Path]
    inputs: Sequence[Path]
    top_k: int = 5
    device: str = "cpu"
    engine: str = "auto"
    every: int = 1
    radius_m: float | None = None
    json: bool = False
    truth: Path | None = None
    track: bool = False
    max_speed: float = 20.0
    interval: float = 1.0
    tolerance_m: float | None = None
    patience: int = 3
    plot: Path | None = None
    orthophoto: Path | None = None
    threads: int | None = None  # encoder threads on the CPU (None: one per core the process may run on)
    cpus: tuple[int, ...] | None = None  # pin the process to these cores before the model loads


# ---------------------------------------------------------------------------------------------------------------
# Truth


@dataclass(frozen=True)
class Truth:
    path: Path
    columns: str  # "view_latitude/view_longitude" or "latitude/longitude"
    by_name: dict[str, tuple[float, float]]
    by_number: dict[int, tuple[float, float]]

    def lookup(self, key: str | int) -> tuple[float, float] | None:
        if isinstance(key, int):
            return self.by_number.get(key)
        if key in self.by_name:
            return self.by_name[key]
        return self.by_number.get(int(key)) if key.isdigit() else None

    def describe(self) -> str:
        what = ("the ground point at the frame centre, which the tiles show" if self.columns.startswith("view")
                else "the drone's position: this table has no view_latitude/view_longitude")
        return f"truth {self.path}: position = {self.columns} ({what})"


def read_truth(path: str | Path) -> Truth:
    """A flight table (see the module docstring) -> Truth; LpnEdgeError naming the file and line when wrong."""
    table = read_csv_table(path, "--truth")
    view = table.has("view_latitude", "view_longitude")
    lat_key, lon_key = ("view_latitude", "view_longitude") if view else ("latitude", "longitude")
    table.require(("frame", lat_key, lon_key), "frame,latitude,longitude (as synth-flight writes)")
    by_name: dict[str, tuple[float, float]] = {}
    by_number: dict[int, tuple[float, float]] = {}
    for line, row in table.rows:
        frame = table.cell(row, "frame")
        position = (table.number(line, row, lat_key), table.number(line, row, lon_key))
        if not frame or not all(map(math.isfinite, position)):
            raise table.error(line, "needs a frame and finite coordinates")
        by_name[frame] = position
        if frame.isdigit():
            by_number[int(frame)] = position
    if not by_name:
        raise LpnEdgeError(f"--truth {path} has no rows")
    return Truth(table.path, f"{lat_key}/{lon_key}", by_name, by_number)


# ---------------------------------------------------------------------------------------------------------------
# The orthophoto of a gallery


def find_orthophoto(indexes: Sequence[Path]) -> tuple[Path, float | None] | None:
    """The orthophoto the gallery was cut from and its tile size: a tiling.json (`lpn-edge index tile`) beside an
    index file or in a folder next to it, whose source image exists (as written, or relative to tiling.json)."""
    from lpn_edge.geo.tiling import MARKER

    for index in indexes:
        folder = Path(index).parent
        candidates = [folder / MARKER, *sorted(folder.glob(f"*/{MARKER}"))]
        for marker in candidates:
            try:
                description = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            source = Path(str(description.get("source", "")))
            for path in (source, marker.parent / source):
                if str(source) and path.is_file():
                    size = description.get("tile_size_m")
                    return path, float(size) if size else None
    return None


# ---------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class FrameResult:
    name: str
    rows: list[int]
    estimate: tuple[float, float]
    truth: tuple[float, float] | None
    true_row: int = -1
    tracked: tuple[float, float] | None = None
    status: str = ""


@dataclass
class LocateReport:
    frames: list[FrameResult] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=lambda: {key: [] for key in TIMINGS})
    summary: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # the human-readable summary

    @property
    def ok(self) -> bool:
        """False when a frame could not be decoded (the others were located)."""
        return not self.failed


class _Clock:
    """Frame times for the sequence filter: a video frame's own time, else `step` seconds after the previous frame;
    never decreasing (a second video starting at 0 continues after the first)."""

    def __init__(self, step: float) -> None:
        self.step, self.last, self.offset = step, None, 0.0

    def __call__(self, stamp: float | None) -> float:
        if stamp is None:
            now = 0.0 if self.last is None else self.last + self.step
        else:
            now = stamp + self.offset
            if self.last is not None and now < self.last:
                self.offset += self.last + self.step - now
                now = self.last + self.step
        self.last = now
        return now


def _check(options: LocateOptions) -> None:
    if options.top_k < 1 or options.every < 1 or options.patience < 1:
        raise LpnEdgeError("--top-k, --every and --patience must be at least 1")
    if options.plot is not None and options.truth is None:
        raise LpnEdgeError("--plot needs --truth: the map shows the true path and colours each estimate by its "
                           "error")
    if options.track and not (options.max_speed > 0 and options.interval > 0):
        raise LpnEdgeError(f"--max-speed and --interval must be positive; got {options.max_speed} m/s, "
                           f"{options.interval} s")
    if options.threads is not None and options.threads < 1:
        raise LpnEdgeError(f"--threads must be at least 1; got {options.threads}")
    if options.threads is not None and options.device != "cpu":
        raise LpnEdgeError(f"--threads sets the encoder's CPU threads; it does not apply to --device {options.device}")
    if options.plot is not None and options.plot.suffix.lower() != ".png":
        raise LpnEdgeError(f"--plot {options.plot}: the map is a PNG file; give a name ending in .png")


def _number(value: float, digits: int = 7) -> float | None:
    return round(float(value), digits) if value is not None and math.isfinite(value) else None


def run_locate(options: LocateOptions, say: Callable[[str], None] = print,
               warn: Callable[[str], None] = print) -> LocateReport:
    """Run `lpn-edge locate` (see the module docstring): per-frame lines through `say`, unreadable frames through
    `warn`, and the summary; returns the report (`.ok` is False when a frame could not be decoded)."""
    from lpn_edge.geo.track import Tracker
    from lpn_edge.runtime.frames import iter_frames

    _check(options)
    frames = iter_frames(options.inputs, options.every)  # bad inputs are refused here, before the model loads
    truth = read_truth(options.truth) if options.truth is not None else None
    backdrop = None
    if options.plot is not None:
        backdrop = (options.orthophoto, None) if options.orthophoto is not None else find_orthophoto(options.indexes)
        if backdrop is None:
            raise LpnEdgeError("--plot needs the orthophoto under the map: pass --orthophoto PATH (no tiling.json "
                               "beside the gallery index names an image that exists)")
        if not Path(backdrop[0]).is_file():
            raise LpnEdgeError(f"--orthophoto {backdrop[0]} does not exist")
    if options.cpus is not None:
        from lpn_edge.runtime.cpus import pin_to_cpus

        pin_to_cpus(options.cpus)  # before the encoder exists: its thread pool inherits the mask
    encoder_options = {"threads": options.threads} if options.threads is not None else {}
    localizer = Localizer(options.model, list(options.indexes), device=options.device, top_k=options.top_k,
                          engine=options.engine, radius_m=options.radius_m, **encoder_options)
    with localizer:
        say_info = warn if options.json else say
        say_info(localizer.describe())
        if truth is not None:
            say_info(truth.describe())
        tolerance = options.tolerance_m if options.tolerance_m is not None else localizer.radius_m
        tracker = Tracker(options.max_speed, tolerance, options.patience) if options.track else None
        clock = _Clock(options.interval * options.every)
        positioned = np.flatnonzero(np.isfinite(localizer.latitude) & np.isfinite(localizer.longitude))
        report = LocateReport()
        for frame in frames:
            if frame.error is not None:
                report.failed.append((frame.name, frame.error))
                warn(f"error: cannot read frame {frame.name}: {frame.error} (skipped)")
                if options.json:
                    say(json.dumps({"frame": frame.name, "error": frame.error}))
                clock(frame.time_s)
                continue
            location = localizer.locate(frame.pixels, name=frame.name)
            location.timings["decode"] = frame.decode_s
            for key in TIMINGS:
                report.timings[key].append(location.timings[key])
            result = FrameResult(frame.name, [int(r) for r in location.rows], location.estimate,
                                 truth.lookup(frame.key) if truth is not None else None)
            record = location.as_dict()
            record["number"] = frame.number
            now = clock(frame.time_s)
            if tracker is not None:
                lat, lon, choice, status = tracker.step(location.candidates, now)
                if choice >= 0:  # the chosen candidate anchors the same estimate rule
                    anchor = int(location.positioned[choice])  # the candidate's row in the top k
                    lat, lon, _ = estimate_position(location.latitude, location.longitude, location.scores,
                                                    localizer.radius_m, anchor=anchor)
                result.tracked, result.status = (lat, lon), status
                record["track"] = {"latitude": _number(lat), "longitude": _number(lon), "status": status,
                                   "time_s": round(now, 3)}
            if result.truth is not None and len(positioned):
                nearest = true_tiles([result.truth[0]], [result.truth[1]], localizer.latitude[positioned],
                                     localizer.longitude[positioned])[0]
                result.true_row = int(positioned[nearest])
                record["truth"] = {"latitude": result.truth[0], "longitude": result.truth[1],
                                   "tile": localizer.tile_id(result.true_row),
                                   "rank": result.rows.index(result.true_row) + 1
                                   if result.true_row in result.rows else None,
                                   "error_m": _error(result.estimate, result.truth)}
                if result.tracked is not None:
                    record["truth"]["track_error_m"] = _error(result.tracked, result.truth)
            report.frames.append(result)
            say(json.dumps(record) if options.json else _frame_text(location, record))
        _summarise(report, localizer, truth, options, tolerance, backdrop, say, warn)
    return report


def _error(estimate: tuple[float, float] | None, truth: tuple[float, float]) -> float | None:
    if estimate is None or not all(map(math.isfinite, estimate)):
        return None
    return round(float(position_errors([estimate[0]], [estimate[1]], [truth[0]], [truth[1]])[0]), 2)


def _frame_text(location, record: dict) -> str:
    lat, lon = location.estimate
    head = (f"{location.name}: {lat:.6f}, {lon:.6f} ({location.used} tile{'s' if location.used != 1 else ''} "
            f"within {location.radius_m:.0f} m)" if math.isfinite(lat) else f"{location.name}: no estimate "
            "(no top tile has coordinates)")
    truth = record.get("truth")
    if truth is not None and truth["error_m"] is not None:
        rank = f"true tile rank {truth['rank']}" if truth["rank"] else "true tile not in the top"
        head += f"; error {truth['error_m']:.1f} m, {rank}"
    track = record.get("track")
    if track is not None:
        where = (f"{track['latitude']:.6f}, {track['longitude']:.6f}" if track["latitude"] is not None
                 else "no fix yet")
        head += f"\n  track: {where} ({track['status']})"
        if truth is not None and truth.get("track_error_m") is not None:
            head += f", error {truth['track_error_m']:.1f} m"
    lines = [head]
    for rank, tile in enumerate(record["tiles"], start=1):
        where = (f"{tile['latitude']:.6f}, {tile['longitude']:.6f}" if tile["latitude"] is not None
                 else "no coordinates")
        lines.append(f"  {rank:>2}. {tile['id']}  {tile['score']:.4f}  {where}")
    return "\n".join(lines)


def _summarise(report: LocateReport, localizer: Localizer, truth: Truth | None, options: LocateOptions,
               tolerance: float, backdrop, say: Callable[[str], None], warn: Callable[[str], None]) -> None:
    lines = [f"frames: {len(report.frames)} located, {len(report.failed)} unreadable"
             + (" (" + ", ".join(name for name, _ in report.failed) + ")" if report.failed else "")]
    summary: dict[str, Any] = {"frames": len(report.frames), "unreadable": [name for name, _ in report.failed],
                               "radius_m": round(localizer.radius_m, 3), "engine": localizer.engine}
    if options.cpus is not None:  # what the process really ran on
        summary["cpus"] = sorted(os.sched_getaffinity(0))
        lines.append(f"pinned to cores {','.join(map(str, summary['cpus']))}")
    if options.threads is not None:
        summary["threads"] = options.threads
    if report.frames:
        latency = {}
        lines.append("latency per frame (ms)   median      p90")
        totals = np.sum([report.timings[key] for key in TIMINGS], axis=0)
        for key, values in [*[(key, report.timings[key]) for key in TIMINGS], ("total", totals)]:
            values = 1000 * np.asarray(values, np.float64)
            latency[key] = {"median": round(float(np.median(values)), 3),
                            "p90": round(float(np.percentile(values, 90)), 3)}
            lines.append(f"  {key:<20} {latency[key]['median']:9.2f} {latency[key]['p90']:8.2f}")
        summary["latency_ms"] = latency
    if truth is not None:
        summary["truth"] = {"file": str(truth.path), "position": truth.columns}
        lines.append(truth.describe())
        judged = [r for r in report.frames if r.truth is not None]
        without = len(report.frames) - len(judged)
        if without:
            lines.append(f"  {without} frame{'s' if without > 1 else ''} without a truth row (not judged)")
        if judged:
            figures = _figures(judged, localizer, [r.estimate for r in judged])
            summary["truth"].update(figures["json"])
            lines += ["  estimate: " + figures["text"], "  " + _hits_text(figures["json"]["hits"])]
            if options.track:
                tracked = _figures(judged, localizer, [r.tracked for r in judged])
                summary["truth"]["track"] = tracked["json"]["error"]
                lines.append(f"  with --track: {tracked['text']}")
    if options.track:
        statuses = [r.status for r in report.frames]
        counts = {name: statuses.count(name) for name in ("first", "tracked", "held", "reset")}
        summary["track"] = {"max_speed_m_s": options.max_speed, "tolerance_m": round(tolerance, 3),
                            "interval_s": options.interval, "patience": options.patience, "status": counts}
        lines.append(f"track: max speed {options.max_speed:g} m/s, tolerance {tolerance:.0f} m, "
                     + ", ".join(f"{count} {name}" for name, count in counts.items()))
    if options.plot is not None:
        path = _plot(report, localizer, options, backdrop)
        if path is not None:
            summary["map"] = str(path)
            lines.append(f"map: {path}")
        else:
            warn("warning: no frame has a truth row and an estimate; no map written")
    report.summary = summary
    report.lines = lines
    if options.json:
        say(json.dumps({"summary": summary}))
    else:
        say("\n".join(lines))


def _figures(judged: list[FrameResult], localizer: Localizer, estimates: list) -> dict[str, Any]:
    """Error summary and top-k hit rates of the judged frames (frames without an estimate: counted, not summed)."""
    have = [i for i, e in enumerate(estimates) if e is not None and all(map(math.isfinite, e))]
    ks = sorted({k for k in HIT_KS if k <= localizer.top_k} | {localizer.top_k})  # 1, 5 and k itself
    hits = topk_hit_rates([r.rows for r in judged], [r.true_row for r in judged], ks)
    result: dict[str, Any] = {"hits": {f"top{k}": share for k, share in hits.items()},
                              "frames": len(judged), "without_estimate": len(judged) - len(have)}
    if not have:
        return {"json": {**result, "error": None}, "text": "no frame has an estimate"}
    errors = position_errors([estimates[i][0] for i in have], [estimates[i][1] for i in have],
                             [judged[i].truth[0] for i in have], [judged[i].truth[1] for i in have])
    errors_summary: ErrorSummary = summarize_errors(errors)
    result["error"] = {k: round(v, 4) for k, v in errors_summary.as_dict().items()}
    text = str(errors_summary)
    if len(have) < len(judged):
        text += f" ({len(judged) - len(have)} frames without an estimate)"
    return {"json": result, "text": text}


def _hits_text(hits: dict[str, float]) -> str:
    return "true tile in the " + ", ".join(f"top-{k[3:]} {100 * v:.1f} %" for k, v in hits.items())


def _plot(report: LocateReport, localizer: Localizer, options: LocateOptions, backdrop) -> Path | None:
    from lpn_edge.geo.flight_map import draw_flight_map

    chosen = [(r.tracked if options.track else r.estimate, r.truth) for r in report.frames]
    chosen = [(e, t) for e, t in chosen if t is not None and e is not None and all(map(math.isfinite, e))]
    if not chosen:
        return None
    errors = position_errors([e[0] for e, _ in chosen], [e[1] for e, _ in chosen], [t[0] for _, t in chosen],
                             [t[1] for _, t in chosen])
    note = f"median error {np.median(errors):.1f} m" + (" (tracked)" if options.track else "")
    orthophoto, tile_size = backdrop
    known = np.isfinite(localizer.latitude) & np.isfinite(localizer.longitude)
    tiles = dict(tile_lat=localizer.latitude[known], tile_lon=localizer.longitude[known],
                 tile_size_m=tile_size) if tile_size else {}
    return draw_flight_map(orthophoto, options.plot, [t[0] for _, t in chosen], [t[1] for _, t in chosen],
                           [e[0] for e, _ in chosen], [e[1] for e, _ in chosen], errors_m=errors, note=note, **tiles)
