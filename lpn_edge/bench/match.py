"""Matching: exact top-k of 1 and of 64 queries over a synthetic (G, D) fp16 gallery of random unit rows, with each
engine `open_matcher` offers here (numpy, FAISS when installed, the GPU top-k when a device answers), against the
memory floor measured in the same run: the time to read the gallery once (CPU: a uint64 sum over its bytes; GPU:
its bytes over the device copy bandwidth). On the GPU the reference's own method is timed too: torch matmul of
fp16 queries with the resident gallery + torch.topk (the authors' evaluate_gpu.py approach).
Every engine is checked to return the numpy engine's indices before it is timed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lpn_edge.bench.options import BenchOptions, Results, cuda_or_reason
from lpn_edge.bench.stats import measure, summarise

FLOOR = "memory floor (read the gallery once)"


def synthetic_gallery(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gallery = np.empty((rows, dim), np.float16)
    for start in range(0, rows, 8192):  # bounded temporary memory
        block = rng.standard_normal((min(8192, rows - start), dim), dtype=np.float32)
        gallery[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return gallery


def embedding_dim(options: BenchOptions) -> int:
    if options.dim is not None:
        return options.dim
    from lpn_edge.bench.artifacts import artifact_info, find_reference

    for model in options.models:
        dim = artifact_info(model).get("embedding_dim")
        if dim:
            return int(dim)
    reference = find_reference(options)
    if reference is not None:
        try:
            from lpn_edge.checkpoint import checkpoint_config, read_checkpoint

            return checkpoint_config(read_checkpoint(reference), reference).model.embedding_dim
        except ImportError:
            pass
    return 2048


def run(options: BenchOptions, results: Results, progress: Callable[[str], None]) -> None:
    from lpn_edge.errors import LpnEdgeError
    from lpn_edge.runtime.match_engines import open_matcher

    dim = embedding_dim(options)
    progress(f"match: building a {options.gallery_size} x {dim} fp16 gallery")
    gallery = synthetic_gallery(options.gallery_size, dim)
    words = gallery.reshape(-1).view(np.uint64)
    engines = {"numpy": open_matcher(gallery, "numpy")}  # with --device cuda: the GPU engine's expected answer
    if not options.cpu_rows:
        results.skip("match", "CPU rows", "--device cuda: GPU rows only")
    else:
        try:
            engines["faiss"] = open_matcher(gallery, "faiss")
        except LpnEdgeError as error:
            results.skip("match", "faiss engine", str(error))
    gpu_torch, no_gpu = cuda_or_reason(options.device)
    if gpu_torch is None:
        results.skip("match", "gpu engine and torch matmul + topk on the GPU", no_gpu)
    else:
        try:
            engines["gpu"] = open_matcher(gallery, "gpu")
        except LpnEdgeError as error:
            results.skip("match", "gpu engine", str(error))
    k = min(options.k, options.gallery_size)
    for count in options.queries:
        queries = gallery[np.arange(count) * 7919 % options.gallery_size].astype(np.float32) + np.float32(0.01)
        expected = engines["numpy"].search(queries, k)[0]
        functions = {FLOOR: words.sum}
        for name, engine in list(engines.items()):
            if name != "numpy" and not np.array_equal(engine.search(queries, k)[0], expected):
                results.skip("match", f"{name} engine, {count} queries", "returned other indices than numpy")
                if name == "gpu":
                    engines.pop("gpu").close()
                continue
            if name == "gpu":
                continue  # timed beside the torch reference on the device, below
            functions[f"{name} engine"] = lambda e=engine, q=queries: e.search(q, k)
        if options.cpu_rows:
            cpu_rows(options, results, progress, functions, count, dim, k)
        if gpu_torch is not None:
            gpu_reference(options, results, progress, gpu_torch, gallery, queries, k, engines.get("gpu"))
    for engine in engines.values():
        if hasattr(engine, "close"):
            engine.close()


def cpu_rows(options, results, progress, functions, count: int, dim: int, k: int) -> None:
    """Time the CPU engines of one query count beside the memory floor (`functions` holds both)."""
    progress(f"match: {count} quer{'y' if count == 1 else 'ies'} x {options.gallery_size}: {', '.join(functions)}")
    times = measure(functions, options.iters, options.warmup)
    floor_stats = summarise(times.pop(FLOOR))
    results.add("match", FLOOR, floor_stats, device="cpu", queries=count, gallery=options.gallery_size, dim=dim,
                reference_row=True)
    for name, samples in times.items():
        results.add("match", name, summarise(samples, count), device="cpu", queries=count,
                    gallery=options.gallery_size, dim=dim, k=k, floor_ms=floor_stats["median_ms"])


def gpu_reference(options, results, progress, torch, gallery, queries, k, engine) -> None:
    """On the GPU: torch matmul + topk over the resident fp16 gallery (the reference), the GPU engine, and the floor
    (gallery bytes / device copy bandwidth)."""
    from lpn_edge.bench.pool import device_copy_bandwidth

    bandwidth = device_copy_bandwidth(torch)
    floor_ms = gallery.nbytes / bandwidth * 1e3
    resident = torch.from_numpy(gallery).cuda()
    device_queries = torch.from_numpy(queries).cuda().half()
    on_device, round_trip = "torch matmul + topk (reference)", "torch matmul + topk (host queries in, host results out)"

    def torch_round_trip():  # the same work as the engine's call: queries from the host, results to the host
        scores, indices = torch.topk(torch.from_numpy(queries).cuda().half() @ resident.T, k, dim=1)
        return scores.float().cpu().numpy(), indices.cpu().numpy()

    functions = {on_device: lambda: torch.topk(device_queries @ resident.T, k, dim=1), round_trip: torch_round_trip}
    if engine is not None:
        functions["gpu engine (host queries in, host results out)"] = lambda: engine.search(queries, k)
    with torch.inference_mode():
        times = measure(functions, options.iters, options.warmup, sync=torch.cuda.synchronize)
    common = {"device": "cuda", "queries": len(queries), "gallery": len(gallery), "floor_ms": floor_ms}
    results.add("match", on_device, summarise(times.pop(on_device), len(queries)), reference_row=True,
                bandwidth_gb_s=bandwidth / 1e9, **common)
    # the engine's ratio is to the torch call that does the same work, host copies included
    reference = results.add("match", round_trip, summarise(times.pop(round_trip), len(queries)), reference_row=True,
                            **common)
    for name, samples in times.items():
        results.add("match", name, summarise(samples, len(queries)), reference=reference, **common)
    torch.cuda.empty_cache()
