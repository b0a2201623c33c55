// LPN partition pooling + heads + normalisation on the GPU: two launches, no host round trip.
//
// Launch 1, lpn_ring_pool_<dtype>_<layout> (dtype f32 | f16, layout nchw | nhwc):
//   map     (N, C, H, W) or (N, H, W, C), float or IEEE fp16 (passed as raw unsigned short bits), dense
//   mirror  same shape and type, or NULL: the map of the horizontally mirrored image (test-time flip); each map is
//           pooled on its own and the two pooled values are summed (exact for max pooling too)
//   pooled  (N, C_out, n) float32 out, C_out = C for avg or max, 2C for avg+max (avg channels first)
//   kind    0 ring, 1 ring_outer_first, 2 row, 3 column; pool 0 avg, 1 max, 2 avg+max
//   nchw: one warp per (image, channel) plane, 8 warps per 256-thread block: grid.x = ceil(N * C / 8)
//   nhwc: one thread per (image, channel), lanes along channels (coalesced): grid.x = ceil(N * C / 256)
//   Accumulation in fp32. Exact semantics: ring_geometry.cuh and lpn_edge/runtime/ring_pool.py.
//
// Launch 2, lpn_heads_normalise:
//   pooled  (N, C_out, n) float32; weight (n, B, C_out) float32, BatchNorm folded in; bias (n, B) float32
//   embedding (N, B * n) float32 out, index = b * n + p:
//   y[b, p] = weight[p, b, :] . pooled[:, p] + bias_scale * bias[p, b]; each part divided by max(||y_p||, 1e-12)
//   * sqrt(n). One 256-thread block per (part, image): grid = (n, N); one warp per output channel b.
//
// Block size is fixed at 256 threads (LPN_BLOCK); the Python side (cuda_kernels.py) uses the same constant.

#include "ring_geometry.cuh"

#define LPN_BLOCK 256
#define LPN_WARP 32

__device__ __forceinline__ float lpn_warp_sum(float v) {
    for (int offset = LPN_WARP / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float lpn_warp_max(float v) {
    for (int offset = LPN_WARP / 2; offset > 0; offset >>= 1) {
        float other = __shfl_xor_sync(0xffffffffu, v, offset);
        v = other > v ? other : v;
    }
    return v;
}

template <typename T>
__device__ __forceinline__ void lpn_ring_pool_nchw(const T* __restrict__ map, const T* __restrict__ mirror,
                                                   float* __restrict__ pooled, int batch, int channels, int height,
                                                   int width, int kind, int parts, int pool) {
    long long plane = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / LPN_WARP;
    int lane = threadIdx.x % LPN_WARP;
    if (plane >= (long long)batch * channels) return;  // uniform per warp: the shuffles below see 32 lanes
    int image = (int)(plane / channels), channel = (int)(plane % channels);
    LpnGeometry g = lpn_make_geometry(kind, parts, height, width);
    for (int part = 0; part < parts; ++part) {
        LpnPartBoxes boxes = lpn_part_boxes(g, part);
        LpnAcc acc = lpn_part_partial(map, LPN_LAYOUT_NCHW, image, channel, channels, g, boxes, lane, LPN_WARP);
        acc.sum = lpn_warp_sum(acc.sum);
        acc.max = lpn_warp_max(acc.max);
        LpnAcc flip = lpn_acc_empty();
        if (mirror != 0) {
            flip = lpn_part_partial(mirror, LPN_LAYOUT_NCHW, image, channel, channels, g, boxes, lane, LPN_WARP);
            flip.sum = lpn_warp_sum(flip.sum);
            flip.max = lpn_warp_max(flip.max);
        }
        if (lane == 0)
            lpn_store_pooled(pooled, pool, image, channel, channels, part, parts, lpn_part_area(boxes), acc,
                             mirror != 0, flip);
    }
}

template <typename T>
__device__ __forceinline__ void lpn_ring_pool_nhwc(const T* __restrict__ map, const T* __restrict__ mirror,
                                                   float* __restrict__ pooled, int batch, int channels, int height,
                                                   int width, int kind, int parts, int pool) {
    long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (item >= (long long)batch * channels) return;
    int image = (int)(item / channels), channel = (int)(item % channels);
    LpnGeometry g = lpn_make_geometry(kind, parts, height, width);
    for (int part = 0; part < parts; ++part) {
        LpnPartBoxes boxes = lpn_part_boxes(g, part);
        LpnAcc acc = lpn_part_partial(map, LPN_LAYOUT_NHWC, image, channel, channels, g, boxes, 0, 1);
        LpnAcc flip = lpn_acc_empty();
        if (mirror != 0) flip = lpn_part_partial(mirror, LPN_LAYOUT_NHWC, image, channel, channels, g, boxes, 0, 1);
        lpn_store_pooled(pooled, pool, image, channel, channels, part, parts, lpn_part_area(boxes), acc,
                         mirror != 0, flip);
    }
}

#define LPN_POOL_KERNEL(NAME, T, LAYOUT)                                                                         \
    extern "C" __global__ void __launch_bounds__(LPN_BLOCK)                                                      \
        NAME(const T* __restrict__ map, const T* __restrict__ mirror, float* __restrict__ pooled, int batch,     \
             int channels, int height, int width, int kind, int parts, int pool) {                               \
        lpn_ring_pool_##LAYOUT<T>(map, mirror, pooled, batch, channels, height, width, kind, parts, pool);       \
    }

LPN_POOL_KERNEL(lpn_ring_pool_f32_nchw, float, nchw)
LPN_POOL_KERNEL(lpn_ring_pool_f16_nchw, unsigned short, nchw)
LPN_POOL_KERNEL(lpn_ring_pool_f32_nhwc, float, nhwc)
LPN_POOL_KERNEL(lpn_ring_pool_f16_nhwc, unsigned short, nhwc)

extern "C" __global__ void __launch_bounds__(LPN_BLOCK)
    lpn_heads_normalise(const float* __restrict__ pooled, const float* __restrict__ weight,
                        const float* __restrict__ bias, float bias_scale, int batch, int in_channels, int parts,
                        int bottleneck, float* __restrict__ embedding) {
    __shared__ float warp_squares[LPN_BLOCK / LPN_WARP];
    __shared__ float divisor;
    int part = blockIdx.x, image = blockIdx.y;
    int warp = threadIdx.x / LPN_WARP, lane = threadIdx.x % LPN_WARP, warps = blockDim.x / LPN_WARP;
    if (image >= batch) return;  // uniform per block
    const float* column = pooled + lpn_pooled_index(image, 0, part, in_channels, parts);
    float squares = 0.0f;
    for (int b = warp; b < bottleneck; b += warps) {
        const float* row = weight + ((long long)part * bottleneck + b) * in_channels;
        float y = lpn_warp_sum(lpn_head_dot_partial(row, column, parts, in_channels, lane, LPN_WARP));
        y += bias_scale * bias[(long long)part * bottleneck + b];
        if (lane == 0) {
            embedding[lpn_embedding_index(image, b, part, bottleneck, parts)] = y;
            squares += y * y;
        }
    }
    if (lane == 0) warp_squares[warp] = squares;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (int w = 0; w < warps; ++w) total += warp_squares[w];
        divisor = lpn_norm_divisor(total, parts);
    }
    __syncthreads();
    if (lane == 0)  // each lane 0 rescales the values it wrote itself
        for (int b = warp; b < bottleneck; b += warps)
            embedding[lpn_embedding_index(image, b, part, bottleneck, parts)] /= divisor;
}
