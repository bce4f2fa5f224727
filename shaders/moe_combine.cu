// The routed experts' weighted sum added to the residual stream: x[t, :] += sum over j of
// weight[t, j] * y[t, j, :] for n tokens with k expert outputs each (in slot order, as the
// CPU sums them). One thread per value. CPU reference: the weighted sum of moe_ffn
// (engine/models/decoder.cpp) plus add_rows.
#include "cuda_check.hpp"
#include "kernels.hpp"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void combine_values(float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ weights,
                               int64_t n, int64_t k, int64_t hidden) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (i >= n * hidden) return;
    const int64_t t = i / hidden, c = i % hidden;
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) sum = fmaf(weights[t * k + j], y[(t * k + j) * hidden + c], sum);
    x[i] += sum;
}

}  // namespace

void moe_combine(float* x, const float* y, const float* weights, int64_t n, int64_t k, int64_t hidden, cudaStream_t stream) {
    if (n <= 0 || hidden <= 0) return;
    combine_values<<<static_cast<unsigned>((n * hidden + kThreads - 1) / kThreads), kThreads, 0, stream>>>(x, y, weights, n, k, hidden);
    check_launch("moe_combine");
}

}  // namespace moepack::cuda
