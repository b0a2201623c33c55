"""`lpn-edge bench`: the statistics helper on known samples, and a fast run on a tiny model (2 iterations)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lpn_edge.bench.options import BenchOptions
from lpn_edge.bench.stats import STAT_KEYS, measure, percentile, summarise
from lpn_edge.cli import app
from lpn_edge.errors import LpnEdgeError


def test_statistics_of_known_samples():
    stats = summarise([i / 1000 for i in range(100, 0, -1)], items=8)  # 1..100 ms, in any order
    assert stats["min_ms"] == pytest.approx(1) and stats["max_ms"] == pytest.approx(100)
    assert stats["median_ms"] == pytest.approx(50.5) and stats["mean_ms"] == pytest.approx(50.5)
    assert stats["p90_ms"] == pytest.approx(90.1) and stats["p99_ms"] == pytest.approx(99.01)  # numpy's linear rule
    assert stats["throughput"] == pytest.approx(8 / 0.0505) and stats["samples"] == 100
    assert summarise([0.002])["p99_ms"] == pytest.approx(2)
    assert percentile([3, 1, 2], 50) == 2 and percentile([1, 2], 25) == pytest.approx(1.25)
    with pytest.raises(ValueError):
        summarise([])


def test_measure_interleaves_and_warms_up():
    calls = []
    times = measure({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, iters=2, warmup=1)
    assert calls == ["a", "b"] * 3 and {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}


def test_measure_settles_before_each_timed_call_outside_the_clock(monkeypatch):
    """With `settle`, every timed call is preceded by a pause (spinning pools of the previous call go to sleep),
    and the pause is not part of the sample."""
    import lpn_edge.bench.stats as stats

    events, clock = [], iter(range(100))
    monkeypatch.setattr(stats.time, "sleep", lambda seconds: events.append(("sleep", seconds)))
    monkeypatch.setattr(stats.time, "perf_counter", lambda: float(next(clock)))
    times = measure({"a": lambda: events.append("a"), "b": lambda: events.append("b")}, iters=2, warmup=1,
                    settle=0.25)
    assert events == ["a", "b"] + [("sleep", 0.25), "a", ("sleep", 0.25), "b"] * 2
    assert times == {"a": [1.0, 1.0], "b": [1.0, 1.0]}  # one clock tick per call: the pause is outside


def test_options_refuse_bad_values(tmp_path):
    with pytest.raises(LpnEdgeError, match="unknown part 'encoding'"):
        BenchOptions(skip={"encoding"})
    with pytest.raises(LpnEdgeError, match="--iters must be at least 1"):
        BenchOptions(iters=0)
    with pytest.raises(LpnEdgeError, match="does not exist"):
        BenchOptions(models=(tmp_path / "absent.onnx",))
    (tmp_path / "model.plan").write_bytes(b"an engine by another tool's name")
    with pytest.raises(LpnEdgeError, match=r"model\.plan: cannot tell what \.plan is; expected one of \.onnx"):
        BenchOptions(models=(tmp_path / "model.plan",))


def test_bench_json_on_a_tiny_model(tmp_path):
    from export_helpers import export_tiny_onnx

    ckpt, onnx_path = export_tiny_onnx(tmp_path)
    result = CliRunner().invoke(app, ["bench", "--model", str(onnx_path), "--model", str(ckpt), "--batch", "1,2",
                                      "--threads", "1", "--iters", "2", "--warmup", "0", "--gallery-size", "300",
                                      "--queries", "1,3", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"machine", "options", "results", "skipped", "failed"} and document["failed"] == []
    assert {"cpu", "cpus", "date", "commit", "load_average_start", "load_average_end"} <= set(document["machine"])
    rows = document["results"]
    assert {row["part"] for row in rows} == {"encode", "pool", "match", "locate"}
    for row in rows:
        stats = row["stats"]
        assert set(STAT_KEYS) <= set(stats) and stats["samples"] == 2
        assert stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
        assert stats["throughput"] > 0
    encode = [row for row in rows if row["part"] == "encode"]
    references = [row for row in encode if row.get("reference_row")]
    assert [(row["batch"], row["threads"]) for row in references] == [(1, 1), (2, 1)]
    for row in encode:
        if not row.get("reference_row"):
            assert row["reference"] == "pytorch eager fp32" and row["ratio"] > 0
            assert row["accuracy"]["mean_cosine"] > 0.9999 and row["accuracy"]["top1_agreement"] == 1.0
    assert {"plain session", "lpn-edge session"} <= {row["name"].split("(")[-1].rstrip(")") for row in encode}
    pool = [row for row in rows if row["part"] == "pool"]
    assert {row["name"] for row in pool} >= {"numpy (runtime CPU path)", "authors' slicing (torch)"}
    assert all(row["floor_ms"] > 0 for row in pool)
    match = [row for row in rows if row["part"] == "match"]
    assert {row["queries"] for row in match} == {1, 3}
    assert all(row["floor_ms"] > 0 for row in match if not row.get("reference_row"))
    # the locate loop, frame by frame beside the reference loop: the breakdown, and the same best tile
    (reference,) = [row for row in rows if row["part"] == "locate" and row.get("reference_row")]
    (loop,) = [row for row in rows if row["part"] == "locate" and not row.get("reference_row")]
    assert reference["name"].startswith("reference loop") and loop["reference"] == reference["name"]
    assert loop["gallery"] == 300 and loop["engine"] in {"numpy", "faiss"} and loop["ratio"] > 0
    assert set(loop["breakdown_ms"]) == {"decode", "preprocess", "encode", "match"}
    assert all(ms > 0 for ms in loop["breakdown_ms"].values())
    assert sum(loop["breakdown_ms"].values()) <= loop["stats"]["max_ms"]
    assert loop["top1_agreement"] == 1.0
    # --device cpu: every GPU part is listed as skipped, each with its reason
    skipped = {(s["part"], s["what"].split()[0]): s["reason"] for s in document["skipped"]}
    assert skipped[("train", "all")].startswith("--device cpu")
    assert all(reason for reason in skipped.values())
    assert {part for part, _ in skipped} >= {"encode", "pool", "match", "locate", "train"}


def test_bench_table_and_skip(tmp_path):
    from export_helpers import export_tiny_onnx

    _ckpt, onnx_path = export_tiny_onnx(tmp_path)
    result = CliRunner().invoke(app, ["bench", "--model", str(onnx_path), "--batch", "1", "--threads", "1",
                                      "--iters", "2", "--warmup", "0", "--skip", "pool,match,locate,train", "--device",
                                      "cpu"])
    assert result.exit_code == 0, result.output
    # the checkpoint the artifact names is found beside it: the reference row is there
    assert "pytorch eager fp32" in result.stdout and "ratio" in result.stdout
    assert "skipped  pool: all: --skip" in result.stdout
    bad = CliRunner().invoke(app, ["bench", "--model", str(onnx_path), "--batch", "1,x"])
    assert bad.exit_code == 2 and "comma-separated integers" in bad.output


def test_a_failing_part_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    """On a lent GPU one untried path must not take every figure with it: the failure is listed, the parts after
    it run, --out holds the document after every part, and the exit status says something failed."""
    from export_helpers import make_checkpoint

    import lpn_edge.bench.pool as pool

    def broken(options, results, progress):
        results.add("pool", "first row", {"median_ms": 1.0})
        raise RuntimeError("cuLaunchKernel failed: CUDA_ERROR_INVALID_VALUE\nmore detail")

    monkeypatch.setattr(pool, "run", broken)
    ckpt = make_checkpoint(tmp_path / "tiny.pt", samples=4)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--model", str(ckpt), "--iters", "2", "--warmup", "0",
                                      "--gallery-size", "200", "--queries", "1", "--skip", "encode,locate,train",
                                      "--device", "cpu", "--json", "--out", str(out)])
    assert result.exit_code == 1 and "bench part(s) pool failed" in result.stderr
    document = json.loads(result.stdout)
    assert document["failed"] == [{"part": "pool", "error": "RuntimeError: cuLaunchKernel failed: "
                                                             "CUDA_ERROR_INVALID_VALUE"}]
    assert {row["part"] for row in document["results"]} == {"pool", "match"}  # pool's finished row is kept
    assert json.loads(out.read_text()) == document
    missing = CliRunner().invoke(app, ["bench", "--model", str(ckpt), "--out", str(tmp_path / "no" / "b.json")])
    assert missing.exit_code == 2 and "the folder" in missing.output and "does not exist" in missing.output


def test_split_graph_is_benchmarked_as_the_runtime_runs_it(tmp_path):
    """A split backbone (ONNX Runtime + numpy heads) is timed through open_encoder beside the reference, with its
    accuracy, instead of being left out."""
    from export_helpers import make_checkpoint

    from lpn_edge.export import ExportOptions, export_model

    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    export_model(ckpt, tmp_path / "out", ExportOptions(formats={"onnx"}, split=True, parity_queries=2,
                                                       parity_gallery=4))
    split = tmp_path / "out" / "tiny-drone.split.onnx"
    result = CliRunner().invoke(app, ["bench", "--model", str(split), "--model", str(ckpt), "--batch", "2",
                                      "--threads", "1", "--iters", "2", "--warmup", "0", "--skip",
                                      "pool,match,locate,train", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["results"]}
    row = rows["tiny-drone.split.onnx CPUExecutionProvider+numpy-heads"]
    assert row["reference"] == "pytorch eager fp32" and row["ratio"] > 0 and row["stats"]["samples"] == 2
    assert row["accuracy"]["mean_cosine"] > 0.9999 and row["accuracy"]["top1_agreement"] == 1.0


def test_device_cuda_without_a_gpu_fails_before_any_work(tmp_path, monkeypatch):
    """--device cuda measures GPU rows only; with no CUDA device it stops with one line before timing anything."""
    import torch

    from lpn_edge.bench import machine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    started = []
    monkeypatch.setattr(machine, "load_average", lambda: started.append(1) or 0.0)
    result = CliRunner().invoke(app, ["bench", "--model", str(tmp_path / "absent.pt"), "--device", "cuda"])
    assert result.exit_code == 2 and "does not exist" in result.output  # the model is checked first
    (tmp_path / "model.pt").write_bytes(b"not read")
    result = CliRunner().invoke(app, ["bench", "--model", str(tmp_path / "model.pt"), "--device", "cuda"])
    assert result.exit_code == 2 and "--device cuda: no CUDA device visible to torch" in result.output
    assert not started  # no part began
    assert not BenchOptions(device="cuda").cpu_rows and BenchOptions(device="auto").cpu_rows


def test_largest_batch_doubles_until_a_step_no_longer_fits():
    from lpn_edge.bench.train import largest_batch

    tried = []

    def fits(batch):
        tried.append(batch)
        return batch <= 100

    assert largest_batch(fits, 8) == 64 and tried == [16, 32, 64, 128]
    assert largest_batch(lambda batch: True, 8, limit=32) == 32
    assert largest_batch(lambda batch: False, 24) == 24  # the start is known to fit


def test_slicing_reference_computes_the_ring_pooling():
    import torch

    from lpn_edge.bench.reference import slicing_ring_pool
    from lpn_edge.model.partition import pool_parts

    x = torch.rand(2, 8, 16, 16)
    theirs = slicing_ring_pool(x, 4)[..., 0]  # outermost ring first
    assert torch.allclose(theirs.flip(-1), pool_parts(x, 4, "ring", "avg"), atol=1e-6)
