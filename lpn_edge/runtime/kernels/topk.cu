// Exact top-k by inner product over an fp16 gallery on the GPU, fp32 accumulation, deterministic ties.
//
// Shapes and units (row-major, dense):
//   queries   (Q, D) float32 (unit-norm embeddings)        gallery  (G_c, D) IEEE fp16 raw bits, one chunk
//   scores    (Q, G_c) float32 scratch                      k <= LPN_TOPK_MAX (64)
//   candidates (Q, S, k) float32 scores + int64 indices, S = ceil(G_c / segment)
//   best      (Q, k) float32 scores + int64 gallery indices, best first; the running top-k across chunks
// Order: higher score first, equal scores by ascending gallery index (topk_select.cuh); index -1 = empty slot.
//
// Per chunk of the gallery (resident, or streamed from the host in chunks when it does not fit), three launches:
//   1. lpn_topk_scores: one warp per gallery row, 8 rows per 256-thread block, grid.x = ceil(G_c / 8); the row is
//      read once from memory (again from L1 for each further query)
//   2. lpn_topk_segments: grid (S, Q), 256 threads; thread-local top-k over a strided share of the segment, then k
//      rounds of a block-wide arg-best; index_offset (the chunk's first gallery row) makes indices global
//   3. lpn_topk_merge: grid (Q), 256 threads; merges the S*k candidates with the running best (has_running) and
//      overwrites best
// Launch block size is fixed: LPN_TK_BLOCK = 256 threads (a power of two; cuda_kernels.py uses the same).

#include "topk_select.cuh"

#define LPN_TK_BLOCK 256
#define LPN_TK_WARP 32

__device__ __forceinline__ float lpn_tk_warp_sum(float v) {
    for (int offset = LPN_TK_WARP / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

extern "C" __global__ void __launch_bounds__(LPN_TK_BLOCK)
    lpn_topk_scores(const float* __restrict__ queries, const unsigned short* __restrict__ gallery, int num_queries,
                    int rows, int dim, float* __restrict__ scores) {
    long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / LPN_TK_WARP;
    int lane = threadIdx.x % LPN_TK_WARP;
    if (row >= rows) return;  // uniform per warp
    const unsigned short* gallery_row = gallery + row * dim;
    for (int q = 0; q < num_queries; ++q) {
        float score = lpn_tk_warp_sum(lpn_tk_dot_partial(gallery_row, queries + (long long)q * dim, dim, lane,
                                                         LPN_TK_WARP));
        if (lane == 0) scores[(long long)q * rows + row] = score;
    }
}

// k rounds: every thread offers the head of its sorted local list, the block picks the best (tree reduction with
// the strict order of lpn_tk_better), the owner pops it. out_* receive k entries (index -1 when fewer items).
__device__ void lpn_tk_block_select(const float* local_scores, const long long* local_indices, int local_count,
                                    int k, float* out_scores, long long* out_indices) {
    __shared__ float offer_score[LPN_TK_BLOCK];
    __shared__ long long offer_index[LPN_TK_BLOCK];
    __shared__ int offer_thread[LPN_TK_BLOCK];
    int tid = threadIdx.x, head = 0;
    for (int j = 0; j < k; ++j) {
        offer_score[tid] = head < local_count ? local_scores[head] : 0.0f;
        offer_index[tid] = head < local_count ? local_indices[head] : -1;
        offer_thread[tid] = tid;
        __syncthreads();
        for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
            if (tid < stride && lpn_tk_better(offer_score[tid + stride], offer_index[tid + stride], offer_score[tid],
                                              offer_index[tid])) {
                offer_score[tid] = offer_score[tid + stride];
                offer_index[tid] = offer_index[tid + stride];
                offer_thread[tid] = offer_thread[tid + stride];
            }
            __syncthreads();
        }
        if (tid == 0) {
            out_scores[j] = offer_score[0];
            out_indices[j] = offer_index[0];
        }
        if (offer_thread[0] == tid && offer_index[0] >= 0) ++head;
        __syncthreads();  // everyone has read slot 0 before the next round overwrites it
    }
}

extern "C" __global__ void __launch_bounds__(LPN_TK_BLOCK)
    lpn_topk_segments(const float* __restrict__ scores, int num_queries, int rows, int k, int segment,
                      long long index_offset, float* __restrict__ candidate_scores,
                      long long* __restrict__ candidate_indices) {
    float local_scores[LPN_TOPK_MAX];
    long long local_indices[LPN_TOPK_MAX];
    int count = 0, query = blockIdx.y, segments = gridDim.x;
    if (query >= num_queries) return;  // uniform per block
    long long start = (long long)blockIdx.x * segment;
    long long stop = start + segment < rows ? start + segment : rows;
    const float* row_scores = scores + (long long)query * rows;
    for (long long i = start + threadIdx.x; i < stop; i += blockDim.x)
        lpn_tk_insert(local_scores, local_indices, &count, k, row_scores[i], index_offset + i);
    long long out = ((long long)query * segments + blockIdx.x) * k;
    lpn_tk_block_select(local_scores, local_indices, count, k, candidate_scores + out, candidate_indices + out);
}

extern "C" __global__ void __launch_bounds__(LPN_TK_BLOCK)
    lpn_topk_merge(const float* __restrict__ candidate_scores, const long long* __restrict__ candidate_indices,
                   int num_queries, int count, int k, int has_running, float* best_scores, long long* best_indices) {
    float local_scores[LPN_TOPK_MAX];
    long long local_indices[LPN_TOPK_MAX];
    int local_count = 0, query = blockIdx.x;
    if (query >= num_queries) return;
    const float* scores = candidate_scores + (long long)query * count;
    const long long* indices = candidate_indices + (long long)query * count;
    float* best_s = best_scores + (long long)query * k;
    long long* best_i = best_indices + (long long)query * k;
    int total = count + (has_running ? k : 0);
    for (int e = threadIdx.x; e < total; e += blockDim.x) {
        float s = e < count ? scores[e] : best_s[e - count];
        long long i = e < count ? indices[e] : best_i[e - count];
        if (i >= 0) lpn_tk_insert(local_scores, local_indices, &local_count, k, s, i);
    }
    __syncthreads();  // the running best is read by all before thread 0 overwrites it
    lpn_tk_block_select(local_scores, local_indices, local_count, k, best_s, best_i);
}
