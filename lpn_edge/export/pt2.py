"""AOTInductor packages (`.pt2`): the embedding model compiled ahead of time, runnable without the model's code.

`torch.export` (example batch 2, dynamic batch dimension) -> `torch._inductor.aoti_compile_and_package` -> loaded
back with `torch._inductor.aoti_load_package`. The package is compiled for one device: CUDA when this machine has
it, else CPU (said in the output and recorded in the sidecar). Compiling needs a C++ compiler in both cases.
On a 2-core CPU a ResNet-18 LPN at 64x64 px compiles in about 30 s. Plain functions: the export job (`pipeline`)
composes them and checks parity.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

import torch

from lpn_edge.errors import LpnEdgeError
from lpn_edge.precision import exact_fp32

TRACE_BATCH = 2  # a batch of 1 would be specialised (DESIGN.md section 9)


def require_compiler() -> str:
    """The C++ compiler Inductor will call (it honours $CXX, default g++); one-line error when there is none."""
    compiler = os.environ.get("CXX", "g++")
    found = shutil.which(compiler)
    if found is None:
        raise LpnEdgeError(f"--pt2 compiles C++ and needs a compiler: {compiler!r} was not found (install g++ or "
                           "set CXX)")
    return found


def package_batch(batch: tuple[int, int, int]) -> tuple[int, int, int]:
    """The (min, opt, max) batch range a package compiled for `batch` accepts: max is at least the trace batch."""
    return (batch[0], batch[1], max(batch[2], TRACE_BATCH))


def compile_pt2(module: torch.nn.Module, size: tuple[int, int], path: Path, batch: tuple[int, int, int],
                device: torch.device) -> None:
    """Export `module` ((N, 3, H, W) -> (N, D)) and compile it into the AOTInductor package `path` (".pt2").

    The batch dimension is dynamic over [batch min, max(batch max, 2)]: the trace needs 2 examples.
    """
    module = module.eval().to(device)
    example = torch.randn(TRACE_BATCH, 3, *size, device=device)
    with torch.no_grad(), exact_fp32():
        module(example)  # builds cached constants (ring weights) outside the trace, as for ONNX
        dim = torch.export.Dim("batch", min=batch[0], max=max(batch[2], TRACE_BATCH))
        try:
            exported = torch.export.export(module, (example,), dynamic_shapes={"images": {0: dim}})
            torch._inductor.aoti_compile_and_package(exported, package_path=str(path))
        except Exception as exc:  # noqa: BLE001 - export and Inductor raise many types; the user needs one line
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise LpnEdgeError(f"pt2 compilation failed ({type(exc).__name__}: {detail})") from None


def pt2_runner(path: Path, device: torch.device, batch: tuple[int, int, int]):
    """images (N, 3, H, W) float32 -> (N, D) float32 with the compiled package, loaded once, in chunks within its
    batch range (the runtime's pt2 encoder runs it the same way: `torch_encoders.run_pt2`)."""
    from lpn_edge import torch_encoders

    package = torch_encoders.load_pt2(path)
    return lambda images: torch_encoders.run_pt2(package, images, device, (batch[0], batch[2]))


def device_info(device: torch.device) -> dict:
    """What the package was compiled for (checked by whoever loads it)."""
    info = {"device": device.type, "torch_version": torch.__version__, "machine": platform.machine()}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        info.update(gpu_name=torch.cuda.get_device_name(device), compute_capability=f"{major}.{minor}",
                    cuda_version=torch.version.cuda)
    return info
