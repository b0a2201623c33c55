"""`Localizer` and `lpn-edge locate` end to end on the synthetic world: a tiny LPN exported to ONNX and run by the
runtime's encoder, the orthophoto of a synthetic flight cut into tiles (`index tile`) and indexed with geo.csv,
the flight's oblique drone frames located. Also the position-estimate rule on hand-made candidates, shards, a
gallery of another model, broken frames, --truth / --track / --plot / --json, and video."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from export_helpers import make_checkpoint
from PIL import Image
from typer.testing import CliRunner

from lpn_edge.cli import LOCATE_HELP, app
from lpn_edge.data.synth.flight import synth_flight
from lpn_edge.errors import LpnEdgeError
from lpn_edge.export import ExportOptions, export_model
from lpn_edge.geo.georef import offset_latlon
from lpn_edge.geo.tiling import tile_orthophoto
from lpn_edge.geo.track import track
from lpn_edge.runtime.encoders import open_encoder
from lpn_edge.runtime.gallery import GalleryIndex, write_index
from lpn_edge.runtime.index_build import build_index
from lpn_edge.runtime.localize import POSITION_RULE, Localizer, estimate_position, tile_spacing_m

STRIDE_M = 50.0


@pytest.fixture(scope="module")
def area(tmp_path_factory):
    """A tiny exported model, a 400 m synthetic area cut into 100 m tiles every 50 m (7 x 7), its gallery index,
    the flight's 6 frames, and a truth table of the tiles themselves (frame = tile id, the tile centre)."""
    root = tmp_path_factory.mktemp("locate")
    checkpoint = make_checkpoint(root / "tiny.pt", samples=8)
    (model,) = export_model(checkpoint, root / "export", ExportOptions(
        formats={"onnx"}, view="satellite", flip=False, parity_queries=2, parity_gallery=2)).paths()
    flight = synth_flight(root / "flight", area=400, seed=1, frames=6, altitude=40, size=64).root
    tiles = tile_orthophoto(flight / "orthophoto.png", root / "tiles", 100, STRIDE_M, size=64).out
    gallery = root / "gallery.lpnidx"
    build_index(open_encoder(model), tiles / "tiles", gallery, geo_csv=tiles / "geo.csv", batch=16)
    truth = root / "tiles-truth.csv"
    with open(tiles / "geo.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    truth.write_text("frame,latitude,longitude\n" + "".join(f"{r['id']},{r['latitude']},{r['longitude']}\n"
                                                             for r in rows))
    return {"root": root, "model": model, "flight": flight, "tiles": tiles / "tiles", "gallery": gallery,
            "truth": truth, "ids": [r["id"] for r in rows]}


class Relabelled:
    """An encoder that claims another checkpoint's fingerprint (the same numbers)."""

    def __init__(self, encoder, fingerprint: str) -> None:
        self.encoder, self.info = encoder, dataclasses.replace(encoder.info, fingerprint=fingerprint)

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.encoder.embed(images)


def tile(area, tile_id: str) -> np.ndarray:
    return np.asarray(Image.open(area["tiles"] / f"{tile_id}.png").convert("RGB"))


def invoke(*args):
    return CliRunner().invoke(app, ["locate", *map(str, args)])


# -- the Python API -----------------------------------------------------------------------------------------------

def test_the_locate_loop_matches_with_faiss_on_one_thread_when_installed(area):
    """One frame at a time: "auto" opens FAISS with one thread (`one_query`), and it answers as numpy does."""
    has_faiss = importlib.util.find_spec("faiss") is not None
    frame = tile(area, "0024")
    with Localizer(area["model"], area["gallery"], top_k=5) as auto, \
            Localizer(area["model"], area["gallery"], top_k=5, engine="numpy") as plain:
        assert auto.engine == ("faiss" if has_faiss else "numpy")  # no CUDA backend in CI
        if has_faiss:
            assert [matcher.threads for matcher in auto.matchers] == [1]
        assert auto.locate(frame).tiles == plain.locate(frame).tiles


def test_a_tile_used_as_its_own_query_comes_back_first(area):
    with Localizer(area["model"], area["gallery"], top_k=5, engine="numpy") as localizer:
        assert localizer.count == 49 and localizer.spacing_m == pytest.approx(STRIDE_M, rel=1e-3)
        assert localizer.radius_m == pytest.approx(1.5 * STRIDE_M, rel=1e-3)
        buffer = localizer._one
        for tile_id in ("0000", "0024", "0040"):
            location = localizer.locate(tile(area, tile_id))
            assert location.tiles[0] == tile_id and location.scores[0] > 0.999
            assert list(location.scores) == sorted(location.scores, reverse=True) and len(location.tiles) == 5
            assert set(location.timings) == {"decode", "preprocess", "encode", "match"}
            assert location.timings["decode"] == 0 and location.timings["encode"] > 0
            assert np.isfinite(location.estimate).all() and 1 <= location.used <= 5
            assert localizer._one is buffer  # the camera loop's input buffer is reused, not reallocated
        # a file decodes (timed) to the same answer; a batch answers as frame by frame
        from_file = localizer.locate(area["tiles"] / "0024.png")
        assert from_file.tiles[0] == "0024" and from_file.timings["decode"] > 0
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(area["flight"].glob("frames/*.png"))]
        batch = localizer.locate_batch(frames, names=[f"f{i}" for i in range(len(frames))])
        for frame, located in zip(frames, batch):
            single = localizer.locate(frame)
            assert located.tiles == single.tiles and located.estimate == pytest.approx(single.estimate)
            np.testing.assert_allclose(located.scores, single.scores, atol=1e-5)
        assert [b.name for b in batch] == [f"f{i}" for i in range(len(frames))]
        with pytest.raises(LpnEdgeError, match=r"\(H, W, 3\) uint8"):
            localizer.locate(frames[0].astype(np.float32))


def test_shards_are_searched_as_one_index_ties_by_row(area, tmp_path):
    with GalleryIndex.open(area["gallery"]) as whole:
        embeddings, ids = np.array(whole.embeddings), whole.ids
        lat, lon, meta = np.array(whole.latitude), np.array(whole.longitude), dict(
            fingerprint=whole.fingerprint, view=whole.view, input_size=whole.input_size)
    # deliberate ties across the shards: rows 30.. repeat rows 0.. under other ids
    embeddings = np.concatenate([embeddings, embeddings[:10]])
    ids, lat, lon = ids + [f"copy-{i}" for i in range(10)], np.r_[lat, lat[:10]], np.r_[lon, lon[:10]]
    one = write_index(tmp_path / "one.lpnidx", embeddings, ids, latitude=lat, longitude=lon, **meta)
    parts = [write_index(tmp_path / f"part{k}.lpnidx", embeddings[rows], [ids[i] for i in rows], latitude=lat[rows],
                         longitude=lon[rows], **meta) for k, rows in enumerate([range(0, 30), range(30, 59)])]
    encoder = open_encoder(area["model"])
    queries = [tile(area, i) for i in ("0003", "0030", "0045")]
    with Localizer(encoder, one, top_k=8, engine="numpy") as single, \
            Localizer(encoder, parts, top_k=8, engine="numpy") as sharded:
        assert sharded.count == 59
        for query in queries:
            a, b = single.locate(query), sharded.locate(query)
            assert a.tiles == b.tiles and list(a.rows) == list(b.rows)
            # the same tiles in the same order; scores to the last float32 bit only where BLAS sums in the same
            # order, which depends on the shape of the block it is given (one index of 59 rows vs shards of 30 + 29)
            np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-6)
        first = sharded.locate(tile(area, "0003"))
        assert first.tiles[:2] == ["0003", "copy-3"]  # equal scores: the lower row first


def test_a_gallery_of_another_model_or_view_is_refused(area, tmp_path):
    with pytest.raises(LpnEdgeError) as error:
        Localizer(Relabelled(open_encoder(area["model"]), "0123456789abcdef"), area["gallery"])
    with GalleryIndex.open(area["gallery"]) as index:
        assert index.fingerprint in str(error.value) and "0123456789abcdef" in str(error.value)
        ground = write_index(tmp_path / "ground.lpnidx", np.array(index.embeddings), index.ids,
                             fingerprint=index.fingerprint, view="ground")
    with pytest.raises(LpnEdgeError, match="holds ground embeddings"):
        Localizer(open_encoder(area["model"]), ground)
    result = invoke("--model", area["model"], "--index", ground, area["tiles"] / "0000.png")
    assert result.exit_code == 2 and result.output.startswith("error:") and len(result.output.splitlines()) == 1


def test_the_position_estimate_rule_on_hand_made_candidates():
    # a grid of 50 m: the best tile at (0, 0), neighbours at 50 m and 70.7 m, one 100 m away, one far away
    east = np.array([0, 50, 50, 100, 1000, 0], np.float64)
    north = np.array([0, 0, 50, 0, 0, -50], np.float64)
    lat, lon = offset_latlon(47.0, 8.0, east, north)
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.99, -0.2], np.float32)
    # the far tile (1000 m) scores best: it is the anchor, alone within 75 m
    assert estimate_position(lat, lon, scores, 75.0) == (pytest.approx(lat[4]), pytest.approx(lon[4]), 1)
    scores[4] = 0.1
    # anchor = the tile at 100 m east (0.95); within 75 m: itself, (50, 0) at 50 m, (50, 50) at 70.7 m
    got_lat, got_lon, used = estimate_position(lat, lon, scores, 75.0)
    weights = np.array([0.95, 0.8, 0.7])
    want_lat, want_lon = (np.average(lat[[3, 1, 2]], weights=weights), np.average(lon[[3, 1, 2]], weights=weights))
    assert used == 3 and got_lat == pytest.approx(want_lat, abs=1e-9) and got_lon == pytest.approx(want_lon)
    # R = 0: the anchor's centre; a negative score weighs 0; tiles without coordinates are left out
    assert estimate_position(lat, lon, scores, 0.0)[:2] == (pytest.approx(lat[3]), pytest.approx(lon[3]))
    lat2 = lat.copy()
    lat2[3] = np.nan  # the best tile has no coordinates: the next best (0.9, at the origin) anchors
    got = estimate_position(lat2, lon, scores, 60.0)
    near = [0, 1, 5]  # (50, 0) at 50 m and (0, -50) at 50 m; (0, -50) scores -0.2: weight 0
    assert got[2] == 3 and got[0] == pytest.approx(np.average(lat2[near], weights=[0.9, 0.8, 0.0]))
    # all weights 0: the anchor's centre; an explicit anchor (the sequence filter's choice)
    assert estimate_position(lat, lon, -np.abs(scores), 75.0)[2] == 1
    assert estimate_position(lat, lon, scores, 0.0, anchor=5)[:2] == (pytest.approx(lat[5]), pytest.approx(lon[5]))
    assert np.isnan(estimate_position(np.full(3, np.nan), np.full(3, np.nan), np.ones(3), 75.0)[0])
    # the spacing of a grid is its stride; a lone tile has none
    grid_lat, grid_lon = offset_latlon(47.0, 8.0, *np.meshgrid(np.arange(5) * 40.0, np.arange(4) * 40.0))
    assert tile_spacing_m(grid_lat.ravel(), grid_lon.ravel()) == pytest.approx(40.0, rel=1e-3)
    assert tile_spacing_m([47.0], [8.0]) == 0.0


# -- the command line ---------------------------------------------------------------------------------------------

def test_help_quotes_the_position_rule():
    assert " ".join(POSITION_RULE.split()) in " ".join(LOCATE_HELP.split())
    result = CliRunner().invoke(app, ["locate", "--help"])
    assert result.exit_code == 0 and "Example: lpn-edge locate" in result.output
    assert "max_speed * (t - t_anchor) + tolerance" in " ".join(result.output.split())


def test_a_folder_with_a_broken_frame_is_processed_and_the_frame_named(area, tmp_path):
    folder = tmp_path / "frames"
    shutil.copytree(area["flight"] / "frames", folder)
    (folder / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = invoke("--model", area["model"], "--index", area["gallery"], folder)
    assert result.exit_code == 1, result.output
    assert f"cannot read frame {folder / '0002.png'}" in result.stderr
    assert "frames: 5 located, 1 unreadable" in result.stdout
    assert result.stdout.count(" tiles within ") + result.stdout.count(" tile within ") == 5
    for step in ("decode", "preprocess", "encode", "match", "total"):
        assert any(line.split()[:1] == [step] for line in result.stdout.splitlines())
    fine = invoke("--model", area["model"], "--index", area["gallery"], area["flight"] / "frames", "--every", "2")
    assert fine.exit_code == 0 and "frames: 3 located, 0 unreadable" in fine.stdout
    missing = invoke("--model", area["model"], "--index", area["gallery"], tmp_path / "nowhere")
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_truth_on_the_tiles_themselves_gives_zero_error_and_json_lines_parse(area):
    result = invoke("--model", area["model"], "--index", area["gallery"], area["tiles"], "--truth", area["truth"],
                    "--radius", "0", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    frames, summary = lines[:-1], lines[-1]["summary"]
    assert len(frames) == 49 and all(f["truth"]["rank"] == 1 and f["truth"]["error_m"] == 0 for f in frames)
    assert summary["truth"]["position"] == "latitude/longitude"
    assert summary["truth"]["error"]["median_m"] == 0 and summary["truth"]["error"]["within_25m"] == 1.0
    assert summary["truth"]["hits"] == {"top1": 1.0, "top5": 1.0}
    assert set(summary["latency_ms"]) == {"decode", "preprocess", "encode", "match", "total"}
    assert "drone's position" in result.stderr  # which truth columns: said


def test_track_on_real_locate_output_and_the_map(area, tmp_path):
    flight = area["flight"]
    out = tmp_path / "map.png"
    args = ["--model", area["model"], "--index", area["gallery"], flight / "frames", "--truth", flight / "flight.csv",
            "--track", "--max-speed", "15", "--interval", "2.5", "--top-k", "5"]
    result = invoke(*args, "--json", "--plot", out)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    frames, summary = lines[:-1], lines[-1]["summary"]
    assert summary["truth"]["position"] == "view_latitude/view_longitude" and summary["truth"]["frames"] == 6
    assert summary["truth"]["error"]["frames"] == summary["truth"]["track"]["frames"] == 6
    assert sum(summary["track"]["status"].values()) == 6 and summary["track"]["tolerance_m"] == pytest.approx(75.0)
    # the filter's choices are lpn_edge.geo.track's on the same candidates
    candidates = [[(t["latitude"], t["longitude"], t["score"]) for t in f["tiles"]] for f in frames]
    expected = track(candidates, 15.0, summary["track"]["tolerance_m"], frame_interval=2.5)
    assert [f["track"]["status"] for f in frames] == expected.status
    for f, choice in zip(frames, expected.choice):
        if choice >= 0:  # the chosen tile anchors the estimate: it lies within R of it
            chosen = f["tiles"][choice]
            assert abs(f["track"]["latitude"] - chosen["latitude"]) < 75 / 111_000
    # the map: found through tiling.json beside the index, a valid PNG
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (384, 384)
    assert summary["map"] == str(out)
    human = invoke(*args)
    assert human.exit_code == 0 and "with --track: position error over 6 frames" in human.stdout
    assert "estimate: position error over 6 frames" in human.stdout and "true tile in the top-1" in human.stdout
    assert "view_latitude/view_longitude" in human.stdout
    no_truth = invoke("--model", area["model"], "--index", area["gallery"], flight / "frames", "--plot", out)
    assert no_truth.exit_code == 2 and "--plot needs --truth" in no_truth.output


def test_video_every_n_th_frame(area, tmp_path):
    av = pytest.importorskip("av")
    video = tmp_path / "flight.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for tile_id in area["ids"][:6]:
            frame = av.VideoFrame.from_ndarray(tile(area, tile_id), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    result = invoke("--model", area["model"], "--index", area["gallery"], video, "--every", "2", "--json")
    assert result.exit_code == 0, result.output
    frames = [json.loads(line) for line in result.stdout.splitlines()][:-1]
    assert [f["frame"] for f in frames] == [f"{video}#{n}" for n in (0, 2, 4)] and [f["number"] for f in frames] == [
        0, 2, 4]
    assert [f["tiles"][0]["id"] for f in frames] == [area["ids"][n] for n in (0, 2, 4)]  # lossy, still first


def test_video_without_pyav_is_one_line_naming_the_extra(area, tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    result = invoke("--model", area["model"], "--index", area["gallery"], video)
    assert result.exit_code == 2 and 'pip install "lpn-edge[video]"' in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cpus_and_threads_pin_the_run_and_are_reported(area):
    """--cpus pins the process before the model loads and --threads sets the encoder's threads (the setting that
    holds up beside other work); run in a child process, since pinning is for the whole process."""
    core = min(os.sched_getaffinity(0))
    command = [sys.executable, "-m", "lpn_edge.cli", "locate", "--model", str(area["model"]), "--index",
               str(area["gallery"]), str(area["tiles"] / "0024.png"), "--json", "--cpus", str(core), "--threads", "1"]
    child = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    lines = [json.loads(line) for line in child.stdout.splitlines()]
    assert lines[0]["tiles"][0]["id"] == "0024"
    assert lines[-1]["summary"]["cpus"] == [core] and lines[-1]["summary"]["threads"] == 1


@pytest.mark.parametrize("args, message", [
    (["--cpus", "1-0"], r"--cpus takes core numbers and ranges such as 0, 0,1 or 2-3; got '1-0'"),
    (["--cpus", "4096"], r"--cpus 4096: core 4096 is not available to this process; it may use cores "),
    (["--threads", "0"], r"--threads must be at least 1; got 0"),
    (["--threads", "2", "--device", "cuda"], r"--threads sets the encoder's CPU threads; it does not apply to"),
])
def test_bad_cpus_and_threads_are_one_line_errors(area, args, message):
    before = os.sched_getaffinity(0)
    result = invoke("--model", area["model"], "--index", area["gallery"], area["tiles"], *args)
    assert result.exit_code == 2 and re.search(message, result.output), result.output
    assert os.sched_getaffinity(0) == before  # nothing pinned


def test_candidates_and_their_rows_skip_tiles_missing_either_coordinate():
    """--track maps the tracker's choice back to a top-k row through `positioned`: a tile with a latitude but no
    longitude is no candidate, so it must not shift the rows of the ones after it."""
    from lpn_edge.runtime.localize import Location

    nan = float("nan")
    location = Location(rows=np.arange(4), tiles=list("abcd"), scores=np.array([0.9, 0.8, 0.7, 0.6], np.float32),
                        latitude=np.array([46.0, nan, 46.2, 46.3]), longitude=np.array([nan, 7.1, 7.2, 7.3]),
                        estimate=(nan, nan), used=0, radius_m=75.0)
    assert location.positioned.tolist() == [2, 3]
    assert location.candidates[:, 0].tolist() == [46.2, 46.3]
