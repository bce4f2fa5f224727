// The decoder of qwen3_moe, mixtral, olmoe, qwen3_next and qwen3_5_moe: pre-norm blocks of
// a token mixer and a feed-forward part. The mixer is grouped-query attention (optional q/k
// RMSNorm per head or over the full width, full or partial RoPE, optionally gated: q_proj
// yields [q | gate] per head and the output is scaled by sigmoid(gate)) or, on the layers
// marked linear, a Gated DeltaNet (models/gated_deltanet.cpp). The feed-forward part is a
// dense SwiGLU MLP or top-k routed SwiGLU experts, plus a shared expert scaled by
// sigmoid(shared_expert_gate . x) where the config has one. The families differ only in what
// the normalised config states, so one graph serves them.
//
// Weights (H hidden, Nq/Nkv heads of D, G = 2 when gated else 1, I expert width, F dense
// width, S shared expert width, E experts, V vocab):
//   embed_tokens.weight [V, H]           lm_head.weight [V, H] (embed_tokens when tied)
//   layers.L.input_layernorm.weight [H]  layers.L.post_attention_layernorm.weight [H]
//   layers.L.self_attn.q_proj [Nq*G*D, H]  k_proj, v_proj [Nkv*D, H]  o_proj [H, Nq*D]
//   layers.L.self_attn.q_norm [D] or [Nq*D], k_norm [D] or [Nkv*D]  (when qk_norm)
//   layers.L.mlp.router.weight [E, H]    routed experts from the expert store
//   layers.L.mlp.shared_expert.{gate,up}_proj [S, H], down_proj [H, S]
//   layers.L.mlp.shared_expert_gate.weight [1, H]
//   layers.L.mlp.{gate,up}_proj [F, H], down_proj [H, F]  (dense layers)
//   norm.weight [H]
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "blocks.hpp"
#include "cpu/matmul.hpp"
#include "dense_weights.hpp"
#include "error.hpp"
#include "expert_store.hpp"
#include "kv_cache.hpp"
#include "model.hpp"
#include "models/gated_deltanet.hpp"
#include "models/layer_compute.hpp"
#include "models/models.hpp"
#include "thread_pool.hpp"

namespace moepack::engine {
namespace {

struct LayerWeights {
    const float* input_norm = nullptr;
    const float* post_norm = nullptr;
    WeightMatrix q, k, v, o;             // full attention
    const float* q_norm = nullptr;
    const float* k_norm = nullptr;
    std::unique_ptr<GatedDeltaNet> linear;   // linear attention
    bool moe = false;
    WeightMatrix router;                 // moe
    WeightMatrix shared_gate, shared_up, shared_down, shared_expert_gate;   // moe with a shared expert
    WeightMatrix gate, up, down;         // dense FFN
};

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

class Decoder final : public Model {
public:
    explicit Decoder(const ModelContext& ctx);
    void forward(std::span<const int32_t> tokens, int64_t position, bool all_logits, float* logits) override;

private:
    void attention_block(int64_t layer, int64_t n, int64_t position);
    void linear_attention_block(int64_t layer, int64_t n);
    void dense_ffn(const LayerWeights& lw, int64_t n);
    void moe_ffn(int64_t layer, const LayerWeights& lw, int64_t n);
    void shared_expert(const LayerWeights& lw, int64_t n);   // adds to ffn_
    void add_rows(int64_t n, const float* y);   // x_ += y, rows [0, n)

    ModelContext ctx_;
    const ModelConfig& c_;
    LayerCompute compute_;
    Rope rope_;
    bool gated_;                          // q_proj yields [q | gate] per head
    int64_t q_dim_, kv_dim_;
    WeightMatrix embed_, head_;
    const float* final_norm_;
    std::vector<LayerWeights> layers_;
    // One routed expert's share of a batch: its weights, the rows routed to it and buffers.
    struct ExpertWork {
        WeightMatrix gate, up, down;
        const std::vector<std::pair<int64_t, float>>* tokens = nullptr;
        std::vector<float> x, g, u, y;   // x: the gathered rows when not the whole batch
        MatmulInput own_in, act;
        MatmulInput* in = nullptr;   // own_in, or the batch's shared input
    };
    std::vector<ExpertWork> expert_work_;
    void compute_experts(const std::vector<ExpertWork*>& work, int64_t n);
    std::unique_ptr<bool[]> ready_;   // per expert of a chunk: resident when acquired
    std::vector<ExpertWork*> resident_, missing_;   // of expert_work_: computed before / after the reads
    // activations, sized for the largest batch seen
    std::vector<float> x_, h_, q_, k_, v_, q_gate_, gate_, attn_, proj_, ffn_, shared_g_, shared_u_, shared_s_;
};

std::string layer_name(int64_t layer, const char* rest) { return concat("layers.", layer, ".", rest); }

Decoder::Decoder(const ModelContext& ctx)
    : ctx_(ctx), c_(ctx.config), compute_(ctx), rope_(ctx.config), gated_(c_.attention == AttentionType::gated_gqa),
      q_dim_(c_.num_heads * c_.head_dim), kv_dim_(c_.num_kv_heads * c_.head_dim) {
    if (c_.attention == AttentionType::mla) fail("multi-head latent attention is not supported by this engine yet");
    if (c_.attention_bias) fail("attention biases are not supported by this engine yet");
    if (c_.activation != Activation::swiglu || c_.expert_bias) fail("only plain SwiGLU experts are supported here");
    if (c_.num_shared_experts > 1 || (c_.num_shared_experts == 1 && !c_.shared_expert_gated))
        fail("only one gated shared expert is supported for ", to_string(c_.family));
    const DenseWeights& w = ctx.weights;
    const int64_t H = c_.hidden_size, S = c_.shared_expert_intermediate_size;
    ready_ = std::make_unique<bool[]>(static_cast<size_t>(std::max<int64_t>(1, c_.num_experts)));
    embed_ = w.matrix("embed_tokens.weight", c_.vocab_size, H);
    head_ = w.has("lm_head.weight") || !c_.tie_word_embeddings ? w.matrix("lm_head.weight", c_.vocab_size, H) : embed_;
    final_norm_ = w.vector("norm.weight", H);
    for (int64_t l = 0; l < c_.num_layers; ++l) {
        const LayerDesc& d = c_.layers[static_cast<size_t>(l)];
        LayerWeights lw;
        lw.input_norm = w.vector(layer_name(l, "input_layernorm.weight"), H);
        lw.post_norm = w.vector(layer_name(l, "post_attention_layernorm.weight"), H);
        if (d.attention == AttentionKind::linear) {
            lw.linear = std::make_unique<GatedDeltaNet>(c_, w, l);
        } else {
            lw.q = w.matrix(layer_name(l, "self_attn.q_proj.weight"), gated_ ? 2 * q_dim_ : q_dim_, H);
            lw.k = w.matrix(layer_name(l, "self_attn.k_proj.weight"), kv_dim_, H);
            lw.v = w.matrix(layer_name(l, "self_attn.v_proj.weight"), kv_dim_, H);
            lw.o = w.matrix(layer_name(l, "self_attn.o_proj.weight"), H, q_dim_);
            if (c_.qk_norm == QkNorm::per_head) {
                lw.q_norm = w.vector(layer_name(l, "self_attn.q_norm.weight"), c_.head_dim);
                lw.k_norm = w.vector(layer_name(l, "self_attn.k_norm.weight"), c_.head_dim);
            } else if (c_.qk_norm == QkNorm::full_width) {
                lw.q_norm = w.vector(layer_name(l, "self_attn.q_norm.weight"), q_dim_);
                lw.k_norm = w.vector(layer_name(l, "self_attn.k_norm.weight"), kv_dim_);
            }
        }
        lw.moe = d.ffn == FfnKind::moe;
        if (lw.moe) {
            lw.router = w.matrix(layer_name(l, "mlp.router.weight"), c_.num_experts, H);
            if (!ctx.experts || !ctx.experts->has_layer(l)) fail("layer ", l, ": the pack has no experts for this MoE layer");
            const auto& el = ctx.experts->layout();
            if (static_cast<int64_t>(el.hidden) != H || static_cast<int64_t>(el.intermediate) != c_.expert_intermediate_size)
                fail("expert blocks are [", el.intermediate, " x ", el.hidden, "], the model expects [",
                     c_.expert_intermediate_size, " x ", H, "]");
            if (c_.num_shared_experts == 1) {
                lw.shared_gate = w.matrix(layer_name(l, "mlp.shared_expert.gate_proj.weight"), S, H);
                lw.shared_up = w.matrix(layer_name(l, "mlp.shared_expert.up_proj.weight"), S, H);
                lw.shared_down = w.matrix(layer_name(l, "mlp.shared_expert.down_proj.weight"), H, S);
                lw.shared_expert_gate = w.matrix(layer_name(l, "mlp.shared_expert_gate.weight"), 1, H);
            }
        } else {
            lw.gate = w.matrix(layer_name(l, "mlp.gate_proj.weight"), c_.intermediate_size, H);
            lw.up = w.matrix(layer_name(l, "mlp.up_proj.weight"), c_.intermediate_size, H);
            lw.down = w.matrix(layer_name(l, "mlp.down_proj.weight"), H, c_.intermediate_size);
        }
        layers_.push_back(std::move(lw));
    }
}

void Decoder::attention_block(int64_t l, int64_t n, int64_t position) {
    const LayerWeights& lw = layers_[static_cast<size_t>(l)];
    const int64_t D = c_.head_dim;
    const float eps = static_cast<float>(c_.rms_norm_eps);
    float* q_out = gated_ ? q_gate_.data() : q_.data();   // gated: [q | gate] per head, split below
    compute_.products(h_.data(), n, {{&lw.q, q_out}, {&lw.k, k_.data()}, {&lw.v, v_.data()}});
    float* kc = ctx_.kv.keys(l);
    float* vc = ctx_.kv.values(l);
    compute_.for_rows(n, [&](int64_t t0, int64_t t1) {
        const int64_t m = t1 - t0;
        float* q = q_.data() + t0 * q_dim_;
        float* k = k_.data() + t0 * kv_dim_;
        if (gated_) split_gated_q(q_gate_.data() + t0 * 2 * q_dim_, q, gate_.data() + t0 * q_dim_, m, c_.num_heads, D);
        if (c_.qk_norm == QkNorm::per_head) {
            rms_norm(q, m * c_.num_heads, D, lw.q_norm, eps);
            rms_norm(k, m * c_.num_kv_heads, D, lw.k_norm, eps);
        } else if (c_.qk_norm == QkNorm::full_width) {
            rms_norm(q, m, q_dim_, lw.q_norm, eps);
            rms_norm(k, m, kv_dim_, lw.k_norm, eps);
        }
        rope_.apply(q, m, c_.num_heads, D, position + t0);
        rope_.apply(k, m, c_.num_kv_heads, D, position + t0);
        std::copy(k, k + m * kv_dim_, kc + (position + t0) * kv_dim_);
        std::copy(v_.data() + t0 * kv_dim_, v_.data() + t1 * kv_dim_, vc + (position + t0) * kv_dim_);
    });
    const int64_t window = c_.layers[static_cast<size_t>(l)].attention == AttentionKind::sliding ? c_.sliding_window : 0;
    attention(ctx_.pool, q_.data(), kc, vc, attn_.data(), n, position, c_.num_heads, c_.num_kv_heads, D, window);
    if (gated_)
        compute_.for_rows(n, [&](int64_t t0, int64_t t1) {
            apply_output_gate(attn_.data() + t0 * q_dim_, gate_.data() + t0 * q_dim_, (t1 - t0) * q_dim_);
        });
    compute_.product(lw.o, attn_.data(), n, proj_.data());
}

void Decoder::add_rows(int64_t n, const float* y) {
    const int64_t H = c_.hidden_size;
    compute_.for_rows(n, [&](int64_t t0, int64_t t1) {
        for (int64_t i = t0 * H; i < t1 * H; ++i) x_[i] += y[i];
    });
}

void Decoder::dense_ffn(const LayerWeights& lw, int64_t n) {
    Stopwatch sw(ctx_.times.expert_compute);
    const int64_t F = c_.intermediate_size;
    std::vector<float> g(static_cast<size_t>(n * F)), u(static_cast<size_t>(n * F));
    compute_.product(lw.gate, h_.data(), n, g.data());
    compute_.product(lw.up, h_.data(), n, u.data());
    swiglu(g.data(), u.data(), g.data(), n * F);
    compute_.product(lw.down, g.data(), n, ffn_.data());
    add_rows(n, ffn_.data());
}

void Decoder::shared_expert(const LayerWeights& lw, int64_t n) {
    Stopwatch sw(ctx_.times.expert_compute);
    const int64_t H = c_.hidden_size, S = c_.shared_expert_intermediate_size;
    shared_g_.resize(static_cast<size_t>(n * S));
    shared_u_.resize(static_cast<size_t>(n * S));
    shared_s_.resize(static_cast<size_t>(n));
    compute_.products(h_.data(), n, {{&lw.shared_gate, shared_g_.data()}, {&lw.shared_up, shared_u_.data()},
                                     {&lw.shared_expert_gate, shared_s_.data()}});
    swiglu(shared_g_.data(), shared_u_.data(), shared_g_.data(), n * S);
    compute_.product(lw.shared_down, shared_g_.data(), n, proj_.data());
    compute_.for_rows(n, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            const float scale = sigmoid(shared_s_[static_cast<size_t>(t)]);
            for (int64_t i = t * H; i < (t + 1) * H; ++i) ffn_[i] += scale * proj_[i];
        }
    });
}

// The experts' products for the rows routed to them: gate and up, SwiGLU, down (into wk.y).
void Decoder::compute_experts(const std::vector<ExpertWork*>& work, int64_t n) {
    if (work.empty()) return;
    Stopwatch sw(ctx_.times.expert_compute);
    const int64_t H = c_.hidden_size, I = c_.expert_intermediate_size;
    const int64_t count = static_cast<int64_t>(work.size());
    // Each expert's own buffers and gathered, prepared input, in parallel; for one token
    // these loops are too short to share out (grain: all of it).
    const int64_t per_task = n == 1 ? count : 1;
    ctx_.pool.parallel_for(count, per_task, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            ExpertWork& wk = *work[static_cast<size_t>(i)];
            const int64_t m = static_cast<int64_t>(wk.tokens->size());
            wk.g.resize(static_cast<size_t>(m * I));
            wk.u.resize(static_cast<size_t>(m * I));
            wk.y.resize(static_cast<size_t>(m * H));
            if (wk.in != &wk.own_in) continue;   // the batch's shared input, prepared already
            wk.x.resize(static_cast<size_t>(m * H));
            for (int64_t j = 0; j < m; ++j)
                std::copy_n(h_.data() + (*wk.tokens)[static_cast<size_t>(j)].first * H, H, wk.x.data() + j * H);
            wk.own_in.reset(wk.x.data(), m, H);
            wk.own_in.prepare(wk.gate);
            wk.own_in.prepare(wk.up);
        }
    });
    // Row blocks of the experts' rows, about four per thread (taken dynamically, so a slow
    // thread takes fewer), one per expert and matrix when there are more experts than that, in
    // multiples of 16 rows; fn(work, r0, r1) on every row block of `rows` rows of every expert.
    auto over_row_blocks = [&](int64_t rows, const auto& fn) {
        const int64_t per_block = (count * rows + 4 * ctx_.pool.size() - 1) / (4 * ctx_.pool.size());
        const int64_t grain = std::min(rows, std::max<int64_t>(16, (per_block + 15) / 16 * 16));
        const int64_t per_expert = (rows + grain - 1) / grain;
        ctx_.pool.parallel_for(count * per_expert, 1, [&](int64_t b0, int64_t b1) {
            for (int64_t b = b0; b < b1; ++b) {
                const int64_t r0 = (b % per_expert) * grain;
                fn(*work[static_cast<size_t>(b / per_expert)], r0, std::min(rows, r0 + grain));
            }
        });
    };
    // gate and up rows, then SwiGLU on the same rows
    over_row_blocks(I, [&](ExpertWork& wk, int64_t r0, int64_t r1) {
        matmul_rows(wk.gate, *wk.in, wk.g.data(), I, r0, r1);
        matmul_rows(wk.up, *wk.in, wk.u.data(), I, r0, r1);
        for (int64_t j = 0; j < wk.in->n; ++j)
            swiglu(wk.g.data() + j * I + r0, wk.u.data() + j * I + r0, wk.g.data() + j * I + r0, r1 - r0);
    });
    ctx_.pool.parallel_for(count, per_task, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            ExpertWork& wk = *work[static_cast<size_t>(i)];
            wk.act.reset(wk.g.data(), wk.in->n, I);
            wk.act.prepare(wk.down);
        }
    });
    over_row_blocks(H, [&](ExpertWork& wk, int64_t r0, int64_t r1) {
        matmul_rows(wk.down, wk.act, wk.y.data(), H, r0, r1);
    });
}

void Decoder::moe_ffn(int64_t l, const LayerWeights& lw, int64_t n) {
    const int64_t H = c_.hidden_size, E = c_.num_experts, K = c_.experts_per_token;
    // token lists per expert, in expert order
    std::map<int32_t, std::vector<std::pair<int64_t, float>>> assigned;
    {
        Stopwatch sw(ctx_.times.routing);
        std::vector<float> logits(static_cast<size_t>(n * E));
        compute_.product(lw.router, h_.data(), n, logits.data());
        std::vector<Routed> routed(static_cast<size_t>(n * K));
        compute_.for_rows(n, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) route(c_.routing, logits.data() + t * E, E, K, routed.data() + t * K);
        });
        for (int64_t t = 0; t < n; ++t)
            for (int64_t i = 0; i < K; ++i) {
                const Routed& r = routed[static_cast<size_t>(t * K + i)];
                assigned[r.expert].push_back({t, r.weight});
            }
    }
    std::fill(ffn_.begin(), ffn_.begin() + n * H, 0.0f);
    std::vector<int32_t> experts;
    for (const auto& [e, list] : assigned) experts.push_back(e);
    ExpertStore& store = *ctx_.experts;
    const auto& layout = store.layout();
    const size_t chunk = static_cast<size_t>(store.slots());
    std::vector<const std::byte*> blocks(experts.size());
    MatmulInput all_tokens(h_.data(), n, H);   // the input of experts that get the whole batch
    std::vector<ExpertWork>& work = expert_work_;   // buffers kept between calls
    for (size_t first = 0; first < experts.size(); first += chunk) {
        const size_t count = std::min(chunk, experts.size() - first);
        {
            Stopwatch sw(ctx_.times.expert_io_wait);
            // with overlap, the missing experts are read while the resident ones are computed
            store.acquire(l, {experts.data() + first, count}, {blocks.data() + first, count},
                          store.overlap_reads() ? std::span<bool>(ready_.get(), count) : std::span<bool>());
        }
        work.resize(count);
        bool shared = false;
        std::vector<ExpertWork*>& resident = resident_;
        std::vector<ExpertWork*>& missing = missing_;
        resident.clear();
        missing.clear();
        for (size_t i = 0; i < count; ++i) {
            ExpertWork& wk = work[i];
            const std::byte* b = blocks[first + i];
            wk.gate = WeightMatrix::from_record(b + layout.gate_offset, layout.gate);
            wk.up = WeightMatrix::from_record(b + layout.up_offset, layout.up);
            wk.down = WeightMatrix::from_record(b + layout.down_offset, layout.down);
            wk.tokens = &assigned[experts[first + i]];
            const int64_t m = static_cast<int64_t>(wk.tokens->size());
            wk.in = m == n ? &all_tokens : &wk.own_in;   // every token of the batch, in order: share h_
            shared |= m == n;
            ctx_.times.flops += matmul_flops(wk.gate, m) * 3;
            ctx_.times.expert_flops += matmul_flops(wk.gate, m) * 3;
            ctx_.times.weight_bytes += wk.gate.bytes() * 3;
            (!store.overlap_reads() || ready_[i] ? resident : missing).push_back(&wk);
        }
        if (shared) {   // always when decoding
            all_tokens.prepare(work[0].gate);
            all_tokens.prepare(work[0].up);
        }
        compute_experts(resident, n);
        if (!missing.empty()) {
            {
                Stopwatch sw(ctx_.times.expert_io_wait);
                store.wait();
            }
            compute_experts(missing, n);
        }
        // the weighted sum, split over the hidden columns (each sum in expert order, as
        // with one thread and whichever experts were resident)
        Stopwatch sw(ctx_.times.expert_compute);
        ctx_.pool.parallel_for(H, n == 1 ? H : 256, [&](int64_t c0, int64_t c1) {
            for (const ExpertWork& wk : work)
                for (size_t j = 0; j < wk.tokens->size(); ++j) {
                    const auto [t, weight] = (*wk.tokens)[j];
                    float* out = ffn_.data() + t * H;
                    const float* y = wk.y.data() + static_cast<int64_t>(j) * H;
                    for (int64_t i = c0; i < c1; ++i) out[i] += weight * y[i];
                }
        });
        store.release_all();
    }
    if (c_.num_shared_experts == 1) shared_expert(lw, n);
    add_rows(n, ffn_.data());
}

void Decoder::linear_attention_block(int64_t l, int64_t n) {
    layers_[static_cast<size_t>(l)].linear->forward(compute_, h_.data(), n, ctx_.kv.recurrent(l), proj_.data());
}

void Decoder::forward(std::span<const int32_t> tokens, int64_t position, bool all_logits, float* logits) {
    const int64_t n = static_cast<int64_t>(tokens.size()), H = c_.hidden_size;
    auto size = [&](std::vector<float>& v, int64_t per_token) { v.resize(static_cast<size_t>(n * per_token)); };
    size(x_, H);
    size(h_, H);
    size(q_, q_dim_);
    size(k_, kv_dim_);
    size(v_, kv_dim_);
    size(q_gate_, gated_ ? 2 * q_dim_ : 0);
    size(gate_, gated_ ? q_dim_ : 0);
    size(attn_, q_dim_);
    size(proj_, H);
    size(ffn_, H);
    if (position == 0) ctx_.kv.clear_recurrent();   // a new context: the linear layers start from zero
    {
        Stopwatch sw(ctx_.times.embedding);
        for (int64_t t = 0; t < n; ++t) decode_row(embed_, tokens[static_cast<size_t>(t)], x_.data() + t * H);
    }
    const float eps = static_cast<float>(c_.rms_norm_eps);
    auto norm_rows = [&](const float* weight) {
        compute_.for_rows(n, [&](int64_t t0, int64_t t1) {
            rms_norm_to(x_.data() + t0 * H, h_.data() + t0 * H, t1 - t0, H, weight, eps);
        });
    };
    for (int64_t l = 0; l < c_.num_layers; ++l) {
        const LayerWeights& lw = layers_[static_cast<size_t>(l)];
        {
            Stopwatch sw(ctx_.times.attention);
            norm_rows(lw.input_norm);
            if (lw.linear)
                linear_attention_block(l, n);
            else
                attention_block(l, n, position);
            add_rows(n, proj_.data());
        }
        norm_rows(lw.post_norm);
        if (lw.moe)
            moe_ffn(l, lw, n);
        else
            dense_ffn(lw, n);
    }
    Stopwatch sw(ctx_.times.head);
    const int64_t first = all_logits ? 0 : n - 1;
    rms_norm_to(x_.data() + first * H, h_.data(), n - first, H, final_norm_, eps);
    compute_.product(head_, h_.data(), n - first, logits);
}

}  // namespace

std::unique_ptr<Model> make_decoder(const ModelContext& context) {
    return std::make_unique<Decoder>(context);
}

}  // namespace moepack::engine
