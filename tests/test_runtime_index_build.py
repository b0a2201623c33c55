"""`build_index` with a real encoder (a tiny LPN exported to ONNX, opened with the runtime's `open_encoder`): geo.csv,
resume after an interruption (byte-identical, finished chunks not re-encoded), unreadable images, shards + merge, the
CLI."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from export_helpers import make_checkpoint
from PIL import Image
from typer.testing import CliRunner

from lpn_edge.cli import app
from lpn_edge.errors import LpnEdgeError
from lpn_edge.export import ExportOptions, export_model
from lpn_edge.runtime.encoders import open_encoder
from lpn_edge.runtime.gallery import GalleryIndex, merge
from lpn_edge.runtime.index_build import BuildProgress, build_index, read_geo_csv
from lpn_edge.runtime.match_engines import open_matcher

CLASSES = 9  # area/<id>/<id>.png, plus loose/extra-<n>.jpg
ARGS = dict(batch=2, chunk=3, workers=2)


class CountingEncoder:
    """The runtime's ONNX encoder (one thread: polite on a shared 2-core machine), counting calls and images (the
    resume tests check that finished chunks are not encoded again); `fingerprint` poses as another model."""

    def __init__(self, path, fingerprint: str | None = None) -> None:
        import dataclasses

        self.encoder = open_encoder(path, "cpu", threads=1)
        self.info = self.encoder.info if fingerprint is None else \
            dataclasses.replace(self.encoder.info, fingerprint=fingerprint)
        self.calls = self.images = 0

    def embed(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.images += len(images)
        return self.encoder.embed(images)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    ckpt = make_checkpoint(root / "tiny.pt", samples=8)
    result = export_model(ckpt, root / "out", ExportOptions(formats={"onnx"}, view="satellite", flip=False,
                                                            parity_queries=2, parity_gallery=2))
    (path,) = result.paths()
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """11 images of several sizes and formats, and geo.csv as `lpn-edge synth` writes it (split,view,id,...)."""
    root = tmp_path_factory.mktemp("images")
    generator = np.random.default_rng(0)
    rows = ["split,view,id,latitude,longitude"]
    for number in range(CLASSES):
        folder = root / "area" / f"{number:04d}"
        folder.mkdir(parents=True)
        size = 64 if number % 3 else 80  # some need a resize
        pixels = (generator.random((size, size, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{number:04d}.png")
        if number != 4:  # one tile without a position
            rows.append(f"test,gallery_satellite,{number:04d},{47 + number / 1000:.7f},{8 + number / 500:.7f}")
    (root / "loose").mkdir()
    for number in range(2):
        Image.fromarray((generator.random((64, 64, 3)) * 255).astype(np.uint8)).save(
            root / "loose" / f"extra-{number}.jpg"
        )
    rows.append("test,gallery_satellite,extra-1,46.5,7.5")  # matched by the file name
    (root / "notes.txt").write_text("not an image")
    geo = root.parent / f"{root.name}-geo.csv"
    geo.write_text("\n".join(rows) + "\n")
    return root, geo


def test_build_geo_and_self_retrieval(model, images, tmp_path):
    folder, geo = images
    encoder = CountingEncoder(model)
    report = build_index(encoder, folder, tmp_path / "g.lpnidx", geo_csv=geo, **ARGS)
    assert report.ok and report.tiles == report.images == CLASSES + 2 and report.chunks == 4
    assert report.without_coordinates == 2  # area/0004 and loose/extra-0
    assert not (tmp_path / "g.lpnidx.partial").exists()
    with GalleryIndex.open(tmp_path / "g.lpnidx", expect_fingerprint=encoder.info.fingerprint,
                           expect_view="satellite", expect_dim=encoder.info.dim) as index:
        assert index.ids[:2] == ["area/0000/0000", "area/0001/0001"] and index.ids[-1] == "loose/extra-1"
        assert index.latitude[3] == pytest.approx(47.003) and index.longitude[3] == pytest.approx(8.006)
        assert np.isnan(index.latitude[4]) and index.latitude[-1] == 46.5 and np.isnan(index.latitude[-2])
        assert index.dtype == "float16" and index.input_size == (64, 64) and index.view == "satellite"
        # a gallery tile used as its own query comes back first with a score close to 1
        image = np.asarray(Image.open(folder / "area" / "0005" / "0005.png").convert("RGB"))
        query = encoder.embed(image[None])
        indices, scores = open_matcher(index.embeddings, "numpy").search(query, 3)
        assert indices[0, 0] == 5 and scores[0, 0] > 0.999
    with pytest.raises(LpnEdgeError, match="pass --force to replace it"):
        build_index(encoder, folder, tmp_path / "g.lpnidx", **ARGS)
    with pytest.raises(LpnEdgeError) as error:
        GalleryIndex.open(tmp_path / "g.lpnidx", expect_fingerprint="0123456789abcdef")
    assert encoder.info.fingerprint in str(error.value) and "0123456789abcdef" in str(error.value)


def test_interrupted_build_resumes_without_re_encoding_and_gives_the_same_file(model, images, tmp_path):
    folder, geo = images
    reference = build_index(CountingEncoder(model), folder, tmp_path / "ref.lpnidx", geo_csv=geo, **ARGS).out
    out = tmp_path / "g.lpnidx"

    def interrupt(event: BuildProgress) -> None:
        if event.chunk_saved and event.chunks_done == 2:
            raise KeyboardInterrupt

    first = CountingEncoder(model)
    with pytest.raises(KeyboardInterrupt):
        build_index(first, folder, out, geo_csv=geo, progress=interrupt, **ARGS)
    assert not out.exists() and first.images == 6
    assert sorted(p.name for p in (tmp_path / "g.lpnidx.partial").iterdir()) == [
        "chunk-000000.npy", "chunk-000001.npy", "journal.json"]
    # another batch size or model: refused, the unfinished build is kept
    with pytest.raises(LpnEdgeError, match=r"unfinished build with other arguments \(batch 2 instead of 3\)"):
        build_index(CountingEncoder(model), folder, out, geo_csv=geo, batch=3, chunk=3)
    with pytest.raises(LpnEdgeError, match="fingerprint"):
        build_index(CountingEncoder(model, fingerprint="another-model"), folder, out, geo_csv=geo, **ARGS)
    events = []
    second = CountingEncoder(model)
    report = build_index(second, folder, out, geo_csv=geo, progress=events.append, **ARGS)
    assert second.images == CLASSES + 2 - 6 and report.chunks_reused == 2 and report.encoded == 5
    assert events[0] == BuildProgress(6, 11, 2, 4, False, 0) and events[-1] == BuildProgress(11, 11, 4, 4, True, 0)
    assert out.read_bytes() == reference.read_bytes()
    assert not (tmp_path / "g.lpnidx.partial").exists()
    # a chunk file lost or cut short: only that chunk is encoded again
    with pytest.raises(KeyboardInterrupt):
        build_index(CountingEncoder(model), folder, tmp_path / "h.lpnidx", geo_csv=geo, progress=interrupt, **ARGS)
    chunk = tmp_path / "h.lpnidx.partial" / "chunk-000001.npy"
    chunk.write_bytes(chunk.read_bytes()[:-7])
    third = CountingEncoder(model)
    build_index(third, folder, tmp_path / "h.lpnidx", geo_csv=geo, **ARGS)
    assert third.images == CLASSES + 2 - 3
    assert (tmp_path / "h.lpnidx").read_bytes() == reference.read_bytes()


def test_force_starts_over(model, images, tmp_path):
    folder, _geo = images

    def interrupt(event):
        if event.chunk_saved:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(CountingEncoder(model), folder, tmp_path / "g.lpnidx", progress=interrupt, **ARGS)
    encoder = CountingEncoder(model)
    build_index(encoder, folder, tmp_path / "g.lpnidx", batch=4, chunk=8, force=True)
    assert encoder.images == CLASSES + 2


def test_unreadable_images_are_named_and_skipped(model, images, tmp_path):
    folder, geo = images
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in sorted(folder.rglob("*.png"))[:4]:
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "0002b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (broken / "0003b.jpg").write_bytes(b"")
    report = build_index(CountingEncoder(model), broken, tmp_path / "g.lpnidx", geo_csv=geo, **ARGS)
    assert not report.ok and report.tiles == 4 and report.images == 6
    assert [name for name, _ in report.skipped] == ["0002b.png", "0003b.jpg"]
    assert all(why for _, why in report.skipped) and "0003b.jpg" in report.summary()
    with GalleryIndex.open(tmp_path / "g.lpnidx") as index:
        assert index.ids == ["0000", "0001", "0002", "0003"] and index.source["skipped"] == ["0002b.png", "0003b.jpg"]
        assert index.latitude[2] == pytest.approx(47.002)  # matched by the file name
        assert index.positions.tolist() == [0, 1, 2, 4]


def test_shards_merged_equal_the_unsharded_build(model, images, tmp_path):
    folder, geo = images
    whole = build_index(CountingEncoder(model), folder, tmp_path / "all.lpnidx", geo_csv=geo, **ARGS).out
    shards = [build_index(CountingEncoder(model), folder, tmp_path / f"s{k}.lpnidx", geo_csv=geo, shard=f"{k}/3",
                          **ARGS).out for k in range(3)]
    with GalleryIndex.open(shards[1]) as one:
        assert one.count == 4 and one.positions.tolist() == [1, 4, 7, 10] and one.source["shard"] == [1, 3]
    merge(shards[::-1], tmp_path / "merged.lpnidx")
    assert (tmp_path / "merged.lpnidx").read_bytes() == whole.read_bytes()
    with pytest.raises(LpnEdgeError, match="--shard must be K/N"):
        build_index(CountingEncoder(model), folder, tmp_path / "x.lpnidx", shard="1-3", **ARGS)
    with pytest.raises(LpnEdgeError, match="0 <= K < N"):
        build_index(CountingEncoder(model), folder, tmp_path / "x.lpnidx", shard="3/3", **ARGS)


def test_geo_csv_of_index_tile_and_bad_ones(tmp_path):
    tiling = tmp_path / "geo.csv"
    tiling.write_text("id,latitude,longitude,row,col,tile_size_m\nr000_c000,47.1,8.2,0,0,100\nr000_c001,47.1,8.3,0,1,100\n")
    assert read_geo_csv(tiling) == {"r000_c000": (47.1, 8.2), "r000_c001": (47.1, 8.3)}
    (tmp_path / "bad.csv").write_text("name,lat,lon\na,1,2\n")
    with pytest.raises(LpnEdgeError, match="lacks the columns id, latitude, longitude"):
        read_geo_csv(tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text("id,latitude,longitude\na,north,2\n")
    with pytest.raises(LpnEdgeError, match="line 2: latitude must be a number; got 'north'"):
        read_geo_csv(tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text("id,latitude,longitude\na,1,2\na,1,3\n")
    with pytest.raises(LpnEdgeError, match="two positions"):
        read_geo_csv(tmp_path / "bad.csv")


def test_cli_build_info_and_exit_status(model, images, tmp_path, monkeypatch):
    folder, geo = images
    opened = []

    def recording_open_encoder(path, device=None):  # the real one, recording what the CLI asked for
        opened.append((path, device))
        return open_encoder(path, device or "cpu", threads=1)

    monkeypatch.setattr("lpn_edge.runtime.encoders.open_encoder", recording_open_encoder)
    runner = CliRunner()
    out = tmp_path / "g.lpnidx"
    result = runner.invoke(app, ["index", "build", "--model", str(model), "--images", str(folder), "--geo", str(geo),
                                 "--out", str(out), "--batch", "4", "--fp32"])
    assert result.exit_code == 0, result.output
    assert f"tiles        {CLASSES + 2} of {CLASSES + 2} images" in result.output and opened == [(model, None)]
    info = runner.invoke(app, ["index", "info", str(out)])
    assert info.exit_code == 0 and "dtype        float32" in info.output and "without coordinates  2" in info.output
    assert "view         satellite" in info.output and "input size   64x64" in info.output
    again = runner.invoke(app, ["index", "build", "--model", str(model), "--images", str(folder), "--out", str(out)])
    assert again.exit_code == 2 and "pass --force" in again.output
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(next(folder.rglob("*.png")).read_bytes())
    (tmp_path / "broken" / "b.png").write_bytes(b"nope")
    broken = runner.invoke(app, ["index", "build", "--model", str(model), "--images", str(tmp_path / "broken"),
                                 "--out", str(tmp_path / "b.lpnidx"), "--device", "cpu"])
    assert broken.exit_code == 1 and "unreadable   b.png" in broken.output and (tmp_path / "b.lpnidx").is_file()
    assert opened[-1] == (model, "cpu")
    bad_shard = runner.invoke(app, ["index", "build", "--model", str(model), "--images", str(folder), "--out",
                                    str(tmp_path / "c.lpnidx"), "--shard", "2/2"])
    assert bad_shard.exit_code == 2 and "0 <= K < N" in bad_shard.output


SIGTERM_SCRIPT = """
import sys, time
import lpn_edge.runtime.encoders as encoders

real_open = encoders.open_encoder

def slow_open(path, device="cpu"):  # the real encoder, slowed down so that SIGTERM lands mid-build
    encoder = real_open(path, device, threads=1)
    embed = encoder.embed

    def slow_embed(images):
        time.sleep(0.3)
        return embed(images)

    encoder.embed = slow_embed
    return encoder

encoders.open_encoder = slow_open
from lpn_edge.cli import app
app(sys.argv[1:])
"""


def test_cli_build_stopped_by_sigterm_resumes(model, images, tmp_path):
    import signal
    import subprocess
    import time

    folder, geo = images
    reference = build_index(CountingEncoder(model), folder, tmp_path / "ref.lpnidx", geo_csv=geo, **ARGS).out
    out = tmp_path / "g.lpnidx"
    script = SIGTERM_SCRIPT
    command = [sys.executable, "-c", script, "index", "build", "--model", str(model), "--images", str(folder),
               "--geo", str(geo), "--out", str(out), "--batch", "2", "--chunk", "3", "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = tmp_path / "g.lpnidx.partial" / "journal.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.is_file() and '"0"' in journal.read_text():
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr and not out.exists()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode == 0, finished.stderr
    assert "reused from an earlier run" in finished.stdout
    assert out.read_bytes() == reference.read_bytes()
