// Inputs of affine products quantised to int8 per group (QuantizedInput in kernels.hpp):
// one warp per (vector, group) reduces the group's sum and largest magnitude, then writes
// each value's int8 code to its code-plane position. CPU reference: MatmulInput::prepare
// (engine/cpu/matmul.cpp), whose rounding rule this follows.
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"

namespace moepack::cuda {
namespace {

constexpr int kWarps = 8;

int64_t align16(int64_t bytes) { return (bytes + 15) / 16 * 16; }

// Byte of value c within its 32-bit word's slot, in the code-plane order of `bits`-bit codes.
__device__ inline int64_t plane_position(int64_t c, int bits) {
    const int per_word = 32 / bits, planes = 8 / bits;
    const int i = static_cast<int>(c % per_word);
    return c - i + (i % planes) * 4 + i / planes;
}

__global__ void __launch_bounds__(kWarps * 32)
    quantize_groups(const float* __restrict__ x, QuantizedInput q) {
    detail::wait_for_inputs();
    const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    if (item >= q.n * q.groups) return;
    const int lane = threadIdx.x % 32;
    const int64_t t = item / q.groups, g = item % q.groups, c0 = g * q.group_size;
    const float* xg = x + t * q.cols + c0;
    const int64_t count = min(static_cast<int64_t>(q.group_size), q.cols - c0);
    float sum = 0.0f, largest = 0.0f;
    for (int64_t i = lane; i < count; i += 32) {
        sum += xg[i];
        largest = fmaxf(largest, fabsf(xg[i]));
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
        const float v = i < count ? fminf(fmaxf(xg[i] * inv, -127.0f), 127.0f) : 0.0f;
        out[plane_position(c0 + i, q.bits)] = static_cast<int8_t>(__float2int_rn(v));
    }
}

}  // namespace

size_t quantized_input_bytes(int64_t n, int64_t cols, int group_size) {
    const int64_t groups = (cols + group_size - 1) / group_size;
    return static_cast<size_t>(align16(n * groups * group_size) + 2 * align16(n * groups * 4));
}

QuantizedInput quantized_input_in(void* memory, int64_t n, int64_t cols, int group_size, int bits) {
    if (group_size <= 0 || group_size % 32 != 0 || (bits != 2 && bits != 4 && bits != 8))
        fail("quantized input: ", bits, "-bit codes in groups of ", group_size, " (expected 2, 4 or 8 bits, groups of 32k)");
    if (reinterpret_cast<uintptr_t>(memory) % 16 != 0) fail("quantized input: memory not 16-byte aligned");
    QuantizedInput q;
    q.n = n, q.cols = cols, q.group_size = group_size, q.bits = bits;
    q.groups = (cols + group_size - 1) / group_size;
    auto* p = static_cast<char*>(memory);
    q.values = reinterpret_cast<int8_t*>(p);
    p += align16(n * q.padded());
    q.scales = reinterpret_cast<float*>(p);
    p += align16(n * q.groups * 4);
    q.sums = reinterpret_cast<float*>(p);
    return q;
}

void quantize_input(const float* x, const QuantizedInput& q, cudaStream_t stream) {
    const int64_t items = q.n * q.groups;
    if (items <= 0) return;
    detail::launch(quantize_groups, static_cast<unsigned>((items + kWarps - 1) / kWarps), kWarps * 32, 0, stream, x, q);
    check_launch("quantize_input");
}

}  // namespace moepack::cuda
