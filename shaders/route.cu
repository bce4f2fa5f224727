// Top-k routing of n tokens: from router logits [n, E], the k experts with the largest
// logits (ties to the lower index) and their weights: softmax over all E then the chosen k
// (renormalised over them when asked), or softmax over the chosen k alone; times a scaling
// factor. One warp per token, several tokens per block: the token's logits in shared
// memory, k warp-wide argmax passes (shuffles only, no block barriers), the chosen weights
// kept beside the logits until the sum is known. CPU reference: route (engine/blocks.cpp).
#include <algorithm>

#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"

namespace moepack::cuda {
namespace {

constexpr int kMaxWarps = 8;                      // tokens per block
constexpr size_t kSharedBytes = 48 * 1024;

struct Best {
    float value;
    int index;
};

__device__ inline Best better(Best a, Best b) {
    return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

// The largest of s[0 .. count) and its index, in every lane.
__device__ inline Best warp_argmax(const float* s, int count, int lane) {
    Best best{-INFINITY, 0x7fffffff};
    for (int i = lane; i < count; i += 32) best = better(best, Best{s[i], i});
    for (int offset = 16; offset > 0; offset >>= 1)
        best = better(best, Best{__shfl_xor_sync(0xffffffffu, best.value, offset), __shfl_xor_sync(0xffffffffu, best.index, offset)});
    return best;
}

__device__ inline float warp_total(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__global__ void route_tokens(const float* __restrict__ logits, int64_t n, int num_experts, int k, bool softmax_first,
                             bool normalize, float scaling, int32_t* __restrict__ experts, float* __restrict__ weights) {
    detail::wait_for_inputs();
    extern __shared__ float shared[];   // per warp: the logits [num_experts], then the chosen weights [k]
    const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
    const int64_t t = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + warp;
    if (t >= n) return;
    float* s = shared + static_cast<int64_t>(warp) * (num_experts + k);
    float* chosen = s + num_experts;
    const float* row = logits + t * num_experts;
    for (int i = lane; i < num_experts; i += 32) s[i] = row[i];
    __syncwarp();
    const float max_logit = warp_argmax(s, num_experts, lane).value;
    float total = 0.0f;   // sum of exp over all experts (softmax first)
    for (int i = lane; i < num_experts; i += 32) total += expf(s[i] - max_logit);
    total = warp_total(total);
    int32_t* e_out = experts + t * k;
    float* w_out = weights + t * k;
    float sum = 0.0f;   // of the chosen, in the order chosen
    for (int j = 0; j < k; ++j) {
        const Best b = warp_argmax(s, num_experts, lane);
        const float w = expf(b.value - max_logit);   // unnormalised
        sum += w;
        __syncwarp();   // every lane has read s before the choice is struck out
        if (lane == 0) {
            e_out[j] = b.index;
            chosen[j] = w;
            s[b.index] = -INFINITY;
        }
        __syncwarp();
    }
    const float denominator = softmax_first && !normalize ? total : sum;
    for (int j = lane; j < k; j += 32) w_out[j] = chosen[j] / denominator * scaling;
}

}  // namespace

void route(const float* logits, int64_t n, int64_t num_experts, int64_t k, RouteFunction function, bool normalize_topk,
           float scaling_factor, int32_t* experts, float* weights, cudaStream_t stream) {
    if (n <= 0) return;
    if (k < 1 || k > num_experts) fail("route: top-", k, " of ", num_experts, " experts");
    const auto per_token = static_cast<size_t>(num_experts + k) * sizeof(float);
    if (per_token > kSharedBytes) fail("route: ", num_experts, " experts exceed the kernel's shared memory");
    const int warps = static_cast<int>(std::min<size_t>(kMaxWarps, kSharedBytes / per_token));
    const int64_t blocks = (n + warps - 1) / warps;
    if (blocks > 2147483647) fail("route: ", n, " tokens in one launch");
    detail::launch(route_tokens, static_cast<unsigned>(blocks), warps * 32, per_token * static_cast<size_t>(warps), stream, logits, n,
                   static_cast<int>(num_experts), static_cast<int>(k), function == RouteFunction::softmax_topk, normalize_topk,
                   scaling_factor, experts, weights);
    check_launch("route");
}

}  // namespace moepack::cuda
