// Exact top-k by inner product: scoring and selection helpers as __host__ __device__ functions.
//
// Included by topk.cu (the GPU kernels) and tests/cuda/topk_harness.cu (the same loops on the CPU, checked against
// lpn_edge/runtime/matching.py:exact_topk). No standard headers (NVRTC).
//
// Order: item a ranks before item b when score_a > score_b, or score_a == score_b and index_a < index_b (ties go
// to the smaller gallery index; -0.0 == +0.0). This is a strict total order on distinct indices, so the top-k and
// its order are unique whatever the reduction order. Index -1 is the empty slot and ranks after every item.

#ifndef LPN_TOPK_SELECT_CUH
#define LPN_TOPK_SELECT_CUH

#include "half_float.cuh"

// Largest k a thread-local list holds (registers / local memory); the Python side refuses larger k on the GPU.
#ifndef LPN_TOPK_MAX
#define LPN_TOPK_MAX 64
#endif

LPN_HD bool lpn_tk_better(float score_a, long long index_a, float score_b, long long index_b) {
    if (index_b < 0) return index_a >= 0;
    if (index_a < 0) return false;
    return score_a > score_b || (score_a == score_b && index_a < index_b);
}

// Insert (score, index) into a list sorted best first, of *count <= k entries; dropped when it would be k+1-th.
LPN_HD void lpn_tk_insert(float* scores, long long* indices, int* count, int k, float score, long long index) {
    if (*count == k && !lpn_tk_better(score, index, scores[k - 1], indices[k - 1])) return;
    int pos = *count < k ? (*count)++ : k - 1;
    while (pos > 0 && lpn_tk_better(score, index, scores[pos - 1], indices[pos - 1])) {
        scores[pos] = scores[pos - 1];
        indices[pos] = indices[pos - 1];
        --pos;
    }
    scores[pos] = score;
    indices[pos] = index;
}

// Partial inner product of an fp16 gallery row (raw bits) with an fp32 query over elements start, start+stride, ...
// When the dimension is even the row is read as fp16 pairs (4-byte loads): element pairs 2j, 2j+1 for
// j = start, start + stride, ...; the row must then start at a 4-byte aligned address (dim even: true for every row
// of a 4-byte aligned gallery).
LPN_HD float lpn_tk_dot_partial(const unsigned short* row, const float* query, int dim, int start, int stride) {
    float acc = 0.0f;
    if (dim % 2 == 0) {
        const unsigned int* pairs = (const unsigned int*)row;
        for (int j = start; j < dim / 2; j += stride) {
            unsigned int pair = pairs[j];
            acc += lpn_half_to_float((unsigned short)(pair & 0xffffu)) * query[2 * j];
            acc += lpn_half_to_float((unsigned short)(pair >> 16)) * query[2 * j + 1];
        }
    } else {
        for (int d = start; d < dim; d += stride) acc += lpn_half_to_float(row[d]) * query[d];
    }
    return acc;
}

#endif  // LPN_TOPK_SELECT_CUH
