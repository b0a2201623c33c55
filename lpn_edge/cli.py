"""The `lpn-edge` command line. Each command parses, calls one stage function and prints; imports are lazy so
that `lpn-edge --help` answers at once."""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import typer

from lpn_edge.errors import LpnEdgeError

app = typer.Typer(
    name="lpn-edge",
    help="LPN cross-view drone geo-localization: train, evaluate, export and run on the edge.\n\n"
         "Example: lpn-edge demo --quick   (synthetic world, CPU, no downloads)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and validate data sets.\n\nExample: lpn-edge data check demo-out/world",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
index_app = typer.Typer(help="Geo-referenced satellite galleries: tile an orthophoto, build and inspect an index.\n\n"
                        "Example: lpn-edge index tile orthophoto.png --tile-size 120 --out tiles", no_args_is_help=True)
app.add_typer(index_app, name="index")


# Which extra brings an optional package (the base install is the torch-free runtime part).
EXTRA_OF_MODULE = {"torch": "train", "torchvision": "train", "tqdm": "train", "tensorboard": "train",
                   "onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx", "pycuda": "gpu", "tensorrt": "trt",
                   "faiss": "faiss", "rasterio": "geo", "av": "video"}


def friendly_errors(command):
    """Turn LpnEdgeError, and a missing optional package, into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        # a warning reads as one line "warning: ...", not Python's "file:line: UserWarning: ..." plus a source line
        warnings.formatwarning = lambda message, category, *rest, **extra: f"warning: {message}\n"
        try:
            return command(*args, **kwargs)
        except LpnEdgeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top not in EXTRA_OF_MODULE:
                raise
            typer.echo(f"error: this command needs the Python package {top!r}, which is not installed: "
                       f"pip install \"lpn-edge[{EXTRA_OF_MODULE[top]}]\"", err=True)
            raise typer.Exit(2) from None

    return wrapper


def require_at_least(minimum: int, **values: int) -> None:
    """One-line error for the first option below ``minimum`` (keyword: the option's name as typed)."""
    for option, value in values.items():
        if value < minimum:
            raise LpnEdgeError(f"{option} must be at least {minimum}, got {value}")


@app.command()
@friendly_errors
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Directory for the world, runs, exports and summary."),
    quick: bool = typer.Option(False, "--quick", help="A smaller world and shorter training (about a minute on 2 "
                                                      "idle cores; the full demo about 4.5 minutes)."),
    seed: int = typer.Option(0, help="Seed of the synthetic world and of training."),
    force: bool = typer.Option(False, "--force", help="Replace the contents of an existing --out directory."),
):
    """The main job on built-in data: synthesise a world, train LPN and the 1-part baseline on the CPU, evaluate
    both in both directions, export the LPN to ONNX, and write summary.json.

    Example: lpn-edge demo --quick
    """
    from lpn_edge.demo import run_demo

    run_demo(out, quick=quick, seed=seed, force=force, say=typer.echo)


@app.command()
@friendly_errors
def inspect(
    source: Path = typer.Argument(..., help="A run config (.yaml) or an lpn-edge checkpoint (.pt)."),
    view: str = typer.Option("drone", help="View whose embedding is computed: satellite, drone or ground."),
):
    """Build (or load) a model and print its architecture summary and embedding shape.

    Example: lpn-edge inspect configs/cpu-small.yaml
    """
    from lpn_edge.inspect import inspect_model

    typer.echo(inspect_model(source, view))


@app.command("convert-official")
@friendly_errors
def convert_official(
    src: Path = typer.Argument(..., help="state_dict saved by the authors' code (net_XXX.pth)."),
    out: Path = typer.Option(..., "--out", help="Where to write the lpn-edge checkpoint (.pt)."),
    opts: Path | None = typer.Option(None, "--opts", help="The run's opts.yaml (settings beside the weights)."),
    block: int | None = typer.Option(None, "--block", help="Number of parts n."),
    views: int | None = typer.Option(None, "--views", help="2 (CVUSA/CVACT) or 3 (University-1652)."),
    stride: int | None = typer.Option(
        None, "--stride",
        help="Stride of ResNet layer4: 1 or 2; needed when opts.yaml does not say (the authors' default is 2)."),
    pool: str | None = typer.Option(None, "--pool", help="avg, max or avg+max."),
    classes: int | None = typer.Option(None, "--classes", help="Number of training classes."),
):
    """Convert an official LPN checkpoint (wtyhub/LPN) into an lpn-edge checkpoint.

    Example: lpn-edge convert-official net_119.pth --opts opts.yaml --out lpn_u1652.pt
    """
    from lpn_edge.checkpoint import save_checkpoint
    from lpn_edge.model.official import convert_official as convert

    model, report = convert(src, opts, parts=block, views=views, stride=stride, pool=pool, num_classes=classes)
    save_checkpoint(out, model, report.config, metrics={}, source=str(src))
    cfg = report.config.model
    typer.echo(f"converted {src} -> {out}")
    typer.echo(f"  {cfg.views}-view {cfg.backbone}, {cfg.parts} parts, pool {cfg.pool}, stride {cfg.stride}, "
               f"{cfg.num_classes} classes, shared weights: {cfg.share_weights}")
    typer.echo("  settings from: " + ", ".join(f"{k}={v}" for k, v in sorted(report.settings_source.items())))
    if report.ignored_keys:
        typer.echo(f"  ignored {len(report.ignored_keys)} unused torchvision classifier tensors (fc.* / classifier.*)")
    if report.dropped_duplicate:
        typer.echo(f"  dropped {report.dropped_duplicate}.* (duplicate of model_1, shared weights)")


@app.command()
@friendly_errors
def train(
    config: Path | None = typer.Option(None, "--config", help="Run config YAML (see configs/)."),
    data: Path = typer.Option(..., "--data", help="Data set root (University-1652 layout, CVUSA or CVACT)."),
    out: Path | None = typer.Option(None, "--out", help="New run directory."),
    resume: Path | None = typer.Option(None, "--resume", help="Run directory to continue where it stopped."),
    force: bool = typer.Option(False, "--force", help="Replace the contents of an existing --out directory."),
    backbone_weights: str | None = typer.Option(
        None, "--backbone-weights", help="imagenet (torch cache), none, or a PATH to a torchvision state_dict."),
    device: str | None = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when present)."),
    overrides: list[str] | None = typer.Argument(None, help="Config overrides such as train.epochs=2."),
):
    """Train an LPN. Several GPUs: torchrun --nproc_per_node N $(which lpn-edge) train ...

    Example: lpn-edge train --config configs/university1652.yaml --data University-Release --out runs/lpn4
    """
    from lpn_edge.config import RunConfig, load_config, parse_override
    from lpn_edge.devices import resolve_device
    from lpn_edge.train import ProgressPrinter, train as run_training

    resolve_device(device)
    if (out is None) == (resume is None):
        raise LpnEdgeError("give exactly one of --out RUN_DIR (a new run) or --resume RUN_DIR")
    if resume is not None and config is not None:
        raise LpnEdgeError("--resume continues with the run's own config; leave out --config (override "
                           "train.epochs=N to extend the run)")
    run_config = load_config(config) if config else RunConfig()
    pairs = dict(parse_override(text) for text in overrides or [])
    if backbone_weights is not None:
        pairs["train.backbone_weights"] = backbone_weights
    if resume is not None:
        unknown = sorted(set(pairs) - {"train.epochs"})
        if unknown:
            raise LpnEdgeError(f"on --resume only train.epochs may change, not {', '.join(unknown)}")
    # a bar per epoch on a terminal; a line every 10 seconds into a log file or pipe
    progress = True if sys.stderr.isatty() else ProgressPrinter(typer.echo)
    if resume is not None:
        result = run_training(run_config.replace(pairs) if pairs else None, data, resume, resume=True, device=device,
                              progress=progress, say=typer.echo)
    else:
        result = run_training(run_config.replace(pairs, "command line"), data, out, force=force, device=device,
                              progress=progress, say=typer.echo)
    for row in result.history[-3:]:
        typer.echo(f"epoch {int(row['epoch'])}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.3f}, "
                   f"{row['images_per_s']:.1f} img/s")
    typer.echo(f"checkpoint: {result.model or result.checkpoint}")
    if result.stopped_by:
        # the conventional exit status of a process stopped by a signal: 128 + its number
        raise typer.Exit(130 if result.stopped_by == "SIGINT" else 143 if result.stopped_by == "SIGTERM" else 1)


@app.command("eval")
@friendly_errors
def evaluate(
    checkpoint: Path = typer.Argument(..., help="lpn-edge checkpoint (.pt), or an exported artifact (.onnx, .engine, "
                                                ".pt2, split graph) run by the runtime's encoders."),
    data: Path = typer.Option(..., "--data", help="Data set root (University-1652 test/ folders, CVUSA/CVACT val)."),
    task: str = typer.Option("all", help="drone2sat, sat2drone, ground2sat, sat2ground or all."),
    no_flip: bool = typer.Option(False, "--no-flip", help="Skip the test-time horizontal flip."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when present)."),
    workers: int = typer.Option(0, help="DataLoader worker processes."),
    rotate: float = typer.Option(0.0, help="Rotate query images by this many degrees (paper Table V)."),
    shift: int = typer.Option(0, help="Shift query images right by this many pixels (paper Table VII), see "
                                      "--shift-mode."),
    shift_mode: str = typer.Option("paper", "--shift-mode",
                                   help="paper: P black columns on the left after the resize, as the authors' test; "
                                        "reflect: move right and down, reflected border."),
    parts: str | None = typer.Option(None, help="Use only these parts, e.g. 0,1 (paper Table VI)."),
    distance_groups: bool = typer.Option(False, "--distance-groups",
                                         help="Split drone queries by distance (Table IX)."),
    distractors: Path | None = typer.Option(None, help="Folder <id>/* of extra gallery tiles matching no query."),
    plots: int = typer.Option(0, help="Draw retrieval strips and heatmaps for this many queries per task."),
    out_json: Path | None = typer.Option(None, "--json", help="Where to write the metrics (default: beside CKPT)."),
    gallery_model: Path | None = typer.Option(None, "--gallery-model",
                                                 help="Artifacts: the artifact of the other view, needed when the "
                                                      "model's drone and satellite branches do not share weights."),
    compare: Path | None = typer.Option(None, "--compare",
                                           help="Artifacts: the checkpoint it was exported from; prints both metrics, "
                                                "the mean/min cosine between their embeddings and top-1 agreement."),
):
    """Evaluate a checkpoint or an exported artifact with the benchmark protocol (Recall@K, AP), both directions.

    An artifact embeds its own view; with shared satellite/drone weights (the default) it serves both directions,
    otherwise give the other view's artifact with --gallery-model. --device picks the runtime backend for artifacts
    (cpu: ONNX Runtime CPU; cuda: ONNX Runtime CUDA or the TensorRT engine).

    Example: lpn-edge eval runs/lpn4/model.pt --data University-Release --task all
    Example: lpn-edge eval export/model-drone.onnx --data University-Release --compare runs/lpn4/model.pt
    """
    from lpn_edge.devices import resolve_device
    from lpn_edge.eval.evaluate import EvalOptions, evaluate as run_evaluation

    require_at_least(1, **{"--batch-size": batch_size})
    require_at_least(0, **{"--workers": workers, "--plots": plots, "--shift": shift})
    if out_json is not None and out_json.is_dir():
        raise LpnEdgeError(f"--json {out_json} is a directory; give the path of the JSON file to write")
    from lpn_edge.eval.artifacts import is_artifact

    if not is_artifact(checkpoint):  # an artifact's device is the runtime's (checked by open_encoder)
        resolve_device(device)
    try:
        part_list = tuple(int(p) for p in parts.split(",")) if parts else None
    except ValueError:
        raise LpnEdgeError(f"--parts must be comma-separated part indices such as 0,1; got {parts!r}") from None
    options = EvalOptions(task=task, flip=not no_flip, batch_size=batch_size, device=device, num_workers=workers,
                          rotate=rotate, shift=shift, shift_mode=shift_mode, parts=part_list,
                          distance_groups=distance_groups, distractors=distractors, plots=plots, out_json=out_json,
                          gallery_model=gallery_model, compare=compare)
    report = run_evaluation(checkpoint, data, options)
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(report.table())
    typer.echo(f"metrics: {report.json_path}")
    for path in report.plots:
        typer.echo(f"figure: {path}")


@app.command()
@friendly_errors
def synth(
    out: Path = typer.Argument(..., help="New directory for the data set (University-1652 layout)."),
    locations: int = typer.Option(100, "--locations", help="Places in the world (split into train and test)."),
    seed: int = typer.Option(0, "--seed", help="The world: the same seed gives byte-identical files."),
    drone_per_location: int = typer.Option(12, "--drone-per-location",
                                           help="Drone views per place (short/middle/long)."),
    size: int = typer.Option(256, "--size", help="Image side in pixels."),
    distractors: int = typer.Option(0, "--distractors", help="Extra satellite tiles in the test gallery."),
    preview: bool = typer.Option(False, "--preview", help="Also write preview.png, a contact sheet of pairs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier synthetic data set in OUT."),
):
    """Write a synthetic cross-view world (satellite tiles, drone orbits, street views, geo.csv).

    Example: lpn-edge synth world --locations 100 --seed 0 --drone-per-location 50 --size 256 --preview
    """
    from lpn_edge.data.synth import synthesize

    typer.echo(str(synthesize(out, locations=locations, seed=seed, drone_per_location=drone_per_location, size=size,
                              distractors=distractors, preview=preview, overwrite=overwrite)))


@app.command("synth-flight")
@friendly_errors
def synth_flight(
    out: Path = typer.Argument(..., help="New directory for the orthophoto, frames and flight.csv."),
    area: float = typer.Option(1200.0, "--area", help="Side of the square area, metres."),
    seed: int = typer.Option(0, "--seed", help="The area and the path: the same seed gives byte-identical files."),
    frames: int = typer.Option(40, "--frames", help="Number of drone frames along the path."),
    altitude: float = typer.Option(90.0, "--altitude", help="Flying height above the ground, metres."),
    size: int = typer.Option(256, "--size", help="Frame side in pixels (the orthophoto has size/100*1.5 px/m)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier synthetic flight in OUT."),
):
    """Write a synthetic geo-referenced area (orthophoto.png + orthophoto.pgw, WGS84) and a drone flight over it:
    oblique frames along a smooth path, with the true latitude, longitude and heading of each in flight.csv.

    Example: lpn-edge synth-flight flight --area 1200 --seed 0 --frames 40 --size 128
    """
    from lpn_edge.data.synth.flight import synth_flight as write_flight

    typer.echo(str(write_flight(out, area=area, seed=seed, frames=frames, altitude=altitude, size=size,
                                overwrite=overwrite)))


@data_app.command("check")
@friendly_errors
def data_check(
    root: Path = typer.Argument(..., help="Data set root to validate."),
    quick: bool = typer.Option(False, "--quick", help="Check names and sizes only; do not decode every image."),
    per_class: bool = typer.Option(False, "--per-class", help="Also print the image count of every class and view."),
):
    """Detect the layout of a data tree, count images per split/view/class, list unreadable files.

    Exits with status 2 only when the structure itself is unusable (no layout, an empty or image-less folder).
    Example: lpn-edge data check University-Release
    """
    from lpn_edge.data.check import check_dataset, format_class_table, format_report

    report = check_dataset(root, verify=not quick)
    typer.echo(format_report(report))
    if per_class:
        typer.echo(format_class_table(report))
    if not report.usable:
        # bad input like every other command: the report above says what is wrong, stderr says it in one line
        typer.echo(f"error: {root} is not a usable data set (see the report above)", err=True)
        raise typer.Exit(2)


@index_app.command("tile")
@friendly_errors
def index_tile(
    orthophoto: Path = typer.Argument(..., help="Geo-referenced image: GeoTIFF, or PNG/JPEG with a world file "
                                                "(.pgw/.jgw/.wld, WGS84) beside it, or any image with --bounds."),
    tile_size: float = typer.Option(..., "--tile-size", help="Side of a tile on the ground, metres."),
    stride: float | None = typer.Option(None, "--stride", help="Metres between tiles (default: the tile size)."),
    size: int = typer.Option(256, "--size", help="Tile side in pixels (the model's input size)."),
    out: Path = typer.Option(..., "--out", help="Folder for tiles/<id>.png, geo.csv and tiling.json."),
    bounds: str | None = typer.Option(None, "--bounds", help="north,west,south,east of the image edges, WGS84."),
):
    """Cut an orthophoto into square gallery tiles and write geo.csv with every tile centre's latitude/longitude.

    Strips on the east and south edges narrower than a tile are reported. Running again skips finished tiles.
    Example: lpn-edge index tile area.png --tile-size 100 --stride 50 --out gallery-tiles
    """
    from lpn_edge.geo.tiling import tile_orthophoto

    typer.echo(str(tile_orthophoto(orthophoto, out, tile_size, stride, size=size, bounds=bounds)))


@index_app.command("build")
@friendly_errors
def index_build(
    model: Path = typer.Option(..., "--model", help="The embedding model: an exported artifact (.onnx, .engine, "
                                                    "split .onnx) or a checkpoint (.pt, .pt2) of the gallery's view."),
    images: Path = typer.Option(..., "--images", help="Folder of gallery images (searched recursively); tile id = "
                                                      "relative path without extension."),
    out: Path = typer.Option(..., "--out", help="The gallery index to write (.lpnidx)."),
    geo: Path | None = typer.Option(None, "--geo", help="CSV with id,latitude,longitude (lpn-edge synth and "
                                                           "index tile write one); matched by tile id, file name or "
                                                           "class folder."),
    batch: int = typer.Option(32, "--batch", help="Images per encoder call."),
    shard: str | None = typer.Option(None, "--shard", help="K/N: build every N-th image from offset K (merge "
                                                              "the N shards with index merge)."),
    fp32: bool = typer.Option(False, "--fp32", help="Store float32 embeddings (default float16: half the size)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out, or restart an unfinished build "
                                                      "made with other arguments."),
    device: str | None = typer.Option(None, "--device", help="Where the encoder runs: cpu, cuda, tensorrt "
                                                                "(default: the encoder's own choice)."),
    chunk: int | None = typer.Option(None, "--chunk", help="Images per saved chunk (default 32 batches)."),
    workers: int | None = typer.Option(None, "--workers", help="Image decoding threads (default: CPU count, "
                                                                  "at most 8)."),
):
    """Embed a folder of gallery images and write a gallery index (fp16 embeddings, tile ids, latitude/longitude).

    Images are decoded in background threads while the encoder runs; embeddings are saved in chunks in
    OUT.partial/, so an interrupted build (Ctrl-C, SIGTERM, a crash) continues where it stopped when the same command
    runs again. Unreadable images are named and skipped: the index holds the others and the exit status is 1.
    Exit status 130 after an interruption.
    Example: lpn-edge index build --model lpn-satellite.onnx --images tiles --geo tiles/geo.csv --out gallery.lpnidx
    """
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from lpn_edge.runtime.encoders import open_encoder  # the encoders of the runtime (ONNX Runtime, TensorRT, ...)
    from lpn_edge.runtime.index_build import build_index, parse_shard

    require_at_least(1, **{"--batch": batch, **({"--chunk": chunk} if chunk is not None else {}),
                           **({"--workers": workers} if workers is not None else {})})
    shard_pair = parse_shard(shard)
    encoder = open_encoder(model, device=device) if device else open_encoder(model)

    def stop(signum, frame):  # SIGTERM ends the build like Ctrl-C: finished chunks stay for the next run
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave SIGTERM alone
        previous = None
    state = {"chunks": 0, "total": 0}
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                      TimeRemainingColumn(), transient=False) as bar:
            task = bar.add_task(f"embedding {images}", total=None)

            def progress(event) -> None:
                state.update(chunks=event.chunks_done, total=event.chunks_total)
                bar.update(task, total=event.images_total, completed=event.images_done)

            report = build_index(encoder, images, out, geo_csv=geo, batch=batch, shard=shard_pair, progress=progress,
                                 dtype="float32" if fp32 else "float16", force=force, chunk=chunk, workers=workers)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {state['chunks']} of {state['total']} chunks saved in {out}.partial; run the same "
                   "command again to resume", err=True)
        raise typer.Exit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    typer.echo(report.summary())
    if not report.ok:
        typer.echo(f"warning: {len(report.skipped)} unreadable images skipped (listed above)", err=True)
        raise typer.Exit(1)


@index_app.command("info")
@friendly_errors
def index_info(
    gallery: Path = typer.Argument(..., help="Gallery index (.lpnidx)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the checksum (sizes are still checked)."),
):
    """Print a gallery index's tile count, model fingerprint, view, dimension, dtype, size on disk and geographic
    extent (latitude/longitude range and its span in km), and how many tiles lack coordinates.

    Example: lpn-edge index info gallery.lpnidx
    """
    from lpn_edge.runtime.gallery import GalleryIndex, describe

    with GalleryIndex.open(gallery, verify=not no_verify) as index:
        typer.echo(describe(index))


@index_app.command("merge")
@friendly_errors
def index_merge(
    shards: list[Path] = typer.Argument(..., help="Gallery index files: the shards of one build (any order)."),
    out: Path = typer.Option(..., "--out", help="The merged gallery index (.lpnidx) to write."),
):
    """Join gallery index shards (built with --shard K/N) into one index, in the order of the unsharded build.

    All shards must come from the same model, view, dimension and dtype; indexes without shard information are
    concatenated in the order given. Duplicate tile ids are refused.
    Example: lpn-edge index merge gallery-0.lpnidx gallery-1.lpnidx --out gallery.lpnidx
    """
    from lpn_edge.runtime.gallery import GalleryIndex, merge

    merge(shards, out)
    with GalleryIndex.open(out, verify=False) as index:
        typer.echo(f"merged {len(shards)} shards -> {out}: {index.count} tiles, model {index.fingerprint}, "
                   f"view {index.view}, dim {index.dim}, {index.dtype}")


LOCATE_HELP = (
    "Locate drone frames in a gallery: per frame the best tiles (score, latitude/longitude) and one position "
    "estimate; at the end the per-frame latency (decode, preprocess, encode, match: median and 90th percentile)."
    "\n\nPosition estimate: among the top-k tiles with coordinates the best-scoring one is the anchor; every top-k "
    "tile whose centre is within R metres (great-circle) of the anchor's centre, the anchor included, is averaged "
    "(latitude and longitude) with weight max(score, 0); when all those weights are 0 the estimate is the anchor's "
    "centre. R is --radius, by default 1.5 x the gallery's tile spacing (the median distance from a tile centre to "
    "the nearest other tile centre, measured on up to 1024 tiles): on a grid of stride s it takes in the anchor's 8 "
    "neighbours (s and 1.41 s away), not the next ring (2 s). No top-k tile with coordinates: no estimate."
    "\n\n--truth: the truth position is view_latitude/view_longitude when present (the ground point at the frame "
    "centre, which the tiles show: the camera is oblique), else latitude/longitude (the output says which); rows "
    "match frames by file name stem or frame number; the true tile is the tile whose centre is nearest the truth "
    "position."
    "\n\n--track (lpn_edge.geo.track): the first frame with candidates accepts its best-scoring one; every later "
    "frame at time t looks at the candidates within reach of the anchor (the last accepted position): great-circle "
    "distance at most max_speed * (t - t_anchor) + tolerance metres; the best-scoring reachable candidate is "
    "accepted and becomes the anchor. If none is reachable the frame is missed: the anchor's position is held; on "
    "the --patience-th missed frame in a row the track is reset: that frame accepts its best-scoring candidate "
    "regardless of distance. The candidates are the top-k tiles; an accepted tile anchors the same estimate rule. "
    "Errors are reported with and without."
    "\n\nA frame that cannot be decoded is named and skipped. Exit status: 0 all frames located, 1 some frame "
    "could not be decoded, 2 bad input (a missing file, a gallery of another model, ...)."
    "\n\nExample: lpn-edge locate --model lpn-drone.onnx --index gallery.lpnidx flight/frames --truth "
    "flight/flight.csv --track --plot map.png"
)


@app.command(help=LOCATE_HELP)
@friendly_errors
def locate(
    inputs: list[Path] = typer.Argument(..., help="Images, folders of images (recursively, sorted) or video files "
                                                  "(.mp4, .mov, .avi, .mkv, ...: the \\[video] extra, PyAV)."),
    model: Path = typer.Option(..., "--model", help="The query (drone) model: an exported artifact (.onnx, .engine, "
                                                    "split .onnx) or a checkpoint (.pt, .pt2)."),
    index: str = typer.Option(..., "--index", help="Gallery index (.lpnidx) built by the same model; several "
                                                   "(shards, areas) separated by commas are searched together."),
    top_k: int = typer.Option(5, "--top-k", help="Best tiles per frame."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line: a line per frame, then "
                                                       "{\"summary\": ...}."),
    device: str = typer.Option("cpu", "--device", help="Where the encoder runs: cpu, cuda, tensorrt."),
    engine: str = typer.Option("auto", "--engine", help="Matching: numpy, faiss, gpu or auto (the GPU when one "
                                                        "answers, else FAISS with one thread when installed, which "
                                                        "holds the gallery in memory, else numpy, which reads it "
                                                        "memory-mapped)."),
    every: int = typer.Option(1, "--every", help="Use every N-th frame of each input (frames 0, N, 2N, ...)."),
    radius: float | None = typer.Option(None, "--radius", help="R of the position estimate, metres (default "
                                                                  "1.5 x the gallery's tile spacing)."),
    truth: Path | None = typer.Option(None, "--truth", help="flight.csv (frame,latitude,longitude[,view_latitude,"
                                                               "view_longitude]): position errors and true-tile "
                                                               "hit rates."),
    track: bool = typer.Option(False, "--track", help="Also filter the sequence: reject impossible jumps (see "
                                                      "above)."),
    max_speed: float = typer.Option(20.0, "--max-speed", help="--track: the drone's top ground speed, m/s."),
    interval: float = typer.Option(1.0, "--interval", help="--track: seconds between consecutive image frames "
                                                           "(video frames carry their own times)."),
    tolerance: float | None = typer.Option(None, "--tolerance", help="--track: metres always added to the reach "
                                                                        "(default R)."),
    patience: int = typer.Option(3, "--patience", help="--track: missed frames in a row that reset the track."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a map (PNG): the orthophoto, the true path, the "
                                                             "estimates coloured by error, the tiles. Needs --truth."),
    orthophoto: Path | None = typer.Option(None, "--orthophoto", help="The map's background (default: the image "
                                                                         "named by a tiling.json beside the index)."),
    threads: int | None = typer.Option(None, "--threads", help="Encoder threads on the CPU (default: one per core "
                                                                 "the process may run on)."),
    cpus: str | None = typer.Option(None, "--cpus", help="Run on these cores only, e.g. 0 or 2-3 (Linux): keep the "
                                                          "encoder off the cores of other work; see README."),
):
    from lpn_edge.locate import LocateOptions, run_locate
    from lpn_edge.runtime.cpus import parse_cpus

    indexes = [Path(part.strip()) for part in index.split(",") if part.strip()]
    if not indexes:
        raise LpnEdgeError("--index needs at least one gallery index file")
    options = LocateOptions(model=model, indexes=indexes, inputs=inputs, top_k=top_k, device=device, engine=engine,
                            every=every, radius_m=radius, json=as_json, truth=truth, track=track,
                            max_speed=max_speed, interval=interval, tolerance_m=tolerance, patience=patience,
                            plot=plot, orthophoto=orthophoto, threads=threads,
                            cpus=parse_cpus(cpus) if cpus is not None else None)
    report = run_locate(options, say=typer.echo, warn=lambda line: typer.echo(line, err=True))
    if not report.ok:
        raise typer.Exit(1)


def _int_list(option: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise LpnEdgeError(f"{option} takes comma-separated integers such as 1,8; got {text!r}") from None


@app.command()
@friendly_errors
def bench(
    model: list[Path] = typer.Option(..., "--model", help="Artifact (.onnx, .engine) or checkpoint (.pt); repeat "
                                     "for several. The checkpoint is the reference (PyTorch eager fp32)."),
    reference: Path | None = typer.Option(None, "--reference", help="Checkpoint of the reference (default: "
                                             "the one among --model, or the one the artifacts name, beside them)."),
    batch: str = typer.Option("1,8", "--batch", help="Batch sizes, comma-separated (GPU: 1,64)."),
    threads: str = typer.Option("1,2", "--threads", help="CPU threads (ONNX Runtime and torch alike)."),
    iters: int = typer.Option(10, "--iters", help="Timed calls per figure."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed calls first."),
    gallery_size: int = typer.Option(100_000, "--gallery-size", help="Rows of the synthetic matching gallery."),
    queries: str = typer.Option("1,64", "--queries", help="Query counts for matching."),
    skip: str = typer.Option("", "--skip", help="Parts to leave out: encode,pool,match,locate,train."),
    data: Path | None = typer.Option(None, "--data", help="University-1652-layout folder (drone/, satellite/) "
                                        "for the accuracy figures (default: random images)."),
    device: str = typer.Option("auto", "--device", help="auto (CPU rows, and GPU rows when torch sees a GPU), "
                                                         "cpu, or cuda (GPU rows only)."),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON document instead of the table."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON document to this file, after every "
                                    "part (a run cut short keeps the parts it finished)."),
):
    """Time encoding, ring pooling, matching and the locate loop per frame against the reference in the same run
    (trtexec-style statistics: min, median, mean, p90, p99, throughput; ratios to the reference). Progress on
    stderr, the table or JSON on stdout; parts that cannot run here are listed with the reason.

    Example: lpn-edge bench --model export/model-drone.onnx --model model.pt --batch 1,8 --threads 1,2
    """
    import json

    from lpn_edge.bench import BenchOptions, run_bench
    from lpn_edge.bench.report import table

    options = BenchOptions(models=tuple(model), reference=reference, batch=_int_list("--batch", batch),
                           threads=_int_list("--threads", threads), iters=iters, warmup=warmup,
                           gallery_size=gallery_size, queries=_int_list("--queries", queries),
                           skip=frozenset(p.strip() for p in skip.split(",") if p.strip()), data=data, device=device)
    if out is not None and not out.parent.is_dir():
        raise LpnEdgeError(f"--out {out}: the folder {out.parent} does not exist")

    def write(document: dict) -> None:
        from lpn_edge.fileio import atomic_write_text

        atomic_write_text(out, json.dumps(document, indent=2) + "\n")

    document = run_bench(options, progress=lambda text: typer.echo(text, err=True),
                         after_part=write if out is not None else None)
    typer.echo(json.dumps(document, indent=2) if json_out else table(document))
    if document["failed"]:
        typer.echo(f"error: bench part(s) {', '.join(f['part'] for f in document['failed'])} failed (listed above)",
                   err=True)
        raise typer.Exit(1)


def _register_stage_commands() -> None:
    # The export command lives with its stage; its module imports only typer, so --help stays instant.
    from lpn_edge.export.cli import export_command

    app.command("export")(friendly_errors(export_command))


_register_stage_commands()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
