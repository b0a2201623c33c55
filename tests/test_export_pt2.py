"""AOTInductor packages: compiled, loaded back without the model's code, checked against PyTorch.

On the 2-core CPU of CI a ResNet-18 LPN at 64x64 compiles in about 30 s, so the CPU test runs there (marked slow);
the CUDA variant runs where a GPU is.
"""

from __future__ import annotations

import json

import pytest
import torch
from export_helpers import make_checkpoint

from lpn_edge.checkpoint import load_model
from lpn_edge.export import ExportOptions, export_model
from lpn_edge.fileio import file_fingerprint


def _export_and_check(tmp_path, device: str):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    result = export_model(ckpt, tmp_path / "out", ExportOptions(formats={"pt2"}, batch=(1, 4, 8), parity_queries=4,
                                                                parity_gallery=8))
    package = tmp_path / "out" / "tiny-drone.pt2"
    assert result.paths() == [package, tmp_path / "out" / "tiny-drone.pt2.json"]
    assert all(f.passed and f.backend == f"aotinductor-{device}" for f in result.parity)
    sidecar = json.loads((tmp_path / "out" / "tiny-drone.pt2.json").read_text())
    assert sidecar["device"] == device and sidecar["precision"] == "fp32" and sidecar["batch"] == [1, 4, 8]
    assert sidecar["artifact_fingerprint"] == file_fingerprint(package)
    assert sidecar["source_fingerprint"] == file_fingerprint(ckpt) and sidecar["layout"] == "channel*n+part"
    # Loaded in this process with nothing but torch: batch 1 and 7 (dynamic), against the eager model.
    compiled = torch._inductor.aoti_load_package(str(package))
    model = load_model(ckpt, device)
    for batch in (1, 7):
        images = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch)).to(device)
        with torch.no_grad():
            got, expected = compiled(images).cpu().numpy(), model.embed(images, "drone").cpu().numpy()
        assert got.shape == (batch, 2048) and ((got * expected).sum(1) >= 0.99999).all()
    return result


@pytest.mark.slow
def test_pt2_package_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the package is compiled for CUDA on a machine with a GPU (see the gpu test)")
    result = _export_and_check(tmp_path, "cpu")
    assert any("compiled for CPU" in note for note in result.notes)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pt2_package_on_cuda(tmp_path):
    _export_and_check(tmp_path, "cuda")


def test_pt2_refuses_without_compiler(tmp_path, monkeypatch):
    from lpn_edge.errors import LpnEdgeError

    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(LpnEdgeError, match="--pt2 compiles C\\+\\+ and needs a compiler: 'no-such-compiler-xyz' "
                                           "was not found"):
        # refused before reading the checkpoint
        export_model(tmp_path / "any.pt", tmp_path / "out", ExportOptions(formats={"pt2"}))
