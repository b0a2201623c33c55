"""The gallery index file (.lpnidx): round trip, memory map, refusals (truncated, corrupted, another model), merge,
and `lpn-edge index info` / `index merge`."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
from typer.testing import CliRunner

from lpn_edge.cli import app
from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.gallery import GalleryIndex, merge, write_index


def unit_rows(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def small_index(path, count=7, dim=16, dtype="float16", fingerprint="f00d", view="satellite", **extra):
    embeddings = unit_rows(count, dim)
    ids = [f"tiles/t{i:03d}" for i in range(count)]
    latitude = np.linspace(47.0, 47.01, count)
    latitude[1] = np.nan
    longitude = np.linspace(8.0, 8.02, count)
    longitude[1] = np.nan
    write_index(path, embeddings, ids, fingerprint=fingerprint, view=view, dtype=dtype, latitude=latitude,
                longitude=longitude, input_size=(64, 64), **extra)
    return embeddings, ids, latitude, longitude


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_is_memory_mapped(tmp_path, dtype):
    path = tmp_path / "g.lpnidx"
    embeddings, ids, latitude, longitude = small_index(path, dtype=dtype)
    with GalleryIndex.open(path, expect_fingerprint="f00d", expect_view="satellite", expect_dim=16) as index:
        assert (index.count, index.dim, index.dtype, index.view, index.fingerprint) == (7, 16, dtype, "satellite",
                                                                                        "f00d")
        assert index.embeddings.dtype == np.dtype(dtype) and index.embeddings.shape == (7, 16)
        np.testing.assert_array_equal(index.embeddings, embeddings.astype(dtype))
        assert isinstance(index.embeddings.base, mmap.mmap) and not index.embeddings.flags.writeable
        assert index.ids == ids and index.tile_id(3) == ids[3]
        np.testing.assert_array_equal(index.latitude, latitude)
        np.testing.assert_array_equal(index.longitude, longitude)
        np.testing.assert_array_equal(index.positions, np.arange(7))
        assert index.input_size == (64, 64) and index.size_bytes == path.stat().st_size
    assert path.read_bytes()[:8] == b"\x89LPNIDX\n" and b"pickle" not in path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["g.lpnidx"]  # no temporary file left behind


def test_chunked_write_equals_one_array(tmp_path):
    embeddings = unit_rows(10, 8)
    ids = [str(i) for i in range(10)]
    write_index(tmp_path / "a.lpnidx", embeddings, ids, fingerprint="x", view="satellite")
    write_index(tmp_path / "b.lpnidx", iter([embeddings[:3], embeddings[3:4], embeddings[4:]]), ids,
                fingerprint="x", view="satellite")
    assert (tmp_path / "a.lpnidx").read_bytes() == (tmp_path / "b.lpnidx").read_bytes()
    with pytest.raises(LpnEdgeError, match="9 embedding rows for 10 tile ids"):
        write_index(tmp_path / "c.lpnidx", iter([embeddings[:9]]), ids, fingerprint="x", view="satellite")
    with pytest.raises(LpnEdgeError, match="'3' appears more than once"):
        write_index(tmp_path / "c.lpnidx", embeddings, ids[:9] + ["3"], fingerprint="x", view="satellite")
    assert not (tmp_path / "c.lpnidx").exists() and len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("keep", [0, 12, 100, -1])
def test_truncated_index_is_refused(tmp_path, keep):
    path = tmp_path / "g.lpnidx"
    small_index(path)
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(LpnEdgeError) as error:
        GalleryIndex.open(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert any(word in str(error.value) for word in ("truncated", "cut short", "not an lpn-edge"))


def test_one_flipped_byte_is_refused_anywhere(tmp_path):
    path = tmp_path / "g.lpnidx"
    small_index(path)
    data = bytearray(path.read_bytes())
    head = int.from_bytes(data[8:16], "little")
    # in the embeddings, the latitudes, the ids, the header's fingerprint and the header's checksum
    index = GalleryIndex.open(path)
    targets = [16 + head + 5, 16 + head + index.header["sections"]["latitude"]["offset"] + 3,
               16 + head + index.header["sections"]["id_bytes"]["offset"] + 1,
               data.index(b'"fingerprint": "f00d"') + 17, data.index(b'"checksum": "') + 20]
    index.close()
    for offset in targets:
        corrupted = bytearray(data)
        corrupted[offset] ^= 0x01
        path.write_bytes(bytes(corrupted))
        with pytest.raises(LpnEdgeError, match="is corrupted") as error:
            GalleryIndex.open(path)
        assert str(path) in str(error.value)
    path.write_bytes(bytes(data))
    GalleryIndex.open(path).close()
    # verify=False skips only the checksum
    corrupted = bytearray(data)
    corrupted[targets[0]] ^= 0x01
    path.write_bytes(bytes(corrupted))
    GalleryIndex.open(path, verify=False).close()


@pytest.mark.parametrize("expect", [dict(expect_fingerprint="beef"), dict(expect_view="drone"),
                                    dict(expect_dim=2048, expect_fingerprint="f00d")])
def test_index_of_another_model_view_or_dim_is_refused_naming_both_fingerprints(tmp_path, expect):
    path = tmp_path / "g.lpnidx"
    small_index(path)
    with pytest.raises(LpnEdgeError) as error:
        GalleryIndex.open(path, **expect)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "f00d" in message
    assert expect.get("expect_fingerprint", "unknown") in message


def test_not_an_index_and_newer_version(tmp_path):
    (tmp_path / "x.lpnidx").write_text("hello world, this is not an index at all")
    with pytest.raises(LpnEdgeError, match="not an lpn-edge gallery index"):
        GalleryIndex.open(tmp_path / "x.lpnidx")
    with pytest.raises(LpnEdgeError, match="does not exist"):
        GalleryIndex.open(tmp_path / "absent.lpnidx")
    path = tmp_path / "g.lpnidx"
    small_index(path)
    data = path.read_bytes().replace(b'"version": 1', b'"version": 9')
    path.write_bytes(data)
    with pytest.raises(LpnEdgeError, match="format version 9; this lpn-edge reads version 1"):
        GalleryIndex.open(path)


def _shard(path, rows, positions, shard, total=6, fingerprint="f00d", dim=8, view="satellite", dtype="float16"):
    embeddings = unit_rows(total, dim)[rows]
    write_index(path, embeddings, [f"id{r}" for r in rows], fingerprint=fingerprint, view=view, dtype=dtype,
                latitude=np.asarray(rows, float), longitude=np.asarray(rows, float) * 2, positions=positions,
                input_size=(64, 64), source={"images": total, "listing": "abc", "shard": shard, "skipped": []})


def test_merge_puts_shards_back_in_listing_order(tmp_path):
    _shard(tmp_path / "all.lpnidx", [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5], None)
    _shard(tmp_path / "s0.lpnidx", [0, 2, 4], [0, 2, 4], [0, 2])
    _shard(tmp_path / "s1.lpnidx", [1, 3, 5], [1, 3, 5], [1, 2])
    merge([tmp_path / "s1.lpnidx", tmp_path / "s0.lpnidx"], tmp_path / "merged.lpnidx", block_rows=4)
    assert (tmp_path / "merged.lpnidx").read_bytes() == (tmp_path / "all.lpnidx").read_bytes()


def test_merge_refusals(tmp_path):
    _shard(tmp_path / "s0.lpnidx", [0, 2, 4], [0, 2, 4], [0, 2])
    _shard(tmp_path / "s1.lpnidx", [1, 3, 5], [1, 3, 5], [1, 2])
    _shard(tmp_path / "other.lpnidx", [1, 3, 5], [1, 3, 5], [1, 2], fingerprint="beef")
    _shard(tmp_path / "wide.lpnidx", [1, 3, 5], [1, 3, 5], [1, 2], dim=16)
    _shard(tmp_path / "fp32.lpnidx", [1, 3, 5], [1, 3, 5], [1, 2], dtype="float32")
    for odd in ("other", "wide", "fp32"):
        with pytest.raises(LpnEdgeError, match="same model, view, dimension and dtype") as error:
            merge([tmp_path / "s0.lpnidx", tmp_path / f"{odd}.lpnidx"], tmp_path / "m.lpnidx")
        assert "s0.lpnidx" in str(error.value) and f"{odd}.lpnidx" in str(error.value)
    with pytest.raises(LpnEdgeError, match="shard 1/2 missing"):
        merge([tmp_path / "s0.lpnidx"], tmp_path / "m.lpnidx")
    with pytest.raises(LpnEdgeError, match="given twice"):
        merge([tmp_path / "s0.lpnidx", tmp_path / "s0.lpnidx", tmp_path / "s1.lpnidx"], tmp_path / "m.lpnidx")
    with pytest.raises(LpnEdgeError, match="is one of the shards"):
        merge([tmp_path / "s0.lpnidx", tmp_path / "s1.lpnidx"], tmp_path / "s0.lpnidx")
    # two whole indexes (no shard information) are concatenated, but never with a duplicate tile id
    _shard(tmp_path / "a.lpnidx", [0, 1], [0, 1], None)
    _shard(tmp_path / "b.lpnidx", [2, 1], [0, 1], None)
    with pytest.raises(LpnEdgeError, match="'id1' is in both"):
        merge([tmp_path / "a.lpnidx", tmp_path / "b.lpnidx"], tmp_path / "m.lpnidx")
    _shard(tmp_path / "b.lpnidx", [3, 2], [0, 1], None)
    merge([tmp_path / "b.lpnidx", tmp_path / "a.lpnidx"], tmp_path / "m.lpnidx")
    with GalleryIndex.open(tmp_path / "m.lpnidx") as merged:
        assert merged.ids == ["id3", "id2", "id0", "id1"] and merged.positions.tolist() == [0, 1, 2, 3]
    assert not (tmp_path / "m.lpnidx.partial").exists()


def test_cli_info_and_merge(tmp_path):
    path = tmp_path / "g.lpnidx"
    small_index(path)
    result = CliRunner().invoke(app, ["index", "info", str(path)])
    assert result.exit_code == 0, result.output
    for text in ("tiles        7", "model        f00d", "view         satellite", "dim          16",
                 "dtype        float16", "without coordinates  1", "latitude     47.000000 .. 47.010000",
                 "longitude    8.000000 .. 8.020000"):
        assert text in result.output, (text, result.output)
    assert "km" in result.output
    _shard(tmp_path / "s0.lpnidx", [0, 2, 4], [0, 2, 4], [0, 2])
    _shard(tmp_path / "s1.lpnidx", [1, 3, 5], [1, 3, 5], [1, 2])
    merged = CliRunner().invoke(app, ["index", "merge", str(tmp_path / "s0.lpnidx"), str(tmp_path / "s1.lpnidx"),
                                      "--out", str(tmp_path / "m.lpnidx")])
    assert merged.exit_code == 0 and "6 tiles" in merged.output, merged.output
    refused = CliRunner().invoke(app, ["index", "merge", str(tmp_path / "s0.lpnidx"), "--out",
                                       str(tmp_path / "m2.lpnidx")])
    assert refused.exit_code == 2 and "error: shard 1/2 missing" in refused.output
    (tmp_path / "bad.lpnidx").write_bytes(path.read_bytes()[:-10])
    bad = CliRunner().invoke(app, ["index", "info", str(tmp_path / "bad.lpnidx")])
    assert bad.exit_code == 2 and "truncated" in bad.output and "Traceback" not in bad.output
