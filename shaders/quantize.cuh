// The int8 quantisation of one group of an input row (QuantizedInput in kernels.hpp) by one
// warp: the group's sum and largest magnitude reduced by shuffles, scale = largest / 127,
// each value rounded half to even to its code-plane position. The values come from
// value(i), i the column within the group, so that callers may compute them on the fly.
// Device code, shared by quantize_input.cu and rms_norm.cu. CPU reference:
// MatmulInput::prepare.
#pragma once

#include <cstdint>

#include "kernels.hpp"

namespace moepack::cuda::detail {

// Byte of value c within its 32-bit word's slot, in the code-plane order of `bits`-bit codes.
__device__ inline int64_t plane_position(int64_t c, int bits) {
    const int per_word = 32 / bits, planes = 8 / bits;
    const int i = static_cast<int>(c % per_word);
    return c - i + (i % planes) * 4 + i / planes;
}

// Group g of row t of q; lane: the calling thread's lane.
template <typename Value>
__device__ inline void quantize_group(const QuantizedInput& q, int64_t t, int64_t g, int lane, Value value) {
    const int64_t c0 = g * q.group_size, item = t * q.groups + g;
    const int64_t count = min(static_cast<int64_t>(q.group_size), q.cols - c0);
    float sum = 0.0f, largest = 0.0f;
    for (int64_t i = lane; i < count; i += 32) {
        const float v = value(i);
        sum += v;
        largest = fmaxf(largest, fabsf(v));
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        sum += __shfl_xor_sync(0xffffffffu, sum, offset);
        largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
    }
    // zeros (or no usable scale): scale 0 and every code 0
    const float scale = largest > 0.0f && isfinite(largest) ? largest / 127.0f : 0.0f;
    if (lane == 0) {
        q.sums[item] = sum;
        q.scales[item] = scale;
    }
    const float inv = scale != 0.0f ? 1.0f / scale : 0.0f;
    int8_t* out = q.values + t * q.groups * q.group_size;
    for (int64_t i = lane; i < q.group_size; i += 32) {
        const float v = i < count ? fminf(fmaxf(value(i) * inv, -127.0f), 127.0f) : 0.0f;
        out[plane_position(c0 + i, q.bits)] = static_cast<int8_t>(__float2int_rn(v));
    }
}

}  // namespace moepack::cuda::detail
