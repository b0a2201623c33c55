// Ring-pooling index arithmetic and per-part loops, as __host__ __device__ functions.
//
// Included by ring_pool.cu (the GPU kernels) and by tests/cuda/ring_geometry_harness.cu (the same loops run on the
// CPU, checked against lpn_edge/runtime/ring_pool.py). Everything a kernel computes besides launch configuration,
// warp shuffles and shared memory lives here, so a CPU build can check it.
//
// Semantics (DESIGN.md section 3, lpn_edge/model/partition.py), per axis of input length L with n parts:
//   ring kinds: L' = L + 2 * (n - floor(L / 2)) when L < 2n (bilinear resize: align_corners=True for "ring",
//   False for "ring_outer_first"), else L' = L; c = floor(L' / 2), per = floor(L' / (2n));
//   box j < n-1 is [c - (j+1)*per, c + (j+1)*per), box n-1 is [0, L'); ring j = box j minus box j-1 (both axes).
//   "ring" lists parts centre outwards, "ring_outer_first" border inwards.
//   row / column: strip p covers [floor(p*L/n), ceil((p+1)*L/n)) (torch adaptive pooling; strips may overlap).
//   avg = sum over the part's cells / area of the part's OUTER box; max = max over the part's own cells.
//
// No standard headers: the file must also compile with NVRTC. Types: float, int, long long, unsigned short (the
// raw bits of an IEEE fp16 value). Offsets are long long.

#ifndef LPN_RING_GEOMETRY_CUH
#define LPN_RING_GEOMETRY_CUH

#include "half_float.cuh"

// Partition kinds, pooling modes and layouts: the integers the Python side passes (ring_pool.py mirrors them).
#define LPN_KIND_RING 0
#define LPN_KIND_RING_OUTER_FIRST 1
#define LPN_KIND_ROW 2
#define LPN_KIND_COLUMN 3
#define LPN_POOL_AVG 0
#define LPN_POOL_MAX 1
#define LPN_POOL_AVG_MAX 2
#define LPN_LAYOUT_NCHW 0
#define LPN_LAYOUT_NHWC 1

// ---------------------------------------------------------------------------------------------------------------
// Scalars

LPN_HD float lpn_load(const float* data, long long offset) { return data[offset]; }
LPN_HD float lpn_load(const unsigned short* data, long long offset) { return lpn_half_to_float(data[offset]); }

// Element offset of (image, channel, y, x) in a dense NCHW or NHWC map of C channels and H x W cells.
LPN_HD long long lpn_offset(int layout, int image, int channel, int y, int x, int channels, int height, int width) {
    if (layout == LPN_LAYOUT_NHWC)
        return (((long long)image * height + y) * width + x) * channels + channel;
    return (((long long)image * channels + channel) * height + y) * width + x;
}

// ---------------------------------------------------------------------------------------------------------------
// Geometry of one axis and of the map

struct LpnAxis {
    int in_len;         // L, the input map's length along this axis
    int len;            // L', the pooled grid's length (L' > L only when a ring map is resized)
    int centre;         // floor(L' / 2)
    int per;            // floor(L' / (2n)), >= 1 for ring kinds
    int align_corners;  // resize convention (1: "ring", 0: "ring_outer_first")
    float scale;        // source coordinate scale of the resize (torch's area_pixel_compute_scale)
};

struct LpnGeometry {
    int kind;
    int parts;
    LpnAxis y;
    LpnAxis x;
};

LPN_HD int lpn_is_ring_kind(int kind) { return kind == LPN_KIND_RING || kind == LPN_KIND_RING_OUTER_FIRST; }

// The authors' resize rule: L / (2n) < 1  <=>  L < 2n.
LPN_HD int lpn_ring_resized_size(int length, int parts) {
    return length < 2 * parts ? length + 2 * (parts - length / 2) : length;
}

LPN_HD LpnAxis lpn_make_axis(int kind, int length, int parts) {
    LpnAxis axis;
    axis.in_len = length;
    axis.len = lpn_is_ring_kind(kind) ? lpn_ring_resized_size(length, parts) : length;
    axis.centre = axis.len / 2;
    axis.per = axis.len / (2 * parts);
    axis.align_corners = kind == LPN_KIND_RING ? 1 : 0;
    if (axis.align_corners)
        axis.scale = axis.len > 1 ? (float)(length - 1) / (float)(axis.len - 1) : 0.0f;
    else
        axis.scale = (float)length / (float)axis.len;
    return axis;
}

LPN_HD LpnGeometry lpn_make_geometry(int kind, int parts, int height, int width) {
    LpnGeometry geometry;
    geometry.kind = kind;
    geometry.parts = parts;
    geometry.y = lpn_make_axis(kind, height, parts);
    geometry.x = lpn_make_axis(kind, width, parts);
    return geometry;
}

LPN_HD int lpn_is_resized(const LpnGeometry& g) { return g.y.len != g.y.in_len || g.x.len != g.x.in_len; }

// Source taps of output coordinate `dst` along a resized axis, exactly as torch's CPU upsample_bilinear2d:
// src = scale * dst (align corners) or max(scale * (dst + 0.5) - 0.5, 0); i0 = min(floor(src), L - 1);
// w1 = clamp(src - i0, 0, 1); i1 = i0 + (i0 < L - 1); w0 = 1 - w1. An axis that is not resized is the identity.
LPN_HD void lpn_resize_source(const LpnAxis& axis, int dst, int* i0, int* i1, float* w0, float* w1) {
    if (axis.len == axis.in_len) {
        *i0 = dst;
        *i1 = dst;
        *w0 = 1.0f;
        *w1 = 0.0f;
        return;
    }
    float src = axis.align_corners ? axis.scale * (float)dst : axis.scale * ((float)dst + 0.5f) - 0.5f;
    if (!axis.align_corners && src < 0.0f) src = 0.0f;
    int index = (int)src;  // src >= 0: truncation is floor
    if (index > axis.in_len - 1) index = axis.in_len - 1;
    float lambda = src - (float)index;
    lambda = lambda < 0.0f ? 0.0f : (lambda > 1.0f ? 1.0f : lambda);
    *i0 = index;
    *i1 = index + (index < axis.in_len - 1 ? 1 : 0);
    *w1 = lambda;
    *w0 = 1.0f - lambda;
}

// Ring index (0 = centre) of a coordinate of the pooled grid along one axis: the smallest j whose box holds it.
LPN_HD int lpn_axis_ring(const LpnAxis& axis, int coord, int parts) {
    int distance = coord >= axis.centre ? coord - axis.centre : axis.centre - 1 - coord;
    int ring = distance / axis.per;
    return ring < parts - 1 ? ring : parts - 1;
}

// Part index of a pooled-grid cell for ring kinds (each cell is in exactly one ring); -1 for strip kinds, where a
// cell can be in two strips (use lpn_part_boxes).
LPN_HD int lpn_ring_of_cell(const LpnGeometry& g, int y, int x) {
    if (!lpn_is_ring_kind(g.kind)) return -1;
    int ry = lpn_axis_ring(g.y, y, g.parts), rx = lpn_axis_ring(g.x, x, g.parts);
    int ring = ry > rx ? ry : rx;
    return g.kind == LPN_KIND_RING_OUTER_FIRST ? g.parts - 1 - ring : ring;
}

// [start, stop) of ring box j along one axis.
LPN_HD void lpn_axis_box(const LpnAxis& axis, int j, int parts, int* start, int* stop) {
    if (j >= parts - 1) {
        *start = 0;
        *stop = axis.len;
    } else {
        *start = axis.centre - (j + 1) * axis.per;
        *stop = axis.centre + (j + 1) * axis.per;
    }
}

// [start, stop) of strip p along an axis of length L: torch adaptive pooling bounds.
LPN_HD void lpn_strip(int length, int p, int parts, int* start, int* stop) {
    *start = (p * length) / parts;
    *stop = ((p + 1) * length + parts - 1) / parts;
}

// Boxes of part `part` on the pooled grid, as [y0, y1) x [x0, x1): the part is the outer box minus the inner box
// (an empty inner box, y0 == y1, for the centre ring and for strips). The avg divisor is the outer box's area.
struct LpnPartBoxes {
    int oy0, oy1, ox0, ox1;  // outer box
    int iy0, iy1, ix0, ix1;  // inner box (excluded)
};

LPN_HD LpnPartBoxes lpn_part_boxes(const LpnGeometry& g, int part) {
    LpnPartBoxes b;
    b.iy0 = b.iy1 = b.ix0 = b.ix1 = 0;
    if (g.kind == LPN_KIND_ROW) {
        lpn_strip(g.y.len, part, g.parts, &b.oy0, &b.oy1);
        b.ox0 = 0;
        b.ox1 = g.x.len;
    } else if (g.kind == LPN_KIND_COLUMN) {
        b.oy0 = 0;
        b.oy1 = g.y.len;
        lpn_strip(g.x.len, part, g.parts, &b.ox0, &b.ox1);
    } else {
        int ring = g.kind == LPN_KIND_RING_OUTER_FIRST ? g.parts - 1 - part : part;
        lpn_axis_box(g.y, ring, g.parts, &b.oy0, &b.oy1);
        lpn_axis_box(g.x, ring, g.parts, &b.ox0, &b.ox1);
        if (ring > 0) {
            lpn_axis_box(g.y, ring - 1, g.parts, &b.iy0, &b.iy1);
            lpn_axis_box(g.x, ring - 1, g.parts, &b.ix0, &b.ix1);
        }
    }
    return b;
}

LPN_HD int lpn_box_count(const LpnPartBoxes& b) { return (b.oy1 - b.oy0) * (b.ox1 - b.ox0); }

LPN_HD float lpn_part_area(const LpnPartBoxes& b) { return (float)lpn_box_count(b); }

// Cell t (row-major over the outer box) of a part: false when it lies in the inner box (not part of the ring).
LPN_HD bool lpn_box_cell(const LpnPartBoxes& b, int t, int* y, int* x) {
    int width = b.ox1 - b.ox0;
    *y = b.oy0 + t / width;
    *x = b.ox0 + t % width;
    return !(*y >= b.iy0 && *y < b.iy1 && *x >= b.ix0 && *x < b.ix1);
}

// ---------------------------------------------------------------------------------------------------------------
// Values and accumulation

// Value of pooled-grid cell (y, x) of one (image, channel) plane: a load, or the bilinear mix of four loads
// h0 * (w0 * v00 + w1 * v01) + h1 * (w0 * v10 + w1 * v11) when the map is resized.
template <typename T>
LPN_HD float lpn_sample(const T* map, int layout, int image, int channel, int channels, const LpnGeometry& g,
                        int y, int x) {
    int height = g.y.in_len, width = g.x.in_len;
    if (!lpn_is_resized(g)) return lpn_load(map, lpn_offset(layout, image, channel, y, x, channels, height, width));
    int y0, y1, x0, x1;
    float h0, h1, w0, w1;
    lpn_resize_source(g.y, y, &y0, &y1, &h0, &h1);
    lpn_resize_source(g.x, x, &x0, &x1, &w0, &w1);
    float v00 = lpn_load(map, lpn_offset(layout, image, channel, y0, x0, channels, height, width));
    float v01 = lpn_load(map, lpn_offset(layout, image, channel, y0, x1, channels, height, width));
    float v10 = lpn_load(map, lpn_offset(layout, image, channel, y1, x0, channels, height, width));
    float v11 = lpn_load(map, lpn_offset(layout, image, channel, y1, x1, channels, height, width));
    return h0 * (w0 * v00 + w1 * v01) + h1 * (w0 * v10 + w1 * v11);
}

struct LpnAcc {
    float sum;  // fp32 sum over the visited cells
    float max;  // max over the visited cells (-inf when none)
};

LPN_HD LpnAcc lpn_acc_empty() {
    LpnAcc acc;
    acc.sum = 0.0f;
    acc.max = lpn_neg_inf();
    return acc;
}

LPN_HD LpnAcc lpn_acc_merge(LpnAcc a, LpnAcc b) {
    a.sum += b.sum;
    a.max = b.max > a.max ? b.max : a.max;
    return a;
}

// Partial sum and max of one part of one (image, channel) plane over the cells t = start, start + stride, ... of
// the part's outer box (inner-box cells skipped). One thread: start 0, stride 1; a warp: start lane, stride 32,
// then the 32 partials are merged with lpn_acc_merge.
template <typename T>
LPN_HD LpnAcc lpn_part_partial(const T* map, int layout, int image, int channel, int channels, const LpnGeometry& g,
                               const LpnPartBoxes& boxes, int start, int stride) {
    LpnAcc acc = lpn_acc_empty();
    int count = lpn_box_count(boxes);
    for (int t = start; t < count; t += stride) {
        int y, x;
        if (!lpn_box_cell(boxes, t, &y, &x)) continue;
        float v = lpn_sample(map, layout, image, channel, channels, g, y, x);
        acc.sum += v;
        acc.max = v > acc.max ? v : acc.max;
    }
    return acc;
}

// Flat index of pooled[image, channel, part] in the (N, C_out, n) fp32 output, C_out = C (avg or max) or 2C
// (avg+max: avg channels first, then max).
LPN_HD long long lpn_pooled_index(int image, int channel, int part, int out_channels, int parts) {
    return ((long long)image * out_channels + channel) * parts + part;
}

// Write the pooled values of one (image, channel, part) from the complete accumulators of the map and, when
// `has_mirror`, of the mirror map: pooled = pool(map) + pool(mirror) (test-time flip; the heads then use
// bias_scale = 2). avg = sum / outer-box area per map.
LPN_HD void lpn_store_pooled(float* pooled, int pool, int image, int channel, int channels, int part, int parts,
                             float area, LpnAcc acc, int has_mirror, LpnAcc mirror) {
    int out_channels = pool == LPN_POOL_AVG_MAX ? 2 * channels : channels;
    float avg = acc.sum / area, max = acc.max;
    if (has_mirror) {
        avg += mirror.sum / area;
        max += mirror.max;
    }
    if (pool == LPN_POOL_AVG || pool == LPN_POOL_AVG_MAX)
        pooled[lpn_pooled_index(image, channel, part, out_channels, parts)] = avg;
    if (pool == LPN_POOL_MAX)
        pooled[lpn_pooled_index(image, channel, part, out_channels, parts)] = max;
    if (pool == LPN_POOL_AVG_MAX)
        pooled[lpn_pooled_index(image, channels + channel, part, out_channels, parts)] = max;
}

// ---------------------------------------------------------------------------------------------------------------
// Heads and normalisation

// Partial dot product of weight row W[p, b, :] (contiguous, C_out floats) with pooled[image, :, p] (stride n) over
// c = start, start + stride, ...
LPN_HD float lpn_head_dot_partial(const float* weight_row, const float* pooled_column, int parts, int in_channels,
                                  int start, int stride) {
    float acc = 0.0f;
    for (int c = start; c < in_channels; c += stride) acc += weight_row[c] * pooled_column[(long long)c * parts];
    return acc;
}

// Divisor of a part's bottleneck values: max(||y_p||, 1e-12) * sqrt(n), as lpn_edge.model.lpn.normalise_parts.
LPN_HD float lpn_norm_divisor(float sum_of_squares, int parts) {
    float norm = sqrtf(sum_of_squares);
    return (norm > 1e-12f ? norm : 1e-12f) * sqrtf((float)parts);
}

// Flat index of embedding[image, b * n + p] in the (N, B * n) output (the official layout).
LPN_HD long long lpn_embedding_index(int image, int channel, int part, int bottleneck, int parts) {
    return (long long)image * bottleneck * parts + (long long)channel * parts + part;
}

#endif  // LPN_RING_GEOMETRY_CUH
