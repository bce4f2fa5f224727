// Building blocks shared by every model graph, on float32 activations: RMSNorm, rotary
// position embedding, causal attention over the KV cache, SwiGLU, and top-k expert
// selection. Each works on a batch of n token rows.
#pragma once

#include <cstdint>
#include <vector>

#include "model_config.hpp"

namespace moepack::engine {

class ThreadPool;

// x[t, :] = x[t, :] / rms(x[t, :]) * weight, for n rows of `dim` values (in place).
void rms_norm(float* x, int64_t n, int64_t dim, const float* weight, float eps);
// out = rms_norm(x) without touching x.
void rms_norm_to(const float* x, float* out, int64_t n, int64_t dim, const float* weight, float eps);

// Rotary embedding tables for one model (default and linear scaling).
class Rope {
public:
    // Throws moepack::Error for a RoPE scaling the engine does not implement.
    explicit Rope(const ModelConfig& c);
    // Rotates the leading rotary_dim values of each of `heads` heads of `head_dim` in
    // x [n, heads * head_dim]; row t sits at position positions0 + t.
    void apply(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t position0) const;
    // The table apply() uses (the GPU kernels take the same one).
    RopeStyle style() const { return style_; }
    int64_t rotary_dim() const { return rotary_dim_; }
    const std::vector<float>& inv_freq() const { return inv_freq_; }

private:
    RopeStyle style_;
    int64_t rotary_dim_;
    std::vector<float> inv_freq_;   // rotary_dim / 2
};

// Causal attention of n query rows at positions [position0, position0 + n) over the cached
// keys and values [0, position0 + n). q [n, heads * head_dim]; k/v cache [ctx, kv_heads *
// head_dim]; out [n, heads * head_dim]. window > 0 limits each query to the last `window`
// positions (itself included).
void attention(ThreadPool& pool, const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n,
               int64_t position0, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window);

// out[i] = silu(gate[i]) * up[i] for `count` values.
void swiglu(const float* gate, const float* up, float* out, int64_t count);

// Gated attention (q_proj yields [q | gate] per head): q_gate [n, heads, 2, head_dim] split
// into q and gate [n, heads * head_dim]; after attention out[i] *= sigmoid(gate[i]).
void split_gated_q(const float* q_gate, float* q, float* gate, int64_t n, int64_t heads, int64_t head_dim);
void apply_output_gate(float* out, const float* gate, int64_t count);

// Expert choice of one token: experts_per_token (expert, weight) pairs.
struct Routed {
    int32_t expert;
    float weight;
};
// From router logits [num_experts] per the config's routing function.
void route(const RoutingConfig& routing, const float* logits, int64_t num_experts, int64_t k, Routed* out);

}  // namespace moepack::engine
