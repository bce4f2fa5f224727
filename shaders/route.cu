// Top-k routing of n tokens: from router logits [n, E], the k experts with the largest
// logits (ties to the lower index) and their weights: softmax over all E then the chosen k
// (renormalised over them when asked), or softmax over the chosen k alone; times a scaling
// factor. One block per token: the logits in shared memory, k block-wide argmax passes.
// CPU reference: route (engine/blocks.cpp).
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 256;

struct Best {
    float value;
    int index;
};

__device__ inline Best better(Best a, Best b) {
    return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

__device__ Best block_argmax(const float* s, int count, Best* warp_best) {
    Best best{-INFINITY, 0x7fffffff};
    for (int i = threadIdx.x; i < count; i += kThreads) best = better(best, Best{s[i], i});
    for (int offset = 16; offset > 0; offset >>= 1)
        best = better(best, Best{__shfl_xor_sync(0xffffffffu, best.value, offset), __shfl_xor_sync(0xffffffffu, best.index, offset)});
    if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = best;
    __syncthreads();
    Best all = warp_best[0];
    for (int w = 1; w < kThreads / 32; ++w) all = better(all, warp_best[w]);
    __syncthreads();
    return all;
}

__global__ void __launch_bounds__(kThreads) route_tokens(const float* __restrict__ logits, int num_experts, int k,
                                                         bool softmax_first, bool normalize, float scaling,
                                                         int32_t* __restrict__ experts, float* __restrict__ weights) {
    detail::wait_for_inputs();
    extern __shared__ float s[];   // num_experts
    __shared__ Best warp_best[kThreads / 32];
    __shared__ float partial[kThreads / 32];
    const float* row = logits + static_cast<int64_t>(blockIdx.x) * num_experts;
    for (int i = threadIdx.x; i < num_experts; i += kThreads) s[i] = row[i];
    __syncthreads();
    const float max_logit = block_argmax(s, num_experts, warp_best).value;
    float total = 0.0f;   // sum of exp over all experts (softmax first)
    for (int i = threadIdx.x; i < num_experts; i += kThreads) total += expf(s[i] - max_logit);
    for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(0xffffffffu, total, offset);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = total;
    __syncthreads();
    total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
    int32_t* e_out = experts + static_cast<int64_t>(blockIdx.x) * k;
    float* w_out = weights + static_cast<int64_t>(blockIdx.x) * k;
    for (int j = 0; j < k; ++j) {
        const Best b = block_argmax(s, num_experts, warp_best);
        if (threadIdx.x == 0) {
            e_out[j] = b.index;
            w_out[j] = expf(b.value - max_logit);   // unnormalised
            s[b.index] = -INFINITY;
        }
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    float chosen = 0.0f;
    for (int j = 0; j < k; ++j) chosen += w_out[j];
    const float denominator = softmax_first && !normalize ? total : chosen;
    for (int j = 0; j < k; ++j) w_out[j] = w_out[j] / denominator * scaling;
}

}  // namespace

void route(const float* logits, int64_t n, int64_t num_experts, int64_t k, RouteFunction function, bool normalize_topk,
           float scaling_factor, int32_t* experts, float* weights, cudaStream_t stream) {
    if (n <= 0) return;
    if (k < 1 || k > num_experts) fail("route: top-", k, " of ", num_experts, " experts");
    const auto shared = static_cast<size_t>(num_experts) * sizeof(float);
    if (shared > 48 * 1024) fail("route: ", num_experts, " experts exceed the kernel's shared memory");
    detail::launch(route_tokens, static_cast<unsigned>(n), kThreads, shared, stream,
        logits, static_cast<int>(num_experts), static_cast<int>(k), function == RouteFunction::softmax_topk, normalize_topk,
        scaling_factor, experts, weights);
    check_launch("route");
}

}  // namespace moepack::cuda
