// Host-side harness of topk.cu: scoring, per-segment selection and the running merge over gallery chunks, run on
// the CPU through the __host__ __device__ helpers of lpn_edge/runtime/kernels/topk_select.cuh, emulating the
// kernels' warps (32 lanes) and blocks (THREADS threads, thread-local lists, k rounds of block-wide arg-best).
//
//   topk_harness Q G D K THREADS CHUNK QUERY GALLERY INDICES SCORES
//     QUERY float32 (Q, D); GALLERY fp16 bits (G, D); gallery processed in chunks of CHUNK rows, segments of 61
//     rows; INDICES int64 (Q, K) and SCORES float32 (Q, K) written. Exit status 2 on bad arguments or I/O errors.

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "topk_select.cuh"
#include "harness_io.h"

static const int kSegment = 61;  // small, so that every test has several segments per chunk


// lpn_tk_block_select on the host: threads' sorted lists -> k best, popping heads round by round.
static void block_select(const std::vector<std::vector<float> >& scores,
                         const std::vector<std::vector<long long> >& indices, int k, float* out_s, long long* out_i) {
    std::vector<size_t> head(scores.size(), 0);
    for (int j = 0; j < k; ++j) {
        float best_s = 0.0f;
        long long best_i = -1;
        int owner = -1;
        for (size_t t = 0; t < scores.size(); ++t) {
            if (head[t] >= scores[t].size()) continue;
            if (lpn_tk_better(scores[t][head[t]], indices[t][head[t]], best_s, best_i)) {
                best_s = scores[t][head[t]];
                best_i = indices[t][head[t]];
                owner = (int)t;
            }
        }
        out_s[j] = best_s;
        out_i[j] = best_i;
        if (owner >= 0) ++head[owner];
    }
}

// Thread t's local list over element e = t, t + threads, ... < total of a virtual array.
template <typename Get>
static void thread_lists(int threads, long long total, int k, Get get, std::vector<std::vector<float> >* s,
                         std::vector<std::vector<long long> >* i) {
    s->assign(threads, std::vector<float>());
    i->assign(threads, std::vector<long long>());
    for (int t = 0; t < threads; ++t) {
        float ls[LPN_TOPK_MAX];
        long long li[LPN_TOPK_MAX];
        int count = 0;
        for (long long e = t; e < total; e += threads) {
            float score;
            long long index;
            get(e, &score, &index);
            if (index >= 0) lpn_tk_insert(ls, li, &count, k, score, index);
        }
        (*s)[t].assign(ls, ls + count);
        (*i)[t].assign(li, li + count);
    }
}

int main(int argc, char** argv) {
    if (argc != 11) return 2;
    int queries = std::atoi(argv[1]), gallery_rows = std::atoi(argv[2]), dim = std::atoi(argv[3]);
    int k = std::atoi(argv[4]), threads = std::atoi(argv[5]), chunk = std::atoi(argv[6]);
    if (k < 1 || k > LPN_TOPK_MAX || threads < 1 || chunk < 1) return 2;
    std::vector<float> query = read_file<float>(argv[7], (size_t)queries * dim);
    std::vector<unsigned short> gallery = read_file<unsigned short>(argv[8], (size_t)gallery_rows * dim);
    std::vector<float> best_s((size_t)queries * k, 0.0f);
    std::vector<long long> best_i((size_t)queries * k, -1);
    std::vector<std::vector<float> > ls;
    std::vector<std::vector<long long> > li;
    for (int start = 0; start < gallery_rows; start += chunk) {
        int rows = gallery_rows - start < chunk ? gallery_rows - start : chunk;
        // lpn_topk_scores: one warp per row, lanes merged in order
        std::vector<float> scores((size_t)queries * rows);
        for (int q = 0; q < queries; ++q)
            for (int r = 0; r < rows; ++r) {
                float score = 0.0f;
                for (int lane = 0; lane < 32; ++lane)
                    score += lpn_tk_dot_partial(&gallery[((size_t)start + r) * dim], &query[(size_t)q * dim], dim,
                                                lane, 32);
                scores[(size_t)q * rows + r] = score;
            }
        // lpn_topk_segments
        int segments = (rows + kSegment - 1) / kSegment;
        std::vector<float> cand_s((size_t)queries * segments * k);
        std::vector<long long> cand_i((size_t)queries * segments * k);
        for (int q = 0; q < queries; ++q)
            for (int s = 0; s < segments; ++s) {
                long long seg_start = (long long)s * kSegment;
                long long seg_stop = seg_start + kSegment < rows ? seg_start + kSegment : rows;
                thread_lists(threads, seg_stop - seg_start, k, [&](long long e, float* score, long long* index) {
                    *score = scores[(size_t)q * rows + seg_start + e];
                    *index = start + seg_start + e;
                }, &ls, &li);
                size_t out = ((size_t)q * segments + s) * k;
                block_select(ls, li, k, &cand_s[out], &cand_i[out]);
            }
        // lpn_topk_merge
        int count = segments * k;
        bool running = start > 0;
        for (int q = 0; q < queries; ++q) {
            thread_lists(threads, count + (running ? k : 0), k, [&](long long e, float* score, long long* index) {
                *score = e < count ? cand_s[(size_t)q * count + e] : best_s[(size_t)q * k + e - count];
                *index = e < count ? cand_i[(size_t)q * count + e] : best_i[(size_t)q * k + e - count];
            }, &ls, &li);
            block_select(ls, li, k, &best_s[(size_t)q * k], &best_i[(size_t)q * k]);
        }
    }
    write_file(argv[9], best_i);
    write_file(argv[10], best_s);
    return 0;
}
