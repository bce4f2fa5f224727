// Shared model blocks: see blocks.hpp.
#include "blocks.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "error.hpp"
#include "thread_pool.hpp"

namespace moepack::engine {

void rms_norm_to(const float* x, float* out, int64_t n, int64_t dim, const float* weight, float eps) {
    for (int64_t t = 0; t < n; ++t) {
        const float* xr = x + t * dim;
        float* o = out + t * dim;
        double ss = 0;
        for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
        const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(dim)) + eps);
        for (int64_t i = 0; i < dim; ++i) o[i] = xr[i] * inv * weight[i];
    }
}

void rms_norm(float* x, int64_t n, int64_t dim, const float* weight, float eps) { rms_norm_to(x, x, n, dim, weight, eps); }

Rope::Rope(const ModelConfig& c) : style_(c.rope.style), rotary_dim_(c.rope.rotary_dim) {
    if (c.rope.scaling != "none" && c.rope.scaling != "default" && c.rope.scaling != "linear")
        fail("RoPE scaling '", c.rope.scaling, "' is not supported by this engine yet");
    if (rotary_dim_ <= 0 || rotary_dim_ > c.head_dim || rotary_dim_ % 2)
        fail("rotary_dim ", rotary_dim_, " does not fit head_dim ", c.head_dim);
    const double factor = c.rope.scaling == "linear" ? c.rope.factor : 1.0;
    for (int64_t i = 0; i < rotary_dim_ / 2; ++i)
        inv_freq_.push_back(static_cast<float>(
            1.0 / (std::pow(c.rope.theta, static_cast<double>(2 * i) / static_cast<double>(rotary_dim_)) * factor)));
}

void Rope::apply(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t position0) const {
    const int64_t half = rotary_dim_ / 2;
    std::vector<float> cos_(static_cast<size_t>(half)), sin_(static_cast<size_t>(half));
    for (int64_t t = 0; t < n; ++t) {
        const float pos = static_cast<float>(position0 + t);
        for (int64_t i = 0; i < half; ++i) {
            // float32 angle as the reference computes it (inv_freq * position in float32)
            const float angle = pos * inv_freq_[i];
            cos_[i] = std::cos(angle);
            sin_[i] = std::sin(angle);
        }
        for (int64_t h = 0; h < heads; ++h) {
            float* v = x + (t * heads + h) * head_dim;
            for (int64_t i = 0; i < half; ++i) {
                float* a = style_ == RopeStyle::half ? &v[i] : &v[2 * i];
                float* b = style_ == RopeStyle::half ? &v[i + half] : &v[2 * i + 1];
                const float x0 = *a, x1 = *b;
                *a = x0 * cos_[i] - x1 * sin_[i];
                *b = x1 * cos_[i] + x0 * sin_[i];
            }
        }
    }
}

namespace {

// Dot product and a += w * b over head_dim values; cloned for AVX-512 and AVX2 (eight
// partial sums so that the compiler may vectorise without reassociating).
__attribute__((target_clones("avx512f", "avx2", "default"))) float head_dot(const float* a, const float* b,
                                                                               int64_t n) {
    float acc[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; ++k) acc[k] += a[i + k] * b[i + k];
    float s = 0;
    for (; i < n; ++i) s += a[i] * b[i];
    for (int k = 0; k < 16; ++k) s += acc[k];
    return s;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void head_axpy(float* a, float w, const float* b,
                                                                               int64_t n) {
    for (int64_t i = 0; i < n; ++i) a[i] += w * b[i];
}

}  // namespace

void attention(ThreadPool& pool, const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n,
               int64_t position0, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window) {
    const int64_t group = heads / kv_heads;
    const int64_t kv_dim = kv_heads * head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    pool.parallel_for(n * heads, 1, [&](int64_t begin, int64_t end) {
        std::vector<float> scores;
        std::vector<float> acc(static_cast<size_t>(head_dim));
        for (int64_t job = begin; job < end; ++job) {
            const int64_t t = job / heads, h = job % heads, kvh = h / group;
            const int64_t last = position0 + t;
            const int64_t first = window > 0 ? std::max<int64_t>(0, last - window + 1) : 0;
            const float* qv = q + (t * heads + h) * head_dim;
            scores.resize(static_cast<size_t>(last - first + 1));
            float max_score = -INFINITY;
            for (int64_t p = first; p <= last; ++p) {
                const float s = head_dot(qv, k_cache + p * kv_dim + kvh * head_dim, head_dim) * scale;
                scores[p - first] = s;
                max_score = std::max(max_score, s);
            }
            float sum = 0;
            for (auto& s : scores) {
                s = std::exp(s - max_score);
                sum += s;
            }
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int64_t p = first; p <= last; ++p) {
                head_axpy(acc.data(), scores[p - first] / sum, v_cache + p * kv_dim + kvh * head_dim, head_dim);
            }
            std::copy(acc.begin(), acc.end(), out + (t * heads + h) * head_dim);
        }
    });
}

void swiglu(const float* gate, const float* up, float* out, int64_t count) {
    for (int64_t i = 0; i < count; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void split_gated_q(const float* q_gate, float* q, float* gate, int64_t n, int64_t heads, int64_t head_dim) {
    for (int64_t head = 0; head < n * heads; ++head) {   // over rows and heads alike
        std::copy_n(q_gate + 2 * head * head_dim, head_dim, q + head * head_dim);
        std::copy_n(q_gate + (2 * head + 1) * head_dim, head_dim, gate + head * head_dim);
    }
}

void apply_output_gate(float* out, const float* gate, int64_t count) {
    for (int64_t i = 0; i < count; ++i) out[i] *= 1.0f / (1.0f + std::exp(-gate[i]));
}

void route(const RoutingConfig& routing, const float* logits, int64_t num_experts, int64_t k, Routed* out) {
    std::vector<int32_t> order(static_cast<size_t>(num_experts));
    std::iota(order.begin(), order.end(), 0);
    // top-k by logit (softmax is monotonic); ties go to the lower expert index
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    const float max_logit = logits[order[0]];
    switch (routing.function) {
        case RoutingFunction::softmax_topk: {
            double total = 0;
            for (int64_t e = 0; e < num_experts; ++e) total += std::exp(static_cast<double>(logits[e] - max_logit));
            double chosen = 0;
            for (int64_t i = 0; i < k; ++i) {
                const double p = std::exp(static_cast<double>(logits[order[i]] - max_logit)) / total;
                out[i] = {order[i], static_cast<float>(p)};
                chosen += p;
            }
            if (routing.normalize_topk)
                for (int64_t i = 0; i < k; ++i) out[i].weight = static_cast<float>(out[i].weight / chosen);
            break;
        }
        case RoutingFunction::topk_softmax: {
            double total = 0;
            for (int64_t i = 0; i < k; ++i) total += std::exp(static_cast<double>(logits[order[i]] - max_logit));
            for (int64_t i = 0; i < k; ++i)
                out[i] = {order[i], static_cast<float>(std::exp(static_cast<double>(logits[order[i]] - max_logit)) / total)};
            break;
        }
        case RoutingFunction::sigmoid_grouped: fail("sigmoid_grouped routing is not supported by this engine yet");
    }
    for (int64_t i = 0; i < k; ++i) out[i].weight *= static_cast<float>(routing.scaling_factor);
}

}  // namespace moepack::engine
