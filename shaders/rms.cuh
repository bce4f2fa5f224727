// 1 / rms(x) + eps over `dim` values for a block of Threads threads (every thread gets it),
// the sum of squares in float32 reduced by warp shuffles and shared memory. Device code,
// shared by rms_norm.cu and attention_prologue.cu.
#pragma once

#include <cstdint>

namespace moepack::cuda::detail {

template <int Threads>
__device__ inline float inverse_rms(const float* x, int64_t dim, float eps) {
    __shared__ float partial[Threads / 32];
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += Threads) ss = fmaf(x[i], x[i], ss);
    for (int offset = 16; offset > 0; offset >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, offset);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < Threads / 32; ++w) total += partial[w];
    return 1.0f / sqrtf(total / static_cast<float>(dim) + eps);
}

}  // namespace moepack::cuda::detail
