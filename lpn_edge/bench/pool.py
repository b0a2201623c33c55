"""Ring pooling of (B, C, h, w) feature maps (the model's: 2048 x 16 x 16 for ResNet-50 at 256 px, 4 parts).

CPU: the runtime's numpy path (`ring_pool.pool_parts`), the model's one-MatMul torch form (`pool_parts_matmul`)
and the authors' slicing (`reference.slicing_ring_pool`, the reference), plus the memory floor: the time to read
the map once (a uint64 sum over its bytes), measured in the same run.
GPU: `RingPoolKernel` (pooling launch alone, and pooling + heads + normalisation) on a map already on the device,
the torch MatMul and the reference slicing on the GPU, fp32 and fp16; the floor is the map's bytes over the device
copy bandwidth measured in the same run (a device-to-device copy of a 1 GiB buffer reads and writes each byte).
The results of the fast paths are checked against the reference before timing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lpn_edge.bench.options import BenchOptions, Results, cuda_or_reason, torch_or_reason
from lpn_edge.bench.stats import measure, summarise

CHANNELS, HEIGHT, WIDTH, PARTS = 2048, 16, 16, 4
REFERENCE = "authors' slicing (torch)"


def host_read_floor(array: np.ndarray, iters: int) -> float:
    """Median ms to read `array` once from memory on the CPU (a uint64 sum over its bytes; one thread)."""
    words = array.reshape(-1).view(np.uint64)
    times = measure({"floor": words.sum}, iters, 1)["floor"]
    return summarise(times)["median_ms"]


def run(options: BenchOptions, results: Results, progress: Callable[[str], None]) -> None:
    from lpn_edge.runtime.ring_pool import pool_parts

    torch, no_torch = torch_or_reason()
    if torch is None:
        results.skip("pool", REFERENCE + " and the torch MatMul", no_torch)
    rng = np.random.default_rng(0)
    if not options.cpu_rows:
        results.skip("pool", "CPU rows", "--device cuda: GPU rows only")
    for batch in options.batch if options.cpu_rows else ():
        feature_map = rng.random((batch, CHANNELS, HEIGHT, WIDTH), dtype=np.float32)
        floor = host_read_floor(feature_map, max(3, options.iters))
        functions = {"numpy (runtime CPU path)": lambda m=feature_map: pool_parts(m, PARTS, "ring")}
        if torch is not None:
            from lpn_edge.bench.reference import slicing_ring_pool
            from lpn_edge.model.partition import pool_parts_matmul

            torch.set_num_threads(min(options.threads))  # pooling is a small op: one thread, as the numpy path
            tensor = torch.from_numpy(feature_map)
            ours = pool_parts(feature_map, PARTS, "ring")
            theirs = slicing_ring_pool(tensor, PARTS)[..., 0].numpy()
            # same parts in either order (theirs lists the outermost ring first)
            if not (np.allclose(ours, theirs, atol=1e-5) or np.allclose(ours, theirs[..., ::-1], atol=1e-5)):
                results.skip("pool", "cpu check", "the numpy pooling does not match the authors' slicing")
            functions["torch MatMul (model)"] = lambda t=tensor: pool_parts_matmul(t, PARTS, "ring")
            functions[REFERENCE] = lambda t=tensor: slicing_ring_pool(t, PARTS)
        progress(f"pool: cpu, batch {batch}: {', '.join(functions)}")
        with _no_grad(torch):
            times = measure(functions, options.iters, options.warmup)
        reference = None
        if REFERENCE in times:
            reference = results.add("pool", REFERENCE, summarise(times[REFERENCE], batch), device="cpu", batch=batch,
                                    threads=min(options.threads), floor_ms=floor, reference_row=True)
        for name, samples in times.items():
            if name != REFERENCE:
                results.add("pool", name, summarise(samples, batch), reference=reference, device="cpu", batch=batch,
                            threads=min(options.threads), floor_ms=floor)
    gpu_torch, no_gpu = cuda_or_reason(options.device)
    if gpu_torch is None:
        results.skip("pool", "GPU rows (RingPoolKernel, torch MatMul and slicing on the GPU)", no_gpu)
        return
    gpu_part(options, results, progress, gpu_torch)


class _no_grad:
    def __init__(self, torch) -> None:
        self.context = torch.inference_mode() if torch is not None else None

    def __enter__(self):
        return self.context.__enter__() if self.context is not None else None

    def __exit__(self, *exc):
        return self.context.__exit__(*exc) if self.context is not None else None


def device_copy_bandwidth(torch, nbytes: int = 1 << 30, iters: int = 10) -> float:
    """Bytes per second the device sustains reading (a device-to-device copy reads and writes every byte: 2 x)."""
    source = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    times = measure({"copy": lambda: target.copy_(source)}, iters, 2, sync=torch.cuda.synchronize)["copy"]
    return 2 * nbytes / (summarise(times)["median_ms"] / 1e3)


def gpu_part(options: BenchOptions, results: Results, progress: Callable[[str], None], torch) -> None:
    from lpn_edge.bench.reference import slicing_ring_pool
    from lpn_edge.model.partition import partition_matrix

    try:
        from lpn_edge.runtime.cuda_kernels import RingPoolKernel
        kernel_error = None
    except ImportError as error:  # pragma: no cover - numpy-only import; kept for safety
        RingPoolKernel, kernel_error = None, str(error)
    bandwidth = device_copy_bandwidth(torch)
    rng = np.random.default_rng(0)
    bottleneck = 512
    weight = (rng.standard_normal((PARTS, bottleneck, CHANNELS), dtype=np.float32) / np.sqrt(CHANNELS))
    bias = rng.standard_normal((PARTS, bottleneck), dtype=np.float32) * np.float32(0.1)
    kernel = None
    if RingPoolKernel is not None:
        try:
            kernel = RingPoolKernel(weight, bias)
        except Exception as error:  # noqa: BLE001 - no pycuda / cuda-python, or a compile failure: said, not hidden
            kernel_error = f"{type(error).__name__}: {error}"
    if kernel is None:
        results.skip("pool", "RingPoolKernel", kernel_error or "unavailable")
    for batch in options.batch:
        for dtype, code in ((torch.float32, "f32"), (torch.float16, "f16")):
            feature_map = torch.rand(batch, CHANNELS, HEIGHT, WIDTH, device="cuda", dtype=dtype)
            floor = feature_map.numel() * feature_map.element_size() / bandwidth * 1e3
            # the ring matrix on the device once, as the model holds it (a buffer moved with the model)
            ring = partition_matrix("ring", HEIGHT, WIDTH, PARTS).to(device="cuda", dtype=dtype)
            functions = {REFERENCE: lambda m=feature_map: slicing_ring_pool(m, PARTS),
                         "torch MatMul (model)": lambda m=feature_map, w=ring: m.flatten(2) @ w}
            if kernel is not None:
                embedding = torch.empty(batch, bottleneck * PARTS, device="cuda", dtype=torch.float32)
                pooled = torch.empty(batch, CHANNELS, PARTS, device="cuda", dtype=torch.float32)
                launches = kernel.plan(feature_map.data_ptr(), batch, HEIGHT, WIDTH, dtype=code, layout="nchw",
                                       pooled=pooled.data_ptr(), embedding=embedding.data_ptr())

                def pool_only(launch=launches[0]):
                    kernel.backend.launch(kernel._functions[launch.kernel], launch.grid, launch.block,
                                          list(launch.args))

                functions["RingPoolKernel pooling launch"] = pool_only
                functions["RingPoolKernel pool + heads + normalise"] = (
                    lambda m=feature_map, e=embedding, b=batch, c=code: kernel.pool_and_embed_device(
                        m.data_ptr(), b, HEIGHT, WIDTH, e.data_ptr(), dtype=c))
            progress(f"pool: gpu {code}, batch {batch}: {', '.join(functions)}")
            with torch.inference_mode():
                times = measure(functions, options.iters, options.warmup, sync=torch.cuda.synchronize)
            reference = results.add("pool", REFERENCE, summarise(times[REFERENCE], batch), device="cuda",
                                    batch=batch, precision=code, floor_ms=floor, reference_row=True,
                                    bandwidth_gb_s=bandwidth / 1e9)
            # pool + heads + normalise also reads the fp32 heads and writes the embedding: its floor counts them
            heads_bytes = weight.nbytes + bias.nbytes + batch * bottleneck * PARTS * 4
            for name, samples in times.items():
                if name != REFERENCE:
                    row_floor = floor + (heads_bytes / bandwidth * 1e3 if "heads" in name else 0.0)
                    results.add("pool", name, summarise(samples, batch), reference=reference, device="cuda",
                                batch=batch, precision=code, floor_ms=row_floor)
    if kernel is not None:
        kernel.close()
