// The linear-attention layer of qwen3_next and qwen3_5_moe (Gated DeltaNet), on the pack's
// normalised weights (Qwen3.5's layout; Qwen3-Next's grouped projections are split at pack
// time). Per token, with nk key heads and nv value heads (r = nv / nk), dk/dv head sizes:
//   [q | k | v] = in_proj_qkv . x, through a causal depthwise convolution (kernel K, SiLU),
//   q, k l2-normalised per head (q also scaled by dk^-1/2); value head h reads key head h / r;
//   beta = sigmoid(in_proj_b . x), g = -exp(A_log) * softplus(in_proj_a . x + dt_bias);
//   S (dk x dv, per value head, float32): S *= exp(g); S += k (x) ((v - S^T k) * beta); o = S^T q
//   out = out_proj . (rmsnorm(o) * norm.weight * silu(in_proj_z . x))
// A prompt's projections run batched; the convolution and the recurrence run token by token
// over the batch, heads in parallel. The state carries across calls.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/matmul.hpp"
#include "models/delta_rule_shape.hpp"
#include "model_config.hpp"

namespace moepack::engine {

class DenseWeights;
class LayerCompute;
class ThreadPool;

// Floats of one layer's recurrent state: the convolution's last K - 1 inputs per channel and
// one S per value head.
int64_t gated_deltanet_state_floats(const ModelConfig& c);

// The layer's steps between its input and output products, on plain arrays (also the CPU
// references of the CUDA kernels, shaders/gated_deltanet.cu).
//
// out [n, C] = silu(causal depthwise convolution) of mixed [n, C] (kernel K, weight
// [C, K]) after the K - 1 rows conv_state [K - 1, C] holds, oldest first; conv_state
// becomes the last K - 1 inputs.
void gated_deltanet_convolve(ThreadPool& pool, const float* mixed, int64_t n, int64_t channels, int64_t kernel,
                             const float* weight, float* conv_state, float* out);

// The model's delta-rule shape (its linear-attention config and RMSNorm epsilon).
DeltaRuleShape delta_rule_shape(const ModelConfig& c);
// The delta rule of n tokens over the convolution's output x [n, C] (C = 2 nk dk + nv dv:
// q, k, v heads): q and k l2-normalised per key head in place (q also scaled by dk^-1/2);
// per value head v (key head v / (nv / nk)), token by token, beta = sigmoid(b), decay =
// exp(-exp(a_log) * softplus(a + dt_bias)), S [dk, dv] *= decay, delta = (v - S^T k) beta,
// S += k (x) delta, o = S^T q; then o = rmsnorm(o) * norm * silu(z) per head.
// b, a [n, nv]; a_log, dt_bias [nv]; z, o [n, nv dv]; norm [dv]; S [nv, dk, dv], updated;
// scratch [nv, dv] (each head's S^T k, then its delta).
void gated_deltanet_recur(ThreadPool& pool, const DeltaRuleShape& shape, float* x, int64_t n, const float* b, const float* a,
                          const float* a_log, const float* dt_bias, const float* z, const float* norm, float* S, float* o,
                          float* scratch);

class GatedDeltaNet {
public:
    // Binds layer `layer`'s weights; throws naming a missing or misshapen tensor.
    GatedDeltaNet(const ModelConfig& c, const DenseWeights& w, int64_t layer);

    // out [n, H] = the layer's mixing of the normed inputs h [n, H] that follow the tokens
    // `state` (gated_deltanet_state_floats values) has seen; updates `state`.
    void forward(LayerCompute& compute, const float* h, int64_t n, float* state, float* out);

private:
    int64_t hidden_;
    DeltaRuleShape shape_;
    int64_t kernel_, channels_;
    // in_proj_qkv [channels, H], in_proj_z [nv * dv, H], in_proj_b / in_proj_a [nv, H],
    // out_proj [H, nv * dv]
    WeightMatrix qkv_, z_, b_, a_, out_;
    const float* conv_ = nullptr;      // [channels, K]
    const float* a_log_ = nullptr;     // [nv]
    const float* dt_bias_ = nullptr;   // [nv]
    const float* norm_ = nullptr;      // [dv]
    std::vector<float> mixed_, conv_out_, gate_z_, beta_, decay_, o_;   // per batch
    std::vector<float> delta_;   // [nv * dv]: gated_deltanet_recur's scratch
};

}  // namespace moepack::engine
