"""Runtime: the artifact contract and the backends that run exported models, without torch, torchvision or onnx.

What a drone needs (numpy, Pillow, and ONNX Runtime or TensorRT + cuda-python/pycuda) and nothing of the build side:
the export stage imports this package to write what it reads, never the reverse. Modules, one concern each:
    artifact        metadata every artifact carries; reading it (ONNX via onnxruntime, sidecars); engine checks
    preprocessing   file or (H, W, 3) uint8 frame -> (N, 3, H, W) float32; decoding; ImageNet constants
    split_heads     split export: feature map -> embedding in numpy (folded heads + ring matrix), .npz I/O
    onnx_runner     ONNX Runtime sessions on chosen providers ("cuda", "cpu", ...), the provider used reported
    trt_engine      running a serialized TensorRT engine; the machine description its sidecar is checked against
    cuda_buffers    the one CUDA memory layer: buffers, copies, streams, graphs (cuda-python or pycuda)
    batching        feeding a bounded batch range (TensorRT profiles, pt2 packages)
    ring_pool       the CUDA kernel's computation in numpy: ring pooling + heads + normalisation (the CPU path)
    cuda_kernels    CUDA kernels (ring pooling, top-k) compiled on the target and cached, their buffers from
                    cuda_buffers; RingPoolKernel, GpuMatcher
    encoder         the Encoder protocol every backend implements (embed, info); the input contract (model_input)
    encoders        open_encoder: artifact -> Encoder (ONNX Runtime, split graph + numpy heads; dispatches below)
    gpu_encoders    TensorRT engines and split backbones pooled by the CUDA kernel on the device (CUDA graphs)
    gallery         the .lpnidx gallery index: memory-mapped, checksummed, merged from shards
    index_build     streaming, resumable gallery builds
    tables          CSV tables with a header (geo.csv, flight truth): one reader, one set of messages
    matching        exact top-k by inner product in numpy and FAISS, one tie rule (the GPU one in cuda_kernels)
    match_engines   open_matcher: the numpy, FAISS or GPU engine behind one search()
    frames          the frames of `locate`: image files, folders, video (PyAV); undecodable frames named, skipped
    localize        Localizer: frame -> top-k tiles + position estimate over one or several gallery indexes
The `.pt` / `.pt2` workstation encoders import torch and live outside, in `lpn_edge.torch_encoders`.
Nothing is imported here: `import lpn_edge.runtime.preprocessing` costs numpy and Pillow only.
"""
