"""The gallery index file (`.lpnidx`): embeddings, tile ids and positions of a satellite gallery, memory-mapped.

One file, no pickle, readable with numpy alone:

    offset 0    8 bytes   magic b"\\x89LPNIDX\\n"
    offset 8    8 bytes   H, the header length (little-endian uint64)
    offset 16   H bytes   header: UTF-8 JSON (sorted keys), padded with spaces so that the data starts 64-aligned
    offset D=16+H         data: the sections below, each at a 64-aligned offset (relative to D), zero padding

    sections   embeddings  (count, dim) <f2 or <f4   unit-norm rows of the embedding model
               latitude    (count,) <f8             WGS84 degrees, NaN when unknown
               longitude   (count,) <f8
               positions   (count,) <u8             index of each tile in the source image listing (build order)
               id_offsets  (count + 1,) <u8         tile id i is id_bytes[id_offsets[i]:id_offsets[i + 1]] (UTF-8)
               id_bytes    (n,) u1

The header also holds format/version, count, dim, dtype, view, the model fingerprint (the source checkpoint's),
the input size, where the tiles came from (`source`: listing size and hash, shard K/N, skipped images), the data
size and `checksum`: sha256 over the header (with the checksum's own 64 hex digits read as zeros) and the data.
Opening checks magic, version, sizes and (by default) the checksum before any array is handed out: a truncated or
corrupted file is refused with one LpnEdgeError naming it. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import atomic_write
from lpn_edge.geo.georef import haversine_m

MAGIC = b"\x89LPNIDX\n"
FORMAT = "lpn-edge gallery index"
VERSION = 1
ALIGN = 64
SUFFIX = ".lpnidx"
_PLACEHOLDER = "0" * 64
_MAX_HEADER = 64 << 20
_HASH_BLOCK = 16 << 20
DTYPES = {"float16": "<f2", "float32": "<f4"}
_SECTIONS = ("embeddings", "latitude", "longitude", "positions", "id_offsets", "id_bytes")


def _align(value: int) -> int:
    return -(-value // ALIGN) * ALIGN


def _encode_ids(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [str(tile_id).encode("utf-8") for tile_id in ids]
    offsets = np.zeros(len(encoded) + 1, "<u8")
    offsets[1:] = np.cumsum([len(e) for e in encoded], dtype=np.uint64) if encoded else []
    return offsets, np.frombuffer(b"".join(encoded), np.uint8)


def _column(values: Any, count: int, name: str) -> np.ndarray:
    if values is None:
        return np.full(count, np.nan, "<f8")
    array = np.asarray(values, dtype="<f8")
    if array.shape != (count,):
        raise LpnEdgeError(f"{name} has shape {array.shape}; expected ({count},), one value per tile")
    return array


def write_index(path: str | Path, embeddings: np.ndarray | Iterable[np.ndarray], ids: Sequence[str], *,
                fingerprint: str, view: str, dtype: str = "float16", latitude: Any = None, longitude: Any = None,
                positions: Any = None, input_size: Sequence[int] | None = None,
                source: dict[str, Any] | None = None) -> Path:
    """Write a gallery index atomically and return its path.

    embeddings: a (count, dim) array, or an iterable of (rows, dim) chunks in order (streamed: a gallery larger
    than memory can be written from memory-mapped chunk files). ids: one unique tile id per row. latitude/longitude:
    degrees (NaN = unknown; default all NaN). positions: index of each tile in the source listing (default 0..n-1).
    dtype: "float16" or "float32" storage of the embeddings. source: JSON-serialisable provenance (see module doc).
    """
    if dtype not in DTYPES:
        raise LpnEdgeError(f"index dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    ids = [str(tile_id) for tile_id in ids]
    count = len(ids)
    if len(set(ids)) != count:
        seen: set[str] = set()
        duplicate = next(tile_id for tile_id in ids if tile_id in seen or seen.add(tile_id))
        raise LpnEdgeError(f"tile id {duplicate!r} appears more than once; every tile needs its own id")
    chunks = iter([embeddings] if isinstance(embeddings, np.ndarray) else embeddings)
    first = next(chunks, None)
    if first is None or np.ndim(first) != 2:
        raise LpnEdgeError("embeddings must be a (count, dim) array or (rows, dim) chunks; got none or another shape")
    dim = int(np.shape(first)[1])
    if dim < 1:
        raise LpnEdgeError("embeddings have dimension 0")
    columns = {"latitude": _column(latitude, count, "latitude"), "longitude": _column(longitude, count, "longitude"),
               "positions": (np.arange(count, dtype="<u8") if positions is None
                             else np.asarray(positions).astype("<u8"))}
    if columns["positions"].shape != (count,):
        raise LpnEdgeError(f"positions has shape {columns['positions'].shape}; expected ({count},)")
    columns["id_offsets"], columns["id_bytes"] = _encode_ids(ids)
    storage = np.dtype(DTYPES[dtype])
    shapes = {"embeddings": ((count, dim), storage.str)}
    shapes.update({name: (array.shape, array.dtype.str) for name, array in columns.items()})
    sections, offset = {}, 0
    for name in _SECTIONS:
        shape, code = shapes[name]
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(code).itemsize
        sections[name] = {"offset": offset, "shape": list(shape), "dtype": code, "nbytes": nbytes}
        offset = _align(offset + nbytes)
    header = {"format": FORMAT, "version": VERSION, "count": count, "dim": dim, "dtype": dtype, "view": str(view),
              "fingerprint": str(fingerprint), "input_size": list(input_size) if input_size else None,
              "source": source, "sections": sections, "data_bytes": offset, "checksum": _PLACEHOLDER}
    text = json.dumps(header, sort_keys=True, allow_nan=False)
    head = (text + " " * (_align(16 + len(text.encode())) - 16 - len(text.encode()))).encode()

    def write(tmp: Path) -> None:
        digest = hashlib.sha256(head)
        with open(tmp, "wb") as handle:
            handle.write(MAGIC + np.uint64(len(head)).astype("<u8").tobytes() + head)

            def put(data: bytes | memoryview) -> None:
                digest.update(data)
                handle.write(data)

            def pad(nbytes: int) -> None:
                if _align(nbytes) > nbytes:
                    put(bytes(_align(nbytes) - nbytes))

            rows = 0
            for chunk in _chain(first, chunks):
                chunk = np.asarray(chunk)
                if chunk.ndim != 2 or chunk.shape[1] != dim:
                    raise LpnEdgeError(f"embedding chunk of shape {chunk.shape} does not fit dimension {dim}")
                with np.errstate(over="ignore"):
                    stored = np.ascontiguousarray(chunk, dtype=storage)
                if not np.isfinite(stored).all():
                    raise LpnEdgeError(f"embeddings {rows}..{rows + len(chunk) - 1} hold values that are not finite "
                                       f"in {dtype}; expected unit-norm rows")
                rows += len(chunk)
                if rows > count:
                    break
                if stored.size:
                    put(stored.reshape(-1).view(np.uint8).data)
            if rows != count:
                raise LpnEdgeError(f"got {rows} embedding rows for {count} tile ids; expected one row per id")
            pad(sections["embeddings"]["nbytes"])
            for name in _SECTIONS[1:]:
                put(columns[name].tobytes())
                pad(sections[name]["nbytes"])
        final = json.dumps({**header, "checksum": digest.hexdigest()}, sort_keys=True, allow_nan=False).encode()
        with open(tmp, "r+b") as handle:  # the same length: 64 hex digits replace 64 zeros
            handle.seek(16)
            handle.write(final)

    return atomic_write(path, write)


def _chain(first: np.ndarray, rest: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    yield first
    yield from rest


class GalleryIndex:
    """A gallery index opened read-only: arrays are views of one memory map of the file (nothing is copied).

    Attributes: path, header (dict), count, dim, dtype ("float16"/"float32"), view, fingerprint, input_size,
    source, embeddings (count, dim), latitude, longitude, positions (count,); `ids` (list of str, decoded on first
    use) and `tile_id(i)`.
    """

    def __init__(self, path: Path, header: dict[str, Any], buffer: mmap.mmap, data_start: int) -> None:
        self.path = path
        self.header = header
        self._mmap = buffer
        self.count = int(header["count"])
        self.dim = int(header["dim"])
        self.dtype = str(header["dtype"])
        self.view = str(header["view"])
        self.fingerprint = str(header["fingerprint"])
        self.input_size = tuple(header["input_size"]) if header.get("input_size") else None
        self.source = header.get("source")
        arrays = {}
        for name, section in header["sections"].items():
            shape = tuple(section["shape"])
            # an ndarray over the map itself: `.base` is the mmap, nothing is read until a row is used
            arrays[name] = np.ndarray(shape, dtype=section["dtype"], buffer=buffer,
                                      offset=data_start + section["offset"])
        self.embeddings: np.ndarray = arrays["embeddings"]
        self.latitude: np.ndarray = arrays["latitude"]
        self.longitude: np.ndarray = arrays["longitude"]
        self.positions: np.ndarray = arrays["positions"]
        self._id_offsets = arrays["id_offsets"]
        self._id_bytes = arrays["id_bytes"]
        self._ids: list[str] | None = None

    @classmethod
    def open(cls, path: str | Path, expect_fingerprint: str | None = None, expect_view: str | None = None,
             expect_dim: int | None = None, verify: bool = True) -> GalleryIndex:
        """Open and check an index (see the module doc). `expect_*`: what the caller's model produces; a gallery of
        another model, view or dimension is refused with one line naming both fingerprints. `verify=False` skips
        the checksum (sizes and structure are always checked)."""
        path = Path(path)
        if not path.is_file():
            raise LpnEdgeError(f"gallery index {path} does not exist" if not path.exists()
                               else f"gallery index {path} is not a file")
        size = path.stat().st_size
        with open(path, "rb") as handle:
            lead = handle.read(16)
            if len(lead) < 16 or lead[:8] != MAGIC:
                raise LpnEdgeError(f"{path} is not an lpn-edge gallery index (it does not start with the LPNIDX "
                                   f"magic{'; the file is empty or cut short' if len(lead) < 16 else ''})")
            head_len = int(np.frombuffer(lead[8:], "<u8")[0])
            if head_len > _MAX_HEADER or 16 + head_len > size:
                raise LpnEdgeError(f"gallery index {path} is truncated or corrupted: its header claims {head_len} "
                                   f"bytes, the file has {size}")
            head = handle.read(head_len)
            header = _parse_header(path, head)
            expected = 16 + head_len + header["data_bytes"]
            if size != expected:
                what = "truncated" if size < expected else "corrupted (extra bytes after the data)"
                raise LpnEdgeError(f"gallery index {path} is {what}: {size} bytes, expected {expected}; "
                                   "rebuild it or copy it again")
            buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            if verify:
                actual = _digest(buffer, head)
                if actual != header["checksum"]:
                    raise LpnEdgeError(f"gallery index {path} is corrupted: checksum sha256 {actual[:16]}... does "
                                       f"not match the recorded {header['checksum'][:16]}...; rebuild it or copy "
                                       "it again")
            index = cls(path, header, buffer, 16 + head_len)
            index._check_ids()
            index.expect(expect_fingerprint, expect_view, expect_dim)
        except BaseException:
            buffer.close()
            raise
        return index

    def expect(self, fingerprint: str | None = None, view: str | None = None, dim: int | None = None) -> None:
        """Refuse (one line, both fingerprints) a gallery built by another model, of another view or dimension."""
        wrong = [(name, got, want) for name, got, want in (("model", self.fingerprint, fingerprint),
                                                           ("view", self.view, view), ("dimension", self.dim, dim))
                 if want is not None and str(got) != str(want)]
        if wrong:
            differs = ", ".join(f"{name} {got} instead of {want}" for name, got, want in wrong)
            raise LpnEdgeError(f"gallery index {self.path} was built by model {self.fingerprint} (view {self.view}, "
                               f"dim {self.dim}) but the query model is {fingerprint or 'unknown'} "
                               f"(view {view or 'any'}, dim {dim or 'any'}): {differs}; rebuild the index with "
                               "this model (lpn-edge index build)")

    def _check_ids(self) -> None:
        offsets = self._id_offsets
        if len(offsets) != self.count + 1 or offsets[0] != 0 or int(offsets[-1]) != len(self._id_bytes) or (
                len(offsets) > 1 and (np.diff(offsets.astype(np.int64)) < 0).any()):
            raise LpnEdgeError(f"gallery index {self.path} is corrupted: its tile id table is inconsistent")

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            blob = self._id_bytes.tobytes()
            bounds = self._id_offsets.tolist()
            try:
                self._ids = [blob[bounds[i]:bounds[i + 1]].decode("utf-8") for i in range(self.count)]
            except UnicodeDecodeError:
                raise LpnEdgeError(f"gallery index {self.path} is corrupted: a tile id is not UTF-8") from None
        return self._ids

    def tile_id(self, row: int) -> str:
        if self._ids is not None:
            return self._ids[row]
        start, end = int(self._id_offsets[row]), int(self._id_offsets[row + 1])
        return self._id_bytes[start:end].tobytes().decode("utf-8")

    @property
    def size_bytes(self) -> int:
        return len(self._mmap)

    def close(self) -> None:
        """Release the memory map (arrays taken from this index must not be used afterwards)."""
        for name in ("embeddings", "latitude", "longitude", "positions", "_id_offsets", "_id_bytes"):
            setattr(self, name, None)
        with contextlib.suppress(BufferError):  # an array view is still alive elsewhere: the map closes when it goes
            self._mmap.close()

    def __enter__(self) -> GalleryIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GalleryIndex({str(self.path)!r}, count={self.count}, dim={self.dim}, dtype={self.dtype}, "
                f"view={self.view!r}, fingerprint={self.fingerprint!r})")


def _parse_header(path: Path, head: bytes) -> dict[str, Any]:
    bad = f"gallery index {path} is corrupted: "
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LpnEdgeError(bad + "its header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise LpnEdgeError(bad + f"its header does not say format {FORMAT!r}")
    if not isinstance(header.get("version"), int) or header["version"] > VERSION:
        raise LpnEdgeError(f"gallery index {path} has format version {header.get('version')}; this lpn-edge reads "
                           f"version {VERSION} (upgrade lpn-edge)")
    try:
        count, dim, data_bytes = int(header["count"]), int(header["dim"]), int(header["data_bytes"])
        checksum, sections = str(header["checksum"]), header["sections"]
        str(header["fingerprint"]), str(header["view"])
        if header["dtype"] not in DTYPES or count < 0 or dim < 1 or len(checksum) != 64:
            raise ValueError
        wanted = {"embeddings": ([count, dim], DTYPES[header["dtype"]]), "latitude": ([count], "<f8"),
                  "longitude": ([count], "<f8"), "positions": ([count], "<u8"), "id_offsets": ([count + 1], "<u8")}
        if set(sections) != set(_SECTIONS):
            raise ValueError
        for name, section in sections.items():
            shape, code, offset = section["shape"], section["dtype"], int(section["offset"])
            nbytes = math.prod(shape) * np.dtype(code).itemsize
            if (name in wanted and [list(shape), code] != [*wanted[name]]) or offset % ALIGN or \
                    offset + nbytes > data_bytes or nbytes != section["nbytes"] or len(shape) > 2:
                raise ValueError
        if sections["id_bytes"]["dtype"] != "|u1":
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise LpnEdgeError(bad + "its header is incomplete or inconsistent") from None
    return header


def _digest(buffer: mmap.mmap, head: bytes) -> str:
    """sha256 of the header (checksum digits as zeros) and the data: hashed straight from the map, no copy."""
    text = head.decode("utf-8")
    recorded = json.loads(text)["checksum"]
    digest = hashlib.sha256(text.replace(f'"checksum": "{recorded}"', f'"checksum": "{_PLACEHOLDER}"', 1).encode())
    view = memoryview(buffer)
    try:
        for start in range(16 + len(head), len(buffer), _HASH_BLOCK):
            digest.update(view[start : start + _HASH_BLOCK])
    finally:
        view.release()
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Shards


def _label(index: GalleryIndex) -> str:
    return f"{index.path} (model {index.fingerprint}, view {index.view}, dim {index.dim}, {index.dtype})"


def merge(shards: Sequence[str | Path], out: str | Path, block_rows: int = 8192) -> Path:
    """Join gallery indexes of the same model, view, dimension and dtype into `out` (atomically).

    Shards built with `--shard K/N` from the same image listing are put back in the listing's order (the result
    equals an unsharded build, byte for byte); all N shards must be present, each once. Indexes without shard
    information (e.g. separate areas) are concatenated in the order given. Duplicate tile ids are refused.
    """
    if not shards:
        raise LpnEdgeError("index merge needs at least one shard")
    out = Path(out)
    paths = [Path(p) for p in shards]
    if any(p.resolve() == out.resolve() for p in paths if p.exists()):
        raise LpnEdgeError(f"--out {out} is one of the shards; write the merged index to a new file")
    opened: list[GalleryIndex] = []
    try:
        for path in paths:
            opened.append(GalleryIndex.open(path))
        first = opened[0]
        for other in opened[1:]:
            if (other.fingerprint, other.view, other.dim, other.dtype, other.input_size) != \
                    (first.fingerprint, first.view, first.dim, first.dtype, first.input_size):
                raise LpnEdgeError(f"cannot merge {_label(first)} with {_label(other)}: shards must come from the "
                                   "same model, view, dimension and dtype")
        source, order = _merge_order(opened)
        ids = [tile_id for index in opened for tile_id in index.ids]
        owner: dict[str, Path] = {}
        for index in opened:
            for tile_id in index.ids:
                if tile_id in owner:
                    raise LpnEdgeError(f"tile id {tile_id!r} is in both {owner[tile_id]} and {index.path}; "
                                       "shards must not overlap")
                owner[tile_id] = index.path
        shard_of = np.concatenate([np.full(index.count, number, np.int64) for number, index in enumerate(opened)])
        local = np.concatenate([np.arange(index.count, dtype=np.int64) for index in opened])
        shard_of, local = shard_of[order], local[order]
        column = {name: np.concatenate([getattr(index, name) for index in opened])[order]
                  for name in ("latitude", "longitude", "positions")}
        if source is None:
            column["positions"] = np.arange(len(order), dtype=np.uint64)

        def blocks() -> Iterable[np.ndarray]:
            for start in range(0, len(order), block_rows):
                which, rows = shard_of[start : start + block_rows], local[start : start + block_rows]
                block = np.empty((len(rows), first.dim), first.embeddings.dtype)
                for number, index in enumerate(opened):
                    mask = which == number
                    if mask.any():
                        block[mask] = index.embeddings[rows[mask]]
                yield block

        return write_index(out, blocks() if len(order) else np.zeros((0, first.dim)), [ids[i] for i in order],
                           fingerprint=first.fingerprint, view=first.view, dtype=first.dtype,
                           latitude=column["latitude"], longitude=column["longitude"],
                           positions=column["positions"], input_size=first.input_size, source=source)
    finally:
        for index in opened:
            index.close()


def _merge_order(opened: list[GalleryIndex]) -> tuple[dict[str, Any] | None, np.ndarray]:
    """The merged source record and the order of the concatenated rows."""
    shard_info = [(index.source or {}).get("shard") for index in opened]
    if all(info is None for info in shard_info):
        return None, np.arange(sum(index.count for index in opened))
    if any(info is None for info in shard_info):
        plain = next(index.path for index, info in zip(opened, shard_info) if info is None)
        raise LpnEdgeError(f"{plain} is not a shard (built without --shard) but other inputs are; merge the shards "
                           "of one build together")
    first = opened[0].source
    total = shard_info[0][1]
    seen: dict[int, Path] = {}
    for index, (number, of) in zip(opened, shard_info):
        same = (index.source.get("images"), index.source.get("listing"), of) == \
               (first.get("images"), first.get("listing"), total)
        if not same:
            raise LpnEdgeError(f"{index.path} (shard {number}/{of} of {index.source.get('images')} images) and "
                               f"{opened[0].path} (shard {shard_info[0][0]}/{total} of {first.get('images')} images) "
                               "are shards of different builds (another image folder or shard count)")
        if number in seen:
            raise LpnEdgeError(f"shard {number}/{of} is given twice: {seen[number]} and {index.path}")
        seen[number] = index.path
    missing = sorted(set(range(total)) - set(seen))
    if missing:
        raise LpnEdgeError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{m}/{total}' for m in missing)} "
                           f"missing: give all {total} shards of the build")
    positions = np.concatenate([index.positions for index in opened])
    if len(np.unique(positions)) != len(positions):
        raise LpnEdgeError("the shards hold the same image position twice; they overlap")
    skipped = sorted(name for index in opened for name in index.source.get("skipped", []))
    source = {**first, "shard": None, "skipped": skipped}
    return source, np.argsort(positions, kind="stable")


# ---------------------------------------------------------------------------------------------------------------
# Summary (`lpn-edge index info`)

def describe(index: GalleryIndex) -> str:
    """What `lpn-edge index info` prints: counts, model, layout, size on disk and geographic extent."""
    known = np.isfinite(index.latitude) & np.isfinite(index.longitude)
    source = index.source or {}
    lines = [f"index        {index.path}",
             f"tiles        {index.count}",
             f"model        {index.fingerprint}",
             f"view         {index.view}",
             f"dim          {index.dim}",
             f"dtype        {index.dtype}",
             f"input size   {'x'.join(map(str, index.input_size)) if index.input_size else 'unknown'}",
             f"size         {index.size_bytes / 2**20:.1f} MiB ({index.size_bytes} bytes)"]
    if source.get("shard"):
        lines.append(f"shard        {source['shard'][0]}/{source['shard'][1]} of {source.get('images')} images")
    if source.get("skipped"):
        lines.append(f"skipped      {len(source['skipped'])} unreadable images at build time")
    if known.any():
        lat, lon = index.latitude[known], index.longitude[known]
        south, north, west, east = float(lat.min()), float(lat.max()), float(lon.min()), float(lon.max())
        middle_lat, middle_lon = (south + north) / 2, (west + east) / 2
        lines += [f"latitude     {south:.6f} .. {north:.6f}",
                  f"longitude    {west:.6f} .. {east:.6f}",
                  f"extent       {haversine_m(south, middle_lon, north, middle_lon) / 1000:.3f} km north-south x "
                  f"{haversine_m(middle_lat, west, middle_lat, east) / 1000:.3f} km east-west"]
    else:
        lines.append("extent       unknown (no tile has coordinates)")
    lines.append(f"without coordinates  {int((~known).sum())}")
    return "\n".join(lines)
