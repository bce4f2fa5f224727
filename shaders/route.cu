// Top-k routing of n tokens: from router logits [n, E], the k experts with the largest
// logits (ties to the lower index) and their weights: softmax over all E then the chosen k
// (renormalised over them when asked), or softmax over the chosen k alone; times a scaling
// factor. One warp per token (route.cuh), several tokens per block. CPU reference: route
// (engine/blocks.cpp).
#include <algorithm>

#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "route.cuh"

namespace moepack::cuda {
namespace {

constexpr int kMaxWarps = 8;                      // tokens per block
constexpr size_t kSharedBytes = 48 * 1024;

__global__ void route_tokens(const float* __restrict__ logits, int64_t n, detail::RouteRule rule, int32_t* __restrict__ experts,
                             float* __restrict__ weights) {
    detail::wait_for_inputs();
    extern __shared__ float shared[];   // per warp: route_scratch_floats
    const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
    const int64_t t = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + warp;
    if (t >= n) return;
    detail::route_in_warp(logits + t * rule.num_experts, rule, shared + static_cast<int64_t>(warp) * detail::route_scratch_floats(rule),
                          lane, experts + t * rule.k, weights + t * rule.k);
}

}  // namespace

void route(const float* logits, int64_t n, int64_t num_experts, int64_t k, RouteFunction function, bool normalize_topk,
           float scaling_factor, int32_t* experts, float* weights, cudaStream_t stream) {
    if (n <= 0) return;
    const detail::RouteRule rule = detail::route_rule(num_experts, k, function, normalize_topk, scaling_factor);
    const auto per_token = static_cast<size_t>(detail::route_scratch_floats(rule)) * sizeof(float);
    if (per_token > kSharedBytes) fail("route: ", num_experts, " experts exceed the kernel's shared memory");
    const int warps = static_cast<int>(std::min<size_t>(kMaxWarps, kSharedBytes / per_token));
    const int64_t blocks = (n + warps - 1) / warps;
    if (blocks > 2147483647) fail("route: ", n, " tokens in one launch");
    detail::launch(route_tokens, static_cast<unsigned>(blocks), warps * 32, per_token * static_cast<size_t>(warps), stream, logits, n,
                   rule, experts, weights);
    check_launch("route");
}

}  // namespace moepack::cuda
