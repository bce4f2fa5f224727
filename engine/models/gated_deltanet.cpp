// Gated DeltaNet linear attention on the CPU: see gated_deltanet.hpp.
#include "models/gated_deltanet.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "dense_weights.hpp"
#include "error.hpp"
#include "models/layer_compute.hpp"
#include "thread_pool.hpp"

namespace moepack::engine {
namespace {

constexpr float kL2NormEps = 1e-6f;   // of the q and k l2 normalisation

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
float silu(float x) { return x / (1.0f + std::exp(-x)); }
// log(1 + e^x), linear above 20 as torch's softplus
float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

std::string name(int64_t layer, const char* rest) { return concat("layers.", layer, ".linear_attn.", rest); }

}  // namespace

DeltaRuleShape delta_rule_shape(const ModelConfig& c) {
    const LinearAttentionConfig& a = c.linear;
    return {a.num_key_heads, a.num_value_heads, a.key_head_dim, a.value_head_dim, static_cast<float>(c.rms_norm_eps)};
}

int64_t gated_deltanet_state_floats(const ModelConfig& c) {
    const DeltaRuleShape s = delta_rule_shape(c);
    return s.channels() * (c.linear.conv_kernel - 1) + s.nv * s.dk * s.dv;
}

GatedDeltaNet::GatedDeltaNet(const ModelConfig& c, const DenseWeights& w, int64_t layer)
    : hidden_(c.hidden_size), shape_(delta_rule_shape(c)), kernel_(c.linear.conv_kernel), channels_(shape_.channels()) {
    const int64_t nv = shape_.nv, V = shape_.width();
    if (shape_.nk < 1 || nv % shape_.nk != 0 || shape_.dk < 1 || shape_.dv < 1 || kernel_ < 1)
        fail("layer ", layer, ": linear attention with ", shape_.nk, " key and ", nv, " value heads of ", shape_.dk, " and ",
             shape_.dv, ", kernel ", kernel_, " is not a valid shape");
    qkv_ = w.matrix(name(layer, "in_proj_qkv.weight"), channels_, hidden_);
    z_ = w.matrix(name(layer, "in_proj_z.weight"), V, hidden_);
    b_ = w.matrix(name(layer, "in_proj_b.weight"), nv, hidden_);
    a_ = w.matrix(name(layer, "in_proj_a.weight"), nv, hidden_);
    out_ = w.matrix(name(layer, "out_proj.weight"), hidden_, V);
    conv_ = w.values(name(layer, "conv1d.weight"), {channels_, kernel_});
    a_log_ = w.vector(name(layer, "A_log"), nv);
    dt_bias_ = w.vector(name(layer, "dt_bias"), nv);
    norm_ = w.vector(name(layer, "norm.weight"), shape_.dv);
}

void gated_deltanet_convolve(ThreadPool& pool, const float* mixed, int64_t n, int64_t channels, int64_t kernel,
                             const float* weight, float* conv_state, float* out) {
    const int64_t C = channels, K = kernel;
    // input row s < 0 of this batch is state row s + K - 1
    auto input_row = [&](int64_t s) { return s >= 0 ? mixed + s * C : conv_state + (s + K - 1) * C; };
    pool.parallel_for(C, std::max<int64_t>(64, C / (4 * pool.size())), [&](int64_t c0, int64_t c1) {
        for (int64_t t = 0; t < n; ++t) {
            float* y = out + t * C;
            for (int64_t c = c0; c < c1; ++c) {
                float acc = 0;
                for (int64_t j = 0; j < K; ++j) acc += weight[c * K + j] * input_row(t - (K - 1) + j)[c];
                y[c] = silu(acc);
            }
        }
        // the new state, the last K - 1 inputs: row i takes input n - (K - 1) + i, which is
        // old state row i + n when n < K - 1 (ascending i reads rows not yet overwritten)
        for (int64_t i = 0; i < K - 1; ++i) {
            const float* from = input_row(n - (K - 1) + i);
            for (int64_t c = c0; c < c1; ++c) conv_state[i * C + c] = from[c];
        }
    });
}

void gated_deltanet_recur(ThreadPool& pool, const DeltaRuleShape& shape, float* x, int64_t n, const float* b, const float* a,
                          const float* a_log, const float* dt_bias, const float* z, const float* norm, float* S, float* o,
                          float* scratch) {
    const int64_t nk = shape.nk, nv = shape.nv, dk = shape.dk, dv = shape.dv, r = nv / nk;
    const int64_t C = shape.channels(), V = shape.width();
    // q and k l2-normalised per key head, in place (q also scaled by dk^-1/2), once for the
    // value heads that read them
    const float q_scale = 1.0f / std::sqrt(static_cast<float>(dk));
    pool.parallel_for(n, std::max<int64_t>(8, n / (4 * pool.size())), [&](int64_t t0, int64_t t1) {   // a few rows: inline
        for (int64_t t = t0; t < t1; ++t)
            for (int64_t head_index = 0; head_index < 2 * nk; ++head_index) {
                float* head = x + t * C + head_index * dk;
                float ss = 0;
                for (int64_t i = 0; i < dk; ++i) ss += head[i] * head[i];
                const float scale = (head_index < nk ? q_scale : 1.0f) / std::sqrt(ss + kL2NormEps);
                for (int64_t i = 0; i < dk; ++i) head[i] *= scale;
            }
    });
    // the delta rule, token by token, value heads in parallel; then the gated RMSNorm
    pool.parallel_for(nv, 1, [&](int64_t v0, int64_t v1) {
        for (int64_t v = v0; v < v1; ++v) {
            const int64_t kh = v / r;
            float* kv = scratch + v * dv;   // S^T k, then the delta
            float* Sv = S + v * dk * dv;   // [dk][dv]
            const float a_scale = std::exp(a_log[v]);
            for (int64_t t = 0; t < n; ++t) {
                const float* row = x + t * C;
                const float* q = row + kh * dk;
                const float* k = row + nk * dk + kh * dk;
                const float* vs = row + 2 * nk * dk + v * dv;
                const float decay = std::exp(-a_scale * softplus(a[t * nv + v] + dt_bias[v]));
                const float beta = sigmoid(b[t * nv + v]);
                std::fill(kv, kv + dv, 0.0f);
                for (int64_t i = 0; i < dk; ++i) {   // S *= decay; kv = S^T k
                    float* s = Sv + i * dv;
                    const float ki = k[i];
                    for (int64_t j = 0; j < dv; ++j) {
                        s[j] *= decay;
                        kv[j] += s[j] * ki;
                    }
                }
                for (int64_t j = 0; j < dv; ++j) kv[j] = (vs[j] - kv[j]) * beta;
                float* out = o + t * V + v * dv;
                std::fill(out, out + dv, 0.0f);
                for (int64_t i = 0; i < dk; ++i) {   // S += k (x) delta; o = S^T q
                    float* s = Sv + i * dv;
                    const float ki = k[i], qi = q[i];
                    for (int64_t j = 0; j < dv; ++j) {
                        s[j] += ki * kv[j];
                        out[j] += s[j] * qi;
                    }
                }
                float ss = 0;
                for (int64_t j = 0; j < dv; ++j) ss += out[j] * out[j];
                const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dv) + shape.eps);
                const float* zt = z + t * V + v * dv;
                for (int64_t j = 0; j < dv; ++j) out[j] = out[j] * inv * norm[j] * silu(zt[j]);
            }
        }
    });
}

void GatedDeltaNet::forward(LayerCompute& compute, const float* h, int64_t n, float* state, float* out) {
    const int64_t C = channels_, V = shape_.width(), K = kernel_, nv = shape_.nv;
    mixed_.resize(static_cast<size_t>(n * C));
    gate_z_.resize(static_cast<size_t>(n * V));
    beta_.resize(static_cast<size_t>(n * nv));
    decay_.resize(static_cast<size_t>(n * nv));
    o_.resize(static_cast<size_t>(n * V));
    delta_.resize(static_cast<size_t>(V));
    conv_out_.resize(static_cast<size_t>(n * C));
    compute.products(h, n, {{&qkv_, mixed_.data()}, {&z_, gate_z_.data()}, {&b_, beta_.data()}, {&a_, decay_.data()}});
    float* conv_state = state;                  // [K - 1][C]
    float* recurrent = state + (K - 1) * C;     // [nv][dk][dv]
    gated_deltanet_convolve(compute.pool(), mixed_.data(), n, C, K, conv_, conv_state, conv_out_.data());
    gated_deltanet_recur(compute.pool(), shape_, conv_out_.data(), n, beta_.data(),
                         decay_.data(), a_log_, dt_bias_, gate_z_.data(), norm_, recurrent, o_.data(),
                         delta_.data());
    compute.times().flops += 7.0 * static_cast<double>(n * nv * shape_.dk * shape_.dv);
    compute.times().weight_bytes += 2 * static_cast<uint64_t>(nv * shape_.dk * shape_.dv) * sizeof(float);   // S read and written
    compute.product(out_, o_.data(), n, out);
}

}  // namespace moepack::engine
