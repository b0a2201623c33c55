"""TensorRT: the engine sidecar check (pure Python, runs everywhere) and engine builds (need TensorRT and a GPU).

The engine tests are marked `trt` and `gpu` and skip cleanly without TensorRT or CUDA; nothing here pretends that
TensorRT ran.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_export_fixtures import SMALL_PARITY, make_checkpoint, write_calibration_folder

from lpn_edge.fileio import file_fingerprint
from lpn_edge.errors import LpnEdgeError
from lpn_edge.export import check_engine_sidecar, export_model
from lpn_edge.export.metadata import write_sidecar

HERE = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "cuda_version": "12.6"}


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "m.fp16.engine"
    path.write_bytes(b"pretend serialized engine bytes")
    write_sidecar(tmp_path / "m.fp16.engine.json", {**HERE, "precision": "fp16", "view": "drone",
                                                    "artifact_fingerprint": file_fingerprint(path)})
    return path


def test_sidecar_accepts_the_machine_it_was_built_for(engine):
    meta = check_engine_sidecar(engine, HERE)
    assert meta["precision"] == "fp16" and meta["format"] == "lpn-edge-artifact"
    assert check_engine_sidecar(engine, {**HERE, "cuda_version": "12.2"})  # same CUDA major is fine


@pytest.mark.parametrize("change, message", [
    ({"tensorrt_version": "10.7.0"}, "m.fp16.engine was built for TensorRT version 10.3.0, this machine has 10.7.0; "
                                     "rebuild it here with `lpn-edge export --trt`"),
    ({"gpu_name": "NVIDIA H100 80GB HBM3"}, "built for GPU Orin, this machine has NVIDIA H100 80GB HBM3"),
    ({"compute_capability": "9.0"}, "built for GPU compute capability 8.7, this machine has 9.0"),
    ({"cuda_version": "13.0"}, "built with CUDA 12.6, this machine has CUDA 13.0"),
])
def test_sidecar_refuses_another_machine(engine, change, message):
    with pytest.raises(LpnEdgeError) as error:
        check_engine_sidecar(engine, {**HERE, **change})
    assert message in str(error.value)


def test_sidecar_refuses_missing_or_foreign(engine, tmp_path):
    engine.write_bytes(b"another engine now")
    with pytest.raises(LpnEdgeError, match="sidecar m.fp16.engine.json describes another file"):
        check_engine_sidecar(engine, HERE)
    (tmp_path / "m.fp16.engine.json").unlink()
    with pytest.raises(LpnEdgeError, match="sidecar .*m.fp16.engine.json is missing"):
        check_engine_sidecar(engine, HERE)
    (tmp_path / "m.fp16.engine.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(LpnEdgeError, match="is not an lpn-edge sidecar"):
        check_engine_sidecar(engine, HERE)


def needs_tensorrt(test):
    """Marks `trt` and `gpu`; skipped without CUDA here, and without TensorRT by `_tensorrt_and_runtime`."""
    for mark in (pytest.mark.trt, pytest.mark.gpu,
                 pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")):
        test = mark(test)
    return test


def _tensorrt_and_runtime():
    trt = pytest.importorskip("tensorrt")
    from lpn_edge.export.cuda_memory import cuda_memory
    from lpn_edge.export.tensorrt import runtime_info

    return trt, runtime_info(trt, cuda_memory())


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("split", [False, True])
def test_engine_parity(tmp_path, precision, split):
    trt, info = _tensorrt_and_runtime()
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    result = export_model(ckpt, tmp_path / "out", {"trt"}, precision=precision, batch=(1, 4, 8), split=split,
                          **SMALL_PARITY)
    stem = "tiny-drone.split" if split else "tiny-drone"
    engine = tmp_path / "out" / f"{stem}.{precision}.engine"
    assert engine in result.paths()
    engine_figures = [f for f in result.parity if f.backend.startswith("tensorrt")]
    assert engine_figures and all(f.passed for f in engine_figures)
    meta = check_engine_sidecar(engine, info)
    assert meta["precision"] == precision and meta["tensorrt_version"] == trt.__version__


@needs_tensorrt
def test_int8_engine_parity(tmp_path):
    _trt, info = _tensorrt_and_runtime()
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    calib = write_calibration_folder(tmp_path / "calib", 32)
    result = export_model(ckpt, tmp_path / "out", {"trt"}, precision="int8", calib_dir=calib, batch=(1, 8, 8),
                          **SMALL_PARITY)
    engine = tmp_path / "out" / "tiny-drone.int8.engine"
    assert all(f.passed for f in result.parity)
    assert check_engine_sidecar(engine, info)["precision"] == "int8"
