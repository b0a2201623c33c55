// Host-side harness: the ring-pooling kernels' loops run on the CPU through the same __host__ __device__
// functions (lpn_edge/runtime/kernels/ring_geometry.cuh), looping over the grid the kernels would launch.
// Built by tests/test_cuda_host_harness.py with nvcc; inputs and outputs are raw little-endian binary files.
//
//   harness half OUT                          OUT: float32[65536], lpn_half_to_float of every bit pattern
//   harness cells KIND H W N OUT              OUT: int32[4 + H'*W' + 8n]: H', W', resized?, 0, ring_of_cell of
//                                             every pooled-grid cell, then each part's outer and inner box
//   harness pool KIND POOL LAYOUT DTYPE MODE N C H W PARTS MAP MIRROR OUT
//                                             MODE: thread (the nhwc kernel: one thread per (image, channel)) or
//                                             warp (the nchw kernel: 32 lanes strided over each part's box, then
//                                             merged); MAP/MIRROR: float32 or fp16 bits, MIRROR "-" for none;
//                                             OUT: float32 (N, C_out, n)
//   harness heads N CIN PARTS B BIAS_SCALE POOLED WEIGHT BIAS OUT
//                                             one block per (part, image), 8 warps, 32 lanes each, as
//                                             lpn_heads_normalise; OUT: float32 (N, B * n)
// Exit status 0 on success, 2 on bad arguments or I/O errors.

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ring_geometry.cuh"
#include "harness_io.h"

static const int kWarp = 32;
static const int kWarps = 8;


static int code(const char* value, const char* const* names, int count) {
    for (int i = 0; i < count; ++i)
        if (std::strcmp(value, names[i]) == 0) return i;
    std::fprintf(stderr, "unknown value %s\n", value);
    std::exit(2);
}

static const char* const kKinds[] = {"ring", "ring_outer_first", "row", "column"};
static const char* const kPools[] = {"avg", "max", "avg+max"};
static const char* const kLayouts[] = {"nchw", "nhwc"};

template <typename T>
static void pool(const T* map, const T* mirror, float* pooled, int batch, int channels, int height, int width,
                 int kind, int parts, int pool_mode, int layout, bool warp_mode) {
    LpnGeometry g = lpn_make_geometry(kind, parts, height, width);
    for (int image = 0; image < batch; ++image)
        for (int channel = 0; channel < channels; ++channel)
            for (int part = 0; part < parts; ++part) {
                LpnPartBoxes boxes = lpn_part_boxes(g, part);
                LpnAcc acc = lpn_acc_empty(), flip = lpn_acc_empty();
                int lanes = warp_mode ? kWarp : 1;
                for (int lane = 0; lane < lanes; ++lane) {
                    acc = lpn_acc_merge(acc, lpn_part_partial(map, layout, image, channel, channels, g, boxes, lane,
                                                              lanes));
                    if (mirror)
                        flip = lpn_acc_merge(flip, lpn_part_partial(mirror, layout, image, channel, channels, g,
                                                                    boxes, lane, lanes));
                }
                lpn_store_pooled(pooled, pool_mode, image, channel, channels, part, parts, lpn_part_area(boxes), acc,
                                 mirror != 0, flip);
            }
}

int main(int argc, char** argv) {
    if (argc < 2) return 2;
    std::string command = argv[1];
    if (command == "half" && argc == 3) {
        std::vector<float> out(65536);
        for (int bits = 0; bits < 65536; ++bits) out[bits] = lpn_half_to_float((unsigned short)bits);
        write_file(argv[2], out);
        return 0;
    }
    if (command == "cells" && argc == 7) {
        int kind = code(argv[2], kKinds, 4), height = std::atoi(argv[3]), width = std::atoi(argv[4]);
        int parts = std::atoi(argv[5]);
        LpnGeometry g = lpn_make_geometry(kind, parts, height, width);
        std::vector<int> out = {g.y.len, g.x.len, lpn_is_resized(g), 0};
        for (int y = 0; y < g.y.len; ++y)
            for (int x = 0; x < g.x.len; ++x) out.push_back(lpn_ring_of_cell(g, y, x));
        for (int part = 0; part < parts; ++part) {
            LpnPartBoxes b = lpn_part_boxes(g, part);
            int values[8] = {b.oy0, b.oy1, b.ox0, b.ox1, b.iy0, b.iy1, b.ix0, b.ix1};
            out.insert(out.end(), values, values + 8);
        }
        write_file(argv[6], out);
        return 0;
    }
    if (command == "pool" && argc == 15) {
        int kind = code(argv[2], kKinds, 4), pool_mode = code(argv[3], kPools, 3);
        int layout = code(argv[4], kLayouts, 2);
        bool half = std::strcmp(argv[5], "f16") == 0, warp_mode = std::strcmp(argv[6], "warp") == 0;
        int batch = std::atoi(argv[7]), channels = std::atoi(argv[8]), height = std::atoi(argv[9]);
        int width = std::atoi(argv[10]), parts = std::atoi(argv[11]);
        bool has_mirror = std::strcmp(argv[13], "-") != 0;
        size_t count = (size_t)batch * channels * height * width;
        int out_channels = pool_mode == LPN_POOL_AVG_MAX ? 2 * channels : channels;
        std::vector<float> pooled((size_t)batch * out_channels * parts, std::nanf(""));
        if (half) {
            std::vector<unsigned short> map = read_file<unsigned short>(argv[12], count), mirror;
            if (has_mirror) mirror = read_file<unsigned short>(argv[13], count);
            pool(map.data(), has_mirror ? mirror.data() : (const unsigned short*)0, pooled.data(), batch, channels,
                 height, width, kind, parts, pool_mode, layout, warp_mode);
        } else {
            std::vector<float> map = read_file<float>(argv[12], count), mirror;
            if (has_mirror) mirror = read_file<float>(argv[13], count);
            pool(map.data(), has_mirror ? mirror.data() : (const float*)0, pooled.data(), batch, channels, height,
                 width, kind, parts, pool_mode, layout, warp_mode);
        }
        write_file(argv[14], pooled);
        return 0;
    }
    if (command == "heads" && argc == 11) {
        int batch = std::atoi(argv[2]), in_channels = std::atoi(argv[3]), parts = std::atoi(argv[4]);
        int bottleneck = std::atoi(argv[5]);
        float bias_scale = (float)std::atof(argv[6]);
        std::vector<float> pooled = read_file<float>(argv[7], (size_t)batch * in_channels * parts);
        std::vector<float> weight = read_file<float>(argv[8], (size_t)parts * bottleneck * in_channels);
        std::vector<float> bias = read_file<float>(argv[9], (size_t)parts * bottleneck);
        std::vector<float> embedding((size_t)batch * bottleneck * parts, std::nanf(""));
        for (int image = 0; image < batch; ++image)
            for (int part = 0; part < parts; ++part) {  // one block
                const float* column = pooled.data() + lpn_pooled_index(image, 0, part, in_channels, parts);
                float warp_squares[kWarps];
                for (int warp = 0; warp < kWarps; ++warp) {
                    float squares = 0.0f;
                    for (int b = warp; b < bottleneck; b += kWarps) {
                        const float* row = weight.data() + ((long long)part * bottleneck + b) * in_channels;
                        float y = 0.0f;
                        for (int lane = 0; lane < kWarp; ++lane)
                            y += lpn_head_dot_partial(row, column, parts, in_channels, lane, kWarp);
                        y += bias_scale * bias[(size_t)part * bottleneck + b];
                        embedding[lpn_embedding_index(image, b, part, bottleneck, parts)] = y;
                        squares += y * y;
                    }
                    warp_squares[warp] = squares;
                }
                float total = 0.0f;
                for (int warp = 0; warp < kWarps; ++warp) total += warp_squares[warp];
                float divisor = lpn_norm_divisor(total, parts);
                for (int b = 0; b < bottleneck; ++b)
                    embedding[lpn_embedding_index(image, b, part, bottleneck, parts)] /= divisor;
            }
        write_file(argv[10], embedding);
        return 0;
    }
    std::fprintf(stderr, "usage: see the comment at the top of ring_geometry_harness.cu\n");
    return 2;
}
