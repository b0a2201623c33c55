"""`open_encoder` on the GPU: ONNX Runtime's CUDA provider (IO binding), split graphs with the ring-pool kernel on the
device buffer, TensorRT engines (full and split, CUDA-graph replay), the sidecar refusal. Marked `gpu` / `trt`; all
skip on a machine without CUDA (the project's CI). Thresholds: the export's (`export.parity.PARITY_THRESHOLDS`).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from export_helpers import make_checkpoint

from lpn_edge.checkpoint import load_model
from lpn_edge.errors import LpnEdgeError
from lpn_edge.export import ExportOptions, export_model
from lpn_edge.export.parity import PARITY_THRESHOLDS
from lpn_edge.runtime.encoders import open_encoder
from lpn_edge.runtime.preprocessing import preprocess

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _ort_cuda() -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without the CUDA provider (pip install onnxruntime-gpu)")


def _cuda_binding() -> None:
    from lpn_edge.runtime.cuda_buffers import cuda_library

    try:
        cuda_library()
    except LpnEdgeError as error:
        pytest.skip(str(error))


def _frames(count: int, seed: int = 0) -> np.ndarray:
    from PIL import Image

    coarse = np.random.default_rng(seed).integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(c).resize((72, 64), Image.Resampling.BICUBIC)) for c in coarse])


def _check(encoder, ckpt, precision: str, count: int = 11) -> np.ndarray:
    frames = _frames(count)
    images = preprocess(frames, (64, 64))
    with torch.no_grad():
        expected = load_model(ckpt).embed(torch.from_numpy(images), "drone").numpy()
    got = encoder.embed(frames)
    cosine = (got * expected).sum(1)
    limit = PARITY_THRESHOLDS[precision]
    assert got.shape == expected.shape and got.dtype == np.float32
    assert cosine.min() >= limit.min_cosine and cosine.mean() >= limit.mean_cosine
    again = encoder.embed(images)  # float input; the second call replays what the first one set up
    assert ((again * expected).sum(1) >= limit.min_cosine).all()
    return got


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-encoders")
    ckpt = make_checkpoint(root / "tiny.pt", samples=8)
    export_model(ckpt, root / "out", ExportOptions(formats={"onnx"}, split=True, parity_queries=2, parity_gallery=2))
    return ckpt, root / "out"


def test_onnx_on_the_cuda_provider(onnx_export):
    _ort_cuda()
    ckpt, out = onnx_export
    encoder = open_encoder(out / "tiny-drone.onnx", "cuda")
    assert encoder.info.provider.startswith("CUDAExecutionProvider") and encoder.runner.on_gpu
    _check(encoder, ckpt, "fp32")


def test_split_onnx_with_the_ring_pool_kernel(onnx_export):
    _ort_cuda()
    _cuda_binding()
    ckpt, out = onnx_export
    encoder = open_encoder(out / "tiny-drone.split.onnx", "cuda", batch=4)  # 11 frames: chunks 4, 4, 3
    assert encoder.info.backend == "split" and encoder.info.provider.endswith("+ring-pool-kernel")
    _check(encoder, ckpt, "fp32")
    encoder.close()


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("split", [False, True])
def test_engine_encoders(tmp_path, precision, split):
    pytest.importorskip("tensorrt")
    _cuda_binding()
    ckpt = make_checkpoint(tmp_path / "tiny.pt", samples=8)
    export_model(ckpt, tmp_path / "out", ExportOptions(formats={"trt"}, precision=precision, batch=(1, 4, 8),
                                                       split=split, parity_queries=2, parity_gallery=2))
    engine = tmp_path / "out" / f"tiny-drone{'.split' if split else ''}.{precision}.engine"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed CUDA graph capture fails the test
        encoder = open_encoder(engine, "cuda", precision=precision)
        assert encoder.info.precision == precision and encoder.info.backend == ("split" if split else "tensorrt")
        first = _check(encoder, ckpt, precision, count=11)  # chunks of 8 and 3 (the profile's largest is 8)
        np.testing.assert_allclose(encoder.embed(_frames(11)), first, atol=1e-6)  # replayed graphs: same result
    if split:
        assert encoder.graphs == {8: True, 3: True} and encoder.graph[0] == 3
    encoder.close()
    with pytest.raises(LpnEdgeError, match=f"is a {precision} engine, not int8"):
        open_encoder(engine, "cuda", precision="int8")
    sidecar = engine.with_name(engine.name + ".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "gpu_name": "Orin"}))
    with pytest.raises(LpnEdgeError, match=r"was built for GPU Orin, this machine has .*; rebuild it here") as error:
        open_encoder(engine, "cuda")
    assert "\n" not in str(error.value)
