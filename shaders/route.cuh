// Top-k routing of one token by one warp, shared by the routing launch (route.cu) and the
// experts' gate+up launch that routes for itself (expert_ffn.cu): the token's logits in
// shared memory, k warp-wide argmax passes (shuffles only, no block barriers), the chosen
// weights kept beside the logits until the sum is known. Ties go to the lower index. CPU
// reference: route (engine/blocks.cpp). Device code.
#pragma once

#include "cuda_check.hpp"
#include "kernels.hpp"

namespace moepack::cuda::detail {

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

// How a token is routed: the k of num_experts to choose and how to weigh them.
struct RouteRule {
    int num_experts, k;
    bool softmax_first;   // softmax over all experts, then the top k (else softmax over the k)
    bool normalize;       // softmax first: the chosen weights renormalised to sum to 1
    float scaling;
};

// The rule of a route() call, checked.
inline RouteRule route_rule(int64_t num_experts, int64_t k, RouteFunction function, bool normalize_topk, float scaling_factor) {
    if (k < 1 || k > num_experts) fail("route: top-", k, " of ", num_experts, " experts");
    if (num_experts > 65536) fail("route: ", num_experts, " experts");
    return RouteRule{static_cast<int>(num_experts), static_cast<int>(k), function == RouteFunction::softmax_topk, normalize_topk,
                     scaling_factor};
}

// Shared memory route_in_warp needs per token, in floats.
__host__ __device__ inline int route_scratch_floats(const RouteRule& rule) { return rule.num_experts + rule.k; }

// The whole warp routes `logits` [num_experts]: experts[j] and weights[j] for j < k (any
// memory; written by lanes 0 .. 31 after the warp's last shuffle). scratch:
// route_scratch_floats of shared memory.
__device__ inline void route_in_warp(const float* __restrict__ logits, const RouteRule& rule, float* scratch, int lane,
                                     int32_t* experts, float* weights) {
    float* s = scratch;
    float* chosen = s + rule.num_experts;
    for (int i = lane; i < rule.num_experts; i += 32) s[i] = logits[i];
    __syncwarp();
    const float max_logit = warp_argmax(s, rule.num_experts, lane).value;
    float total = 0.0f;   // sum of exp over all experts (softmax first)
    for (int i = lane; i < rule.num_experts; i += 32) total += expf(s[i] - max_logit);
    total = warp_total(total);
    float sum = 0.0f;   // of the chosen, in the order chosen
    for (int j = 0; j < rule.k; ++j) {
        const Best b = warp_argmax(s, rule.num_experts, lane);
        const float w = expf(b.value - max_logit);   // unnormalised
        sum += w;
        __syncwarp();   // every lane has read s before the choice is struck out
        if (lane == 0) {
            experts[j] = b.index;
            chosen[j] = w;
            s[b.index] = -INFINITY;
        }
        __syncwarp();
    }
    const float denominator = rule.softmax_first && !rule.normalize ? total : sum;
    for (int j = lane; j < rule.k; j += 32) weights[j] = chosen[j] / denominator * rule.scaling;
}

}  // namespace moepack::cuda::detail
