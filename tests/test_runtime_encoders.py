"""`open_encoder`: every CPU backend agrees with `LPN.embed` at the export's fp32 parity threshold, on uint8 frames
(resized when their size differs) and on preprocessed float input; refusals are one line.

One tiny model (ResNet-18, 64 px, 4 parts) exported once to ONNX with the split graph; the checkpoint (.pt) and the
pt2 package are opened from the same source. GPU and TensorRT variants are in test_runtime_encoders_gpu.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import make_checkpoint

from lpn_edge.checkpoint import load_model
from lpn_edge.errors import LpnEdgeError
from lpn_edge.export import ExportOptions, export_model
from lpn_edge.fileio import file_fingerprint
from lpn_edge.runtime.encoder import Encoder
from lpn_edge.runtime.encoders import open_encoder
from lpn_edge.runtime.preprocessing import preprocess
from lpn_edge.runtime.split_heads import split_stem

FP32_COSINE = 0.99999  # the export's fp32 parity threshold
SIZE = (64, 64)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint, {"onnx": full graph, "split": split backbone graph, "heads": split heads})."""
    root = tmp_path_factory.mktemp("encoders")
    ckpt = make_checkpoint(root / "tiny.pt", samples=8)
    export_model(ckpt, root / "out", ExportOptions(formats={"onnx"}, split=True, parity_queries=2,
                                                   parity_gallery=2))
    out = root / "out"
    return ckpt, {"onnx": out / "tiny-drone.onnx", "split": out / "tiny-drone.split.onnx",
                  "heads": out / "tiny-drone.split.npz"}


@pytest.fixture(scope="module")
def frames():
    """5 uint8 RGB frames at the model's size and 3 at another size (resized by the encoder)."""
    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    from PIL import Image

    smooth = [np.asarray(Image.fromarray(c).resize((64, 64), Image.Resampling.BICUBIC)) for c in coarse]
    return np.stack(smooth[:5]), np.stack([np.asarray(Image.fromarray(c).resize((90, 75))) for c in coarse[5:]])


def reference(ckpt, images: np.ndarray, view: str = "drone") -> np.ndarray:
    with torch.no_grad():
        return load_model(ckpt).embed(torch.from_numpy(images), view).numpy()


def assert_parity(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * expected).sum(1).min() >= FP32_COSINE


@pytest.mark.parametrize("artifact", ["onnx", "split", "heads"])
def test_onnx_backends_agree_with_the_model(exported, frames, artifact):
    ckpt, paths = exported
    encoder = open_encoder(paths[artifact], "cpu", threads=1)
    assert isinstance(encoder, Encoder)
    info = encoder.info
    assert info.provider.startswith("CPUExecutionProvider") and info.precision == "fp32"
    assert info.backend == ("onnxruntime" if artifact == "onnx" else "split")
    assert (info.input_size, info.view, info.dim) == (SIZE, "drone", 2048)
    assert info.fingerprint == file_fingerprint(ckpt)
    same_size, other_size = frames
    for batch in (same_size, other_size):
        preprocessed = preprocess(batch, SIZE)
        expected = reference(ckpt, preprocessed)
        assert_parity(encoder.embed(batch), expected)  # uint8 frames, resized when needed
        assert_parity(encoder.embed(preprocessed), expected)  # preprocessed float32
    assert encoder.embed(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 2048)


def test_batch_chunks_give_the_same_embeddings(exported, frames):
    _ckpt, paths = exported
    whole = open_encoder(paths["onnx"], threads=1).embed(frames[0])
    chunked = open_encoder(paths["onnx"], threads=1, batch=2).embed(frames[0])
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


@pytest.mark.parametrize("images, message", [
    (np.zeros((64, 64, 3), np.uint8), r"uint8 images must be \(N, H, W, 3\) RGB; got shape \(64, 64, 3\) \(one "
                                      r"frame: pass frame\[None\]\)"),
    (np.zeros((2, 64, 64, 4), np.uint8), r"uint8 images must be \(N, H, W, 3\) RGB; got shape \(2, 64, 64, 4\)"),
    (np.zeros((2, 3, 32, 32), np.float32), r"float32 images must be preprocessed \(N, 3, 64, 64\) .*got shape "
                                           r"\(2, 3, 32, 32\)"),
    (np.zeros((2, 64, 64, 3), np.float32), r"float32 images must be preprocessed \(N, 3, 64, 64\)"),
    (np.zeros((2, 3, 64, 64), np.float64), r"images must be uint8 .* or preprocessed float32 .*got dtype float64"),
    ([[1, 2, 3]], r"embed takes a numpy array"),
])
def test_wrong_inputs_are_refused_with_one_line(exported, images, message):
    encoder = open_encoder(exported[1]["onnx"], threads=1)
    with pytest.raises(LpnEdgeError, match=message) as error:
        encoder.embed(images)
    assert "\n" not in str(error.value)


def test_provider_refusals(exported, monkeypatch):
    import onnxruntime as ort

    paths = exported[1]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(LpnEdgeError, match="ONNX Runtime provider 'cuda' is not available"):
            open_encoder(paths["onnx"], "cuda")
        with pytest.raises(LpnEdgeError, match="ONNX Runtime provider 'tensorrt' is not available"):
            open_encoder(paths["split"], "tensorrt")
    with pytest.raises(LpnEdgeError, match="unknown ONNX Runtime provider 'gpu'"):
        open_encoder(paths["onnx"], providers=("gpu",))
    with pytest.raises(LpnEdgeError, match="device must be one of cpu, cuda, tensorrt; got 'gpu'"):
        open_encoder(paths["onnx"], "gpu")


def test_artifact_refusals(exported, tmp_path):
    ckpt, paths = exported
    with pytest.raises(LpnEdgeError, match=r"is a fp32 artifact, not fp16"):
        open_encoder(paths["onnx"], precision="fp16")
    with pytest.raises(LpnEdgeError, match="embeds the drone view, not satellite"):
        open_encoder(paths["onnx"], view="satellite")
    with pytest.raises(LpnEdgeError, match="does not exist"):
        open_encoder(tmp_path / "none.onnx")
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(LpnEdgeError, match=r"cannot tell the backend from the suffix .tflite; expected one of "
                                           r"\.onnx, \.engine"):
        open_encoder(tmp_path / "model.tflite")
    with pytest.raises(LpnEdgeError, match="providers apply to ONNX files"):
        open_encoder(ckpt, providers=("cpu",))
    with pytest.raises(LpnEdgeError, match="runs on the GPU"):
        (tmp_path / "m.engine").write_bytes(b"x")
        open_encoder(tmp_path / "m.engine", "cpu")
    # a split graph whose heads are missing, or come from another checkpoint
    lonely = tmp_path / "lonely.split.onnx"
    lonely.write_bytes(paths["split"].read_bytes())
    with pytest.raises(LpnEdgeError, match="its heads lonely.split.npz are missing"):
        open_encoder(lonely)


def test_split_names():
    from pathlib import Path

    for name in ("m-drone.split.onnx", "m-drone.split.int8.onnx", "m-drone.split.fp16.engine", "m-drone.split.npz"):
        assert split_stem(Path(name)) == "m-drone.split"
    assert split_stem(Path("m-drone.npz")) == "m-drone"


def test_checkpoint_encoder_is_the_model(exported, frames):
    ckpt, _paths = exported
    encoder = open_encoder(ckpt, "cpu", threads=1)
    assert (encoder.info.backend, encoder.info.provider, encoder.info.view) == ("torch", "pytorch-cpu", "drone")
    assert encoder.info.fingerprint == file_fingerprint(ckpt) and encoder.info.dim == 2048
    for batch in frames:
        preprocessed = preprocess(batch, SIZE)
        assert_parity(encoder.embed(batch), reference(ckpt, preprocessed))
        assert_parity(encoder.embed(preprocessed), reference(ckpt, preprocessed))
    satellite = open_encoder(ckpt, view="satellite", flip=False)
    preprocessed = preprocess(frames[0], SIZE)
    with torch.no_grad():
        expected = load_model(ckpt).embed(torch.from_numpy(preprocessed), "satellite", flip=False).numpy()
    assert_parity(satellite.embed(preprocessed), expected)
    with pytest.raises(LpnEdgeError, match="view 'street' is not part of this"):
        open_encoder(ckpt, view="street")
    with pytest.raises(LpnEdgeError, match="runs in fp32 only, not fp16"):
        open_encoder(ckpt, precision="fp16")
    with pytest.raises(LpnEdgeError, match="device must be cpu or cuda, not 'tensorrt'"):
        open_encoder(ckpt, "tensorrt")


@pytest.mark.slow
def test_pt2_encoder_agrees_with_the_model(exported, frames, tmp_path):
    ckpt, _paths = exported
    export_model(ckpt, tmp_path, ExportOptions(formats={"pt2"}, batch=(1, 2, 4), parity_queries=2, parity_gallery=2))
    package = tmp_path / "tiny-drone.pt2"
    encoder = open_encoder(package, "cpu", threads=1)
    assert (encoder.info.backend, encoder.info.provider) == ("pt2", "aotinductor-cpu")
    assert encoder.info.fingerprint == file_fingerprint(ckpt) and encoder.info.input_size == SIZE
    for batch in frames:  # 5 images: chunks of 4 and 1; 3 images: one chunk
        preprocessed = preprocess(batch, SIZE)
        assert_parity(encoder.embed(batch), reference(ckpt, preprocessed))
        assert_parity(encoder.embed(preprocessed), reference(ckpt, preprocessed))
    with pytest.raises(LpnEdgeError, match="compiled for cpu, not cuda"):
        from lpn_edge.torch_encoders import Pt2Encoder

        Pt2Encoder(package, "cuda")
    with pytest.raises(LpnEdgeError, match="embeds view drone, not satellite"):
        open_encoder(package, view="satellite")
    package.write_bytes(package.read_bytes() + b"\0")
    with pytest.raises(LpnEdgeError, match="describes another file"):
        open_encoder(package)
