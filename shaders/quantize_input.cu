// Inputs of affine products quantised to int8 per group (QuantizedInput in kernels.hpp):
// one warp per (vector, group) (quantize.cuh). CPU reference: MatmulInput::prepare
// (engine/cpu/matmul.cpp), whose rounding rule this follows.
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "quantize.cuh"

namespace moepack::cuda {
namespace {

constexpr int kWarps = 8;

int64_t align16(int64_t bytes) { return (bytes + 15) / 16 * 16; }

__global__ void __launch_bounds__(kWarps * 32)
    quantize_groups(const float* __restrict__ x, QuantizedInput q) {
    detail::wait_for_inputs();
    const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    if (item >= q.n * q.groups) return;
    const int64_t t = item / q.groups, g = item % q.groups;
    const float* xg = x + t * q.cols + g * q.group_size;
    detail::quantize_group(q, t, g, static_cast<int>(threadIdx.x % 32), [&](int64_t i) { return xg[i]; });
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
