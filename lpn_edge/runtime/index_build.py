"""Build a gallery index from a folder of images: streamed, chunked, resumable, shardable.

    images   every image file under `images_dir` (recursively, hidden files skipped), sorted by relative path;
             tile id = the relative path without its extension (e.g. "tiles/r003_c007")
    shard    (K, N): every N-th image of that listing from offset K (the positions of the full listing are kept,
             so `gallery.merge` puts the shards back in order: the result equals the unsharded build)
    chunks   `chunk` images at a time are decoded (a thread pool, ahead of the encoder), encoded in batches of
             `batch` and written to `<out>.partial/chunk-NNNNNN.npy` (atomically), then recorded in
             `<out>.partial/journal.json` (atomically). Only the current chunk's embeddings and a bounded window of
             decoded images are in memory.
    resume   a run stopped at any point (Ctrl-C, SIGTERM, a crash, power) is continued by the same call: chunks in
             the journal are reused, never re-encoded. The journal records the arguments that shape the result
             (model fingerprint, view, dim, input size, dtype, batch, chunk, shard, the image listing); a call that
             differs is refused unless `force`, which starts over.
    result   `out` is written atomically from the chunks (gallery.write_index) and the work folder removed.

Unreadable images are named in the report and skipped; the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import atomic_write, atomic_write_text
from lpn_edge.runtime.encoder import Encoder
from lpn_edge.runtime.gallery import DTYPES, write_index
from lpn_edge.runtime.preprocessing import IMAGE_EXTENSIONS, is_image_file, load_rgb, resize
from lpn_edge.runtime.tables import read_csv_table

JOURNAL = "journal.json"
JOURNAL_FORMAT = "lpn-edge index build"


@dataclass(frozen=True)
class BuildProgress:
    """Passed to the progress callback after every encoded batch and after every saved chunk."""

    images_done: int  # images of this build handled (encoded, skipped, or in reused chunks)
    images_total: int
    chunks_done: int
    chunks_total: int
    chunk_saved: bool  # True right after a chunk was written to the work folder
    skipped: int  # unreadable images so far


@dataclass
class BuildReport:
    out: Path
    tiles: int
    images: int  # images of this build (the shard's share of the listing)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)
    without_coordinates: int = 0
    chunks: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0  # time inside encoder.embed
    decode_seconds: float = 0.0  # summed over the decode threads
    encoded: int = 0  # images encoded by this call (not counting reused chunks)

    @property
    def ok(self) -> bool:
        """False when some images could not be read (the index holds the others)."""
        return not self.skipped

    @property
    def images_per_s(self) -> float:
        """Images encoded by this call per second of its wall time (decode, encode and writing together)."""
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [f"index        {self.out}",
                 f"tiles        {self.tiles} of {self.images} images"
                 + (f" ({len(self.skipped)} unreadable, skipped)" if self.skipped else ""),
                 f"chunks       {self.chunks}" + (f" ({self.chunks_reused} reused from an earlier run)"
                                                  if self.chunks_reused else ""),
                 f"time         {self.seconds:.1f} s ({self.images_per_s:.1f} images/s; encoder "
                 f"{self.encode_seconds:.1f} s, decoding {self.decode_seconds:.1f} thread-s in parallel)",
                 f"without coordinates  {self.without_coordinates}"]
        lines += [f"unreadable   {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def list_image_files(images_dir: Path) -> list[str]:
    """Relative POSIX paths of the image files under `images_dir`, sorted; hidden files and folders skipped."""
    if not images_dir.is_dir():
        raise LpnEdgeError(f"image folder {images_dir} does not exist" if not images_dir.exists()
                           else f"{images_dir} is not a folder of images")
    found = []
    for root, folders, files in os.walk(images_dir):
        folders[:] = [f for f in folders if not f.startswith(".") and not f.endswith(".partial")]
        for name in files:
            if not name.startswith(".") and is_image_file(name):
                found.append(Path(root, name).relative_to(images_dir).as_posix())
    return sorted(found)


def tile_id(relative: str) -> str:
    return os.path.splitext(relative)[0]


def parse_shard(text: str | Sequence[int] | None) -> tuple[int, int] | None:
    """"K/N" (or (K, N)) -> (K, N) with 0 <= K < N."""
    if text is None:
        return None
    try:
        number, count = (int(p) for p in (text.split("/") if isinstance(text, str) else text))
    except ValueError:
        raise LpnEdgeError(f"--shard must be K/N such as 0/4 (every N-th image from offset K); got {text!r}") from None
    if count < 1 or not 0 <= number < count:
        raise LpnEdgeError(f"--shard {number}/{count}: need N >= 1 and 0 <= K < N")
    return number, count


def read_geo_csv(path: Path) -> dict[str, tuple[float, float]]:
    """id -> (latitude, longitude) from a CSV with columns id, latitude, longitude (others ignored: `lpn-edge synth`
    adds split, view; `index tile` adds row, col, tile_size_m). Empty cells mean unknown (NaN)."""
    table = read_csv_table(path, "geo CSV")
    table.require(("id", "latitude", "longitude"), "a header with id,latitude,longitude")
    coordinates: dict[str, tuple[float, float]] = {}
    for line, row in table.rows:
        key = table.cell(row, "id")
        value = tuple(table.number(line, row, name, blank=math.nan) for name in ("latitude", "longitude"))
        if not key:
            raise table.error(line, "has no id")
        if not (math.isnan(value[0]) or -90 <= value[0] <= 90) or not (math.isnan(value[1]) or
                                                                         -180 <= value[1] <= 360):
            raise table.error(line, f"latitude {value[0]}, longitude {value[1]} is not a WGS84 position in degrees")
        previous = coordinates.setdefault(key, value)
        if previous != value and not all(map(math.isnan, previous + value)):
            raise LpnEdgeError(f"geo CSV {path} gives id {key!r} two positions: {previous} and {value}")
    return coordinates


def lookup_position(coordinates: dict[str, tuple[float, float]], tile: str) -> tuple[float, float]:
    """The row for a tile id: the id itself, else its last path component, else its class folder's name."""
    parts = tile.split("/")
    for key in (tile, parts[-1], parts[-2] if len(parts) > 1 else None):
        if key is not None and key in coordinates:
            return coordinates[key]
    return math.nan, math.nan


def decode_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB at the encoder's input size (EXIF orientation applied; the
    preprocessing's bicubic resize, needed so that images of any size stack into one batch)."""
    image = load_rgb(path)
    height, width = size
    return np.asarray(image, np.uint8) if image.size == (width, height) else resize(image, size)


# ---------------------------------------------------------------------------------------------------------------
# The build


def build_index(encoder: Encoder, images_dir: str | Path, out: str | Path, geo_csv: str | Path | None = None,
                batch: int = 32, shard: tuple[int, int] | str | None = None,
                progress: Callable[[BuildProgress], None] | None = None, *, dtype: str = "float16",
                force: bool = False, chunk: int | None = None, workers: int | None = None,
                decode: Callable[[Path, tuple[int, int]], np.ndarray] = decode_image) -> BuildReport:
    """Embed every image under `images_dir` with `encoder` and write the gallery index `out` (see module doc).

    geo_csv: id,latitude,longitude rows (matched by tile id, file name or class folder); tiles without a row get
    NaN. batch: images per encoder call. chunk: images per saved chunk (default 32 batches). workers: decode
    threads (default: CPU count, at most 8). dtype: "float16" or "float32" storage. Raises LpnEdgeError for bad
    arguments; KeyboardInterrupt passes through (finished chunks are kept for the next call).
    """
    images_dir, out = Path(images_dir), Path(out)
    info = encoder.info
    if dtype not in DTYPES:
        raise LpnEdgeError(f"index dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if batch < 1 or (chunk is not None and chunk < 1):
        raise LpnEdgeError(f"batch and chunk must be at least 1; got batch {batch}, chunk {chunk}")
    chunk = chunk or 32 * batch
    shard = parse_shard(shard)
    if out.suffix != ".lpnidx":
        raise LpnEdgeError(f"--out {out} should end in .lpnidx (a gallery index file)")
    if out.is_dir():
        raise LpnEdgeError(f"--out {out} is a folder; give the path of the .lpnidx file to write")
    listing = list_image_files(images_dir)
    if not listing:
        raise LpnEdgeError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {images_dir}")
    ids = [tile_id(name) for name in listing]
    if len(set(ids)) != len(ids):
        seen: dict[str, str] = {}
        for name, tile in zip(listing, ids):
            if tile in seen:
                raise LpnEdgeError(f"{seen[tile]} and {name} in {images_dir} give the same tile id {tile!r}; "
                                   "rename one")
            seen[tile] = name
    coordinates = read_geo_csv(Path(geo_csv)) if geo_csv is not None else {}  # early: fail before hours of work
    positions = list(range(len(listing)))[shard[0]::shard[1]] if shard else list(range(len(listing)))
    if not positions:
        raise LpnEdgeError(f"shard {shard[0]}/{shard[1]} of {len(listing)} images is empty; use fewer shards")
    listing_hash = hashlib.sha256("\n".join(listing).encode()).hexdigest()[:16]
    signature = {"fingerprint": info.fingerprint, "view": info.view, "dim": int(info.dim),
                 "input_size": [int(v) for v in info.input_size], "dtype": dtype, "batch": batch, "chunk": chunk,
                 "shard": list(shard) if shard else None, "images": len(listing), "listing": listing_hash}
    work = out.with_name(out.name + ".partial")
    journal = _open_journal(work, out, signature, force)
    plan = [positions[i : i + chunk] for i in range(0, len(positions), chunk)]
    storage = np.dtype(DTYPES[dtype])
    done = {int(k): v for k, v in journal["chunks"].items()
            if int(k) < len(plan) and _chunk_ok(work, int(k), v, len(plan[int(k)]), info.dim, storage)}
    journal["chunks"] = {str(k): v for k, v in done.items()}
    reused = len(done)
    report = BuildReport(out=out, tiles=0, images=len(positions), chunks=len(plan), chunks_reused=reused)
    started = time.perf_counter()
    decode_times: list[float] = []

    def handled() -> int:
        return sum(len(plan[k]) for k in done)

    def tell(saved: bool) -> None:
        if progress is not None:
            skipped = sum(len(entry["skipped"]) for entry in done.values())
            progress(BuildProgress(handled(), len(positions), len(done), len(plan), saved, skipped))

    tell(False)
    todo = [k for k in range(len(plan)) if k not in done]
    size = tuple(int(v) for v in info.input_size)

    def load(position: int) -> tuple[np.ndarray | None, str]:
        begin = time.perf_counter()
        try:
            return decode(images_dir / listing[position], size), ""
        except LpnEdgeError as error:
            return None, getattr(error, "reason", None) or str(error)
        except Exception as error:  # noqa: BLE001 - a decoder may fail in its own way; the file is skipped
            return None, f"{type(error).__name__}: {error}"
        finally:
            decode_times.append(time.perf_counter() - begin)

    pool = ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1), thread_name_prefix="decode")
    try:
        stream = _ordered(pool, load, (p for k in todo for p in plan[k]), lookahead=2 * batch + 8)
        for number in todo:
            rows: list[np.ndarray] = []
            skipped: list[list[Any]] = []  # [position, relative path, why]
            members = plan[number]
            for start in range(0, len(members), batch):
                images = []
                for position in members[start : start + batch]:
                    image, why = next(stream)
                    if image is None:
                        skipped.append([position, listing[position], why])
                    else:
                        images.append(image)
                if images:
                    rows.append(_embed(encoder, np.stack(images), info.dim, report))
                    report.encoded += len(images)
                if progress is not None:
                    progress(BuildProgress(handled() + start + len(members[start : start + batch]), len(positions),
                                           len(done), len(plan), False,
                                           sum(len(e["skipped"]) for e in done.values()) + len(skipped)))
            embeddings = np.concatenate(rows) if rows else np.zeros((0, info.dim), np.float32)
            stored = embeddings.astype(storage)
            path = work / _chunk_name(number)
            atomic_write(path, lambda tmp, stored=stored: _save_npy(tmp, stored))
            done[number] = {"rows": len(stored), "skipped": skipped}
            journal["chunks"] = {str(k): done[k] for k in sorted(done)}
            atomic_write_text(work / JOURNAL, json.dumps(journal, indent=1, sort_keys=True) + "\n")
            tell(True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    report.decode_seconds = sum(decode_times)
    _assemble(work, out, plan, done, listing, signature, coordinates, info, dtype, report)
    report.seconds = time.perf_counter() - started
    shutil.rmtree(work, ignore_errors=True)
    return report


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append .npy to the temporary name
        np.save(handle, array, allow_pickle=False)


def _chunk_name(number: int) -> str:
    return f"chunk-{number:06d}.npy"


def _chunk_ok(work: Path, number: int, entry: dict[str, Any], members: int, dim: int, storage: np.dtype) -> bool:
    """A chunk recorded in the journal whose file is there and complete (else it is encoded again)."""
    try:
        array = np.load(work / _chunk_name(number), mmap_mode="r", allow_pickle=False)
        return array.shape == (entry["rows"], dim) and array.dtype == storage and \
            entry["rows"] + len(entry["skipped"]) == members
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _open_journal(work: Path, out: Path, signature: dict[str, Any], force: bool) -> dict[str, Any]:
    path = work / JOURNAL
    fresh = {"format": JOURNAL_FORMAT, "version": 1, "signature": signature, "chunks": {}}
    if path.is_file() and not force:
        try:
            journal = json.loads(path.read_text())
            recorded = journal["signature"]
            journal["chunks"]  # noqa: B018 - KeyError for a damaged journal
        except (OSError, ValueError, KeyError, TypeError):
            raise LpnEdgeError(f"{path} is damaged; pass --force (force=True) to start the build over") from None
        if recorded != signature:
            differs = ", ".join(f"{key} {recorded.get(key)} instead of {value}" for key, value in signature.items()
                                if recorded.get(key) != value)
            raise LpnEdgeError(f"{work} holds an unfinished build with other arguments ({differs}); rerun with "
                               "the same model and arguments to resume it, or pass --force to start over")
        if out.exists():
            raise LpnEdgeError(f"{out} exists beside an unfinished build in {work}; pass --force to rebuild")
        return journal
    if out.exists() and not force:
        raise LpnEdgeError(f"{out} exists; pass --force to replace it")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    atomic_write_text(path, json.dumps(fresh, indent=1, sort_keys=True) + "\n")
    return fresh


def _ordered(pool: ThreadPoolExecutor, load: Callable[[int], Any], positions: Iterator[int],
             lookahead: int) -> Iterator[Any]:
    """Results of load(position) in order, with up to `lookahead` decodes running ahead in the pool."""
    window: deque = deque()
    for position in positions:
        window.append(pool.submit(load, position))
        if len(window) > lookahead:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


def _embed(encoder: Encoder, images: np.ndarray, dim: int, report: BuildReport) -> np.ndarray:
    begin = time.perf_counter()
    embeddings = np.asarray(encoder.embed(images), dtype=np.float32)
    report.encode_seconds += time.perf_counter() - begin
    if embeddings.shape != (len(images), dim):
        raise LpnEdgeError(f"the encoder returned embeddings of shape {embeddings.shape} for {len(images)} images; "
                           f"expected ({len(images)}, {dim}) (encoder.info.dim)")
    if not np.isfinite(embeddings).all():
        raise LpnEdgeError("the encoder returned non-finite embeddings; check the model artifact")
    return embeddings


def _assemble(work: Path, out: Path, plan: list[list[int]], done: dict[int, dict[str, Any]], listing: list[str],
              signature: dict[str, Any], coordinates: dict[str, tuple[float, float]], info: Any, dtype: str,
              report: BuildReport) -> None:
    skipped = [entry for number in range(len(plan)) for entry in done[number]["skipped"]]
    unreadable = {position for position, _, _ in skipped}
    kept = [position for members in plan for position in members if position not in unreadable]
    report.skipped = [(name, why) for _, name, why in skipped]
    if not kept:
        raise LpnEdgeError(f"none of the {report.images} images could be read; no index written "
                           f"(first: {report.skipped[0][0]}: {report.skipped[0][1]})")
    ids = [tile_id(listing[p]) for p in kept]
    positions = np.array([lookup_position(coordinates, tile) for tile in ids], np.float64).reshape(len(ids), 2)
    report.tiles = len(ids)
    report.without_coordinates = int((~np.isfinite(positions).all(1)).sum())

    def chunks() -> Iterator[np.ndarray]:
        for number in range(len(plan)):
            yield np.load(work / _chunk_name(number), mmap_mode="r", allow_pickle=False)

    source = {"images": signature["images"], "listing": signature["listing"], "shard": signature["shard"],
              "skipped": sorted(name for name, _ in report.skipped)}
    write_index(out, chunks(), ids, fingerprint=info.fingerprint, view=info.view, dtype=dtype,
                latitude=positions[:, 0], longitude=positions[:, 1], positions=kept,
                input_size=signature["input_size"], source=source)
