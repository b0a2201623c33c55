"""A test-only Encoder (lpn_edge.runtime.encoder protocol) over an exported ONNX graph with ONNX Runtime on the CPU,
standing in for the runtime encoders: ImageNet preprocessing of uint8 RGB, one session run per call, and counters
of calls and images (the resume tests check that finished chunks are not encoded again)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lpn_edge.runtime.encoder import EncoderInfo

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


class OnnxTestEncoder:
    def __init__(self, path: Path, fingerprint: str | None = None) -> None:
        import onnxruntime as ort

        from lpn_edge.runtime.artifact import read_onnx_metadata

        meta = read_onnx_metadata(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # deterministic and polite on a shared 2-core machine
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.info = EncoderInfo(backend="onnxruntime", provider="CPUExecutionProvider", precision="fp32",
                                input_size=tuple(meta["preprocessing"]["size"]), view=meta["view"],
                                fingerprint=fingerprint or meta["source_fingerprint"], dim=meta["embedding_dim"])
        self.calls = 0
        self.images = 0

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        from PIL import Image

        height, width = self.info.input_size
        if images.shape[1:3] != (height, width):
            images = np.stack([np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
                               for image in images])
        return np.ascontiguousarray(((images.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2))

    def embed(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.images += len(images)
        if images.dtype == np.uint8:
            images = self.preprocess(images)
        return self.session.run(["embedding"], {"images": images.astype(np.float32)})[0]
