// Block-wide sums: block_sum, and 1 / rms(x) + eps over `dim` values for a block of Threads
// threads (every thread gets it), the sum of squares in float32. Device code, shared by
// rms_norm.cu, attention_prologue.cu and gated_deltanet.cu.
#pragma once

#include <cstdint>

namespace moepack::cuda::detail {

// The sum of v over a block of Threads threads, in every thread: warp shuffles, then the
// warps' partial sums (partial: Threads / 32 floats of shared memory) added in warp order.
// Every thread of the block must call it; partial is free again when it returns.
template <int Threads>
__device__ inline float block_sum(float v, float* partial) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < Threads / 32; ++w) total += partial[w];
    __syncthreads();
    return total;
}

template <int Threads>
__device__ inline float inverse_rms(const float* x, int64_t dim, float eps) {
    __shared__ float partial[Threads / 32];
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += Threads) ss = fmaf(x[i], x[i], ss);
    return 1.0f / sqrtf(block_sum<Threads>(ss, partial) / static_cast<float>(dim) + eps);
}

}  // namespace moepack::cuda::detail
