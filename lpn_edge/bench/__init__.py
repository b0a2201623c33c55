"""`lpn-edge bench`: trtexec-style timings of the project's runtime paths against the reference, in one run.

Each part is one module with one job; every figure is measured in the same run, on the same machine, as the
reference it is compared with (interleaved call by call, see `stats.measure`), and reported with the ratio:
    stats       min / median / mean / p90 / p99 / throughput of timing samples; the interleaved timing loop
    machine     what ran: CPU, cores, load average, GPU, library versions, commit, date
    reference   the reference paths: PyTorch eager fp32 `LPN.embed`, the authors' slicing ring pooling
    encode      images -> embeddings through runtime artifacts (ONNX, TensorRT) and checkpoints, vs the reference
    pool        ring pooling: the CUDA kernel, the numpy path, the torch MatMul, vs the reference slicing + a floor
    match       top-k over a synthetic gallery with each engine, vs the memory floor measured in the same run
    locate      the end-to-end loop per frame (decode, preprocess, encode, match over --gallery-size tiles) through
                `Localizer`, with its breakdown, vs the authors' way (PIL, torchvision, eager, matmul + topk)
    train       (GPU) a training step of three views vs the authors' loop
    report      the table (stdout), the JSON document
    profile     (apart from the run) ONNX Runtime's per-node profile of a graph by operator and conv shape, with the
                floor every conv at the fastest shape's rate allows: why a CPU target is missed
`run_bench(options, progress, after_part)` runs the parts not skipped and returns the JSON document: `machine`,
`options`, `results` (one row per figure: part, name, batch, threads, stats, reference, ratio, floor, accuracy),
`skipped` (part, what, reason) and `failed` (part, error: a part that raised, after which the others still ran).
Parts that need what is missing (torch, a GPU, TensorRT, FAISS) are listed in `skipped` with the reason, never
silently left out; `after_part` gets the document after every part (`lpn-edge bench --out`).
"""

from __future__ import annotations

from lpn_edge.bench.options import BenchOptions, run_bench

__all__ = ["BenchOptions", "run_bench"]
