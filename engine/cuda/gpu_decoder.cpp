// The decoder of qwen3_moe, mixtral and olmoe on the GPU, first form: every weight resident
// in GPU memory (weights.bin uploaded whole, every expert block of every layer uploaded at
// open), the KV cache in GPU memory, tokens run one at a time through the decode kernels of
// shaders/ (a prompt too). Per token: embedding row (decoded on the host, 4 x H bytes up),
// per layer RMSNorm, q/k/v products, q/k norms, RoPE, the KV write, attention, the output
// product and residual, RMSNorm, then a dense SwiGLU MLP or the router, top-k on the GPU and
// the chosen experts' products (one launch per matrix kind, the expert ids read on the GPU)
// and weighted sum; the head's logits come down at the end. The CPU graph
// (models/decoder.cpp) is the reference; linear attention, gated attention and shared
// experts are refused until their kernels exist.
#include "cuda/gpu_decoder.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "blocks.hpp"
#include "cuda_check.hpp"
#include "dense_weights.hpp"
#include "expert_store.hpp"
#include "kernels.hpp"
#include "kv_cache.hpp"
#include "model.hpp"
#include "pack_reader.hpp"
#include "weight_view.hpp"

namespace moepack::cuda {
namespace {

using engine::WeightMatrix;

// GPU memory owned by one object.
class DeviceMemory {
public:
    DeviceMemory() = default;
    explicit DeviceMemory(size_t bytes, const char* what) {
        size_t free = 0, total = 0;
        check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
        if (bytes > free)
            fail("CUDA: ", what, " needs ", static_cast<double>(bytes) / 1e9, " GB of GPU memory, ",
                 static_cast<double>(free) / 1e9, " GB are free");
        check_cuda(cudaMalloc(&p_, std::max<size_t>(bytes, 1)), what);
        bytes_ = bytes;
    }
    ~DeviceMemory() {
        if (p_) cudaFree(p_);
    }
    DeviceMemory(DeviceMemory&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; }
    DeviceMemory& operator=(DeviceMemory&& o) noexcept {
        std::swap(p_, o.p_);
        std::swap(bytes_, o.bytes_);
        return *this;
    }
    template <typename T = std::byte>
    T* get() const { return static_cast<T*>(p_); }

private:
    void* p_ = nullptr;
    size_t bytes_ = 0;
};

// A CUDA stream owned by one object.
class Stream {
public:
    Stream() { check_cuda(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate"); }
    ~Stream() { cudaStreamDestroy(s_); }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    operator cudaStream_t() const { return s_; }

private:
    cudaStream_t s_ = nullptr;
};

std::string layer_name(int64_t layer, const char* rest) { return concat("layers.", layer, ".", rest); }

struct Layer {
    const float *input_norm = nullptr, *post_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;   // device
    DeviceMatrix q, k, v, o;
    bool moe = false;
    DeviceMatrix router, gate, up, down;   // router (moe) or the dense MLP
    const std::byte* experts = nullptr;    // moe: the layer's expert blocks in GPU memory, `stride` apart
};

class GpuDecoder final : public engine::Model {
public:
    explicit GpuDecoder(const engine::ModelContext& ctx);
    void forward(std::span<const int32_t> tokens, int64_t position, bool all_logits, float* logits) override;
    void context_to_host(int64_t positions) override;
    void context_from_host(int64_t positions) override;

private:
    void token(int32_t id, int64_t position, float* logits);
    void attention_block(const Layer& l, int64_t layer, int64_t position);
    void moe_block(const Layer& l);
    void dense_block(const Layer& l);
    void add_to_residual(const float* y);   // x += y
    float* kv(int64_t layer, int which) const {   // which: 0 keys, 1 values; [ctx, kv_dim]
        return kv_.get<float>() + (2 * layer + which) * ctx_.kv.context() * kv_dim_;
    }

    engine::ModelContext ctx_;
    const ModelConfig& c_;
    int64_t q_dim_, kv_dim_;
    std::unique_ptr<Stream> stream_owner_;   // made once a device is known to exist
    cudaStream_t stream_ = nullptr;
    DeviceMemory weights_, experts_, kv_, scratch_, inv_freq_;
    const std::byte* host_base_;   // the mapped weights.bin, for embedding rows
    WeightMatrix embed_host_;
    DeviceMatrix head_;
    const float* final_norm_;
    std::vector<Layer> layers_;
    // scratch: x, h [H]; q [q_dim]; k, v [kv_dim]; attn [q_dim]; proj [H]; router [E];
    // experts' g, u [K, I], y [K, H]; weights [K]; ids [K]; one [1]; dense g, u [F]; logits [V]
    float *x_, *h_, *q_, *k_, *v_, *attn_, *proj_, *router_logits_, *eg_, *eu_, *ey_, *ew_, *one_, *dg_, *du_, *logits_;
    int32_t* ids_;
    std::vector<float> host_x_;
};

GpuDecoder::GpuDecoder(const engine::ModelContext& ctx)
    : ctx_(ctx), c_(ctx.config), q_dim_(c_.num_heads * c_.head_dim), kv_dim_(c_.num_kv_heads * c_.head_dim) {
    if (c_.attention != AttentionType::gqa || c_.attention_bias || c_.num_shared_experts > 0 ||
        c_.activation != Activation::swiglu || c_.expert_bias)
        fail("the CUDA backend runs qwen3_moe, mixtral and olmoe models so far, not ", to_string(c_.family));
    for (const LayerDesc& d : c_.layers)
        if (d.attention == AttentionKind::linear) fail("the CUDA backend has no linear-attention layers yet");
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) fail("CUDA backend: no CUDA device is available");
    stream_owner_ = std::make_unique<Stream>();
    stream_ = *stream_owner_;
    const int64_t H = c_.hidden_size, E = c_.num_experts, K = c_.experts_per_token;

    // weights.bin, whole: each tensor keeps its offset
    const engine::DenseWeights& w = ctx.weights;
    host_base_ = w.base();
    weights_ = DeviceMemory(w.bytes(), "weights.bin");
    check_cuda(cudaMemcpy(weights_.get(), host_base_, w.bytes(), cudaMemcpyHostToDevice), "uploading weights.bin");
    auto on_device = [&](const WeightMatrix& m) {
        WeightMatrix d = m;
        const auto moved = [&](const void* p) { return weights_.get() + (static_cast<const std::byte*>(p) - host_base_); };
        d.data = moved(m.data);
        if (m.scales) d.scales = reinterpret_cast<const uint16_t*>(moved(m.scales));
        if (m.biases) d.biases = reinterpret_cast<const uint16_t*>(moved(m.biases));
        return device_matrix(d);
    };
    auto vec = [&](const float* host) { return reinterpret_cast<const float*>(weights_.get() + (reinterpret_cast<const std::byte*>(host) - host_base_)); };
    embed_host_ = w.matrix("embed_tokens.weight", c_.vocab_size, H);
    head_ = on_device(w.has("lm_head.weight") || !c_.tie_word_embeddings ? w.matrix("lm_head.weight", c_.vocab_size, H)
                                                                           : embed_host_);
    final_norm_ = vec(w.vector("norm.weight", H));

    // every expert block of every MoE layer
    const int64_t moe_layers = c_.num_moe_layers();
    const uint64_t stride = moe_layers > 0 ? ctx.experts->layout().stride : 0;
    experts_ = DeviceMemory(static_cast<size_t>(moe_layers * E) * stride, "the experts");
    int64_t next_block = 0;
    for (int64_t l = 0; l < c_.num_layers; ++l) {
        const LayerDesc& d = c_.layers[static_cast<size_t>(l)];
        Layer ly;
        ly.input_norm = vec(w.vector(layer_name(l, "input_layernorm.weight"), H));
        ly.post_norm = vec(w.vector(layer_name(l, "post_attention_layernorm.weight"), H));
        ly.q = on_device(w.matrix(layer_name(l, "self_attn.q_proj.weight"), q_dim_, H));
        ly.k = on_device(w.matrix(layer_name(l, "self_attn.k_proj.weight"), kv_dim_, H));
        ly.v = on_device(w.matrix(layer_name(l, "self_attn.v_proj.weight"), kv_dim_, H));
        ly.o = on_device(w.matrix(layer_name(l, "self_attn.o_proj.weight"), H, q_dim_));
        if (c_.qk_norm == QkNorm::per_head) {
            ly.q_norm = vec(w.vector(layer_name(l, "self_attn.q_norm.weight"), c_.head_dim));
            ly.k_norm = vec(w.vector(layer_name(l, "self_attn.k_norm.weight"), c_.head_dim));
        } else if (c_.qk_norm == QkNorm::full_width) {
            ly.q_norm = vec(w.vector(layer_name(l, "self_attn.q_norm.weight"), q_dim_));
            ly.k_norm = vec(w.vector(layer_name(l, "self_attn.k_norm.weight"), kv_dim_));
        }
        ly.moe = d.ffn == FfnKind::moe;
        if (ly.moe) {
            ly.router = on_device(w.matrix(layer_name(l, "mlp.router.weight"), E, H));
            engine::ExpertStore& store = *ctx.experts;
            const int64_t chunk = store.slots();
            std::vector<int32_t> ids;
            std::vector<const std::byte*> blocks;
            for (int64_t first = 0; first < E; first += chunk) {
                const int64_t count = std::min(chunk, E - first);
                ids.resize(static_cast<size_t>(count));
                blocks.resize(static_cast<size_t>(count));
                for (int64_t i = 0; i < count; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(first + i);
                store.acquire(l, ids, blocks);
                if (first == 0) ly.experts = experts_.get() + static_cast<uint64_t>(next_block) * stride;
                for (int64_t i = 0; i < count; ++i) {
                    std::byte* dst = experts_.get() + static_cast<uint64_t>(next_block++) * stride;
                    check_cuda(cudaMemcpy(dst, blocks[static_cast<size_t>(i)], stride, cudaMemcpyHostToDevice), "uploading experts");
                }
                store.release_all();
            }
        } else {
            ly.gate = on_device(w.matrix(layer_name(l, "mlp.gate_proj.weight"), c_.intermediate_size, H));
            ly.up = on_device(w.matrix(layer_name(l, "mlp.up_proj.weight"), c_.intermediate_size, H));
            ly.down = on_device(w.matrix(layer_name(l, "mlp.down_proj.weight"), H, c_.intermediate_size));
        }
        layers_.push_back(std::move(ly));
    }

    kv_ = DeviceMemory(static_cast<size_t>(2 * c_.num_layers * ctx.kv.context() * kv_dim_) * sizeof(float), "the KV cache");
    const engine::Rope rope(c_);
    inv_freq_ = DeviceMemory(rope.inv_freq().size() * sizeof(float), "RoPE table");
    check_cuda(cudaMemcpy(inv_freq_.get(), rope.inv_freq().data(), rope.inv_freq().size() * sizeof(float),
                          cudaMemcpyHostToDevice), "uploading the RoPE table");

    const int64_t I = c_.expert_intermediate_size, F = c_.intermediate_size;
    const int64_t floats = 3 * H + 2 * q_dim_ + 2 * kv_dim_ + E + 2 * K * I + K * H + K + 1 + 2 * F + c_.vocab_size + K;
    scratch_ = DeviceMemory(static_cast<size_t>(floats) * sizeof(float), "activations");
    float* p = scratch_.get<float>();
    auto take = [&](int64_t n) { float* r = p; p += n; return r; };
    x_ = take(H), h_ = take(H), q_ = take(q_dim_), k_ = take(kv_dim_), v_ = take(kv_dim_), attn_ = take(q_dim_);
    proj_ = take(H), router_logits_ = take(E), eg_ = take(K * I), eu_ = take(K * I), ey_ = take(K * H), ew_ = take(K);
    one_ = take(1), dg_ = take(F), du_ = take(F), logits_ = take(c_.vocab_size);
    ids_ = reinterpret_cast<int32_t*>(take(K));
    const float one = 1.0f;
    check_cuda(cudaMemcpy(one_, &one, sizeof one, cudaMemcpyHostToDevice), "constant");
    host_x_.resize(static_cast<size_t>(H));
}

void GpuDecoder::add_to_residual(const float* y) { moe_combine(x_, y, one_, 1, 1, c_.hidden_size, stream_); }

void GpuDecoder::attention_block(const Layer& l, int64_t layer, int64_t position) {
    const int64_t H = c_.hidden_size, D = c_.head_dim;
    const float eps = static_cast<float>(c_.rms_norm_eps);
    rms_norm(x_, h_, 1, H, l.input_norm, eps, stream_);
    gemv(l.q, h_, 1, q_, stream_);
    gemv(l.k, h_, 1, k_, stream_);
    gemv(l.v, h_, 1, v_, stream_);
    if (c_.qk_norm == QkNorm::per_head) {
        rms_norm(q_, q_, c_.num_heads, D, l.q_norm, eps, stream_);
        rms_norm(k_, k_, c_.num_kv_heads, D, l.k_norm, eps, stream_);
    } else if (c_.qk_norm == QkNorm::full_width) {
        rms_norm(q_, q_, 1, q_dim_, l.q_norm, eps, stream_);
        rms_norm(k_, k_, 1, kv_dim_, l.k_norm, eps, stream_);
    }
    const bool interleaved = c_.rope.style == RopeStyle::interleaved;
    rope(q_, 1, c_.num_heads, D, c_.rope.rotary_dim, interleaved, inv_freq_.get<float>(), position, stream_);
    rope(k_, 1, c_.num_kv_heads, D, c_.rope.rotary_dim, interleaved, inv_freq_.get<float>(), position, stream_);
    float* kc = kv(layer, 0);
    float* vc = kv(layer, 1);
    check_cuda(cudaMemcpyAsync(kc + position * kv_dim_, k_, static_cast<size_t>(kv_dim_) * 4, cudaMemcpyDeviceToDevice, stream_), "KV write");
    check_cuda(cudaMemcpyAsync(vc + position * kv_dim_, v_, static_cast<size_t>(kv_dim_) * 4, cudaMemcpyDeviceToDevice, stream_), "KV write");
    const int64_t window =
        c_.layers[static_cast<size_t>(layer)].attention == AttentionKind::sliding ? c_.sliding_window : 0;
    attention(q_, kc, vc, attn_, 1, position, c_.num_heads, c_.num_kv_heads, D, window, stream_);
    gemv(l.o, attn_, 1, proj_, stream_);
    add_to_residual(proj_);
    rms_norm(x_, h_, 1, H, l.post_norm, eps, stream_);
}

void GpuDecoder::dense_block(const Layer& l) {
    const int64_t F = c_.intermediate_size;
    gemv(l.gate, h_, 1, dg_, stream_);
    gemv(l.up, h_, 1, du_, stream_);
    swiglu(dg_, du_, dg_, F, stream_);
    gemv(l.down, dg_, 1, proj_, stream_);
    add_to_residual(proj_);
}

void GpuDecoder::moe_block(const Layer& l) {
    const int64_t H = c_.hidden_size, I = c_.expert_intermediate_size, E = c_.num_experts, K = c_.experts_per_token;
    gemv(l.router, h_, 1, router_logits_, stream_);
    route(router_logits_, 1, E, K,
          c_.routing.function == RoutingFunction::softmax_topk ? RouteFunction::softmax_topk : RouteFunction::topk_softmax,
          c_.routing.normalize_topk, static_cast<float>(c_.routing.scaling_factor), ids_, ew_, stream_);
    // the chosen experts' products, each matrix kind in one launch that reads the ids on the GPU
    const auto& layout = ctx_.experts->layout();
    const auto stride = static_cast<int64_t>(layout.stride);
    auto record = [&](uint64_t offset, const pack::MatrixLayout& m) {
        return device_matrix(WeightMatrix::from_record(l.experts + offset, m));
    };
    gemv_experts(record(layout.gate_offset, layout.gate), stride, ids_, K, h_, 0, 1, eg_, stream_);
    gemv_experts(record(layout.up_offset, layout.up), stride, ids_, K, h_, 0, 1, eu_, stream_);
    swiglu(eg_, eu_, eg_, K * I, stream_);
    gemv_experts(record(layout.down_offset, layout.down), stride, ids_, K, eg_, I, 1, ey_, stream_);
    moe_combine(x_, ey_, ew_, 1, K, H, stream_);
}

void GpuDecoder::token(int32_t id, int64_t position, float* logits) {
    const int64_t H = c_.hidden_size;
    engine::decode_row(embed_host_, id, host_x_.data());
    check_cuda(cudaMemcpyAsync(x_, host_x_.data(), static_cast<size_t>(H) * 4, cudaMemcpyHostToDevice, stream_), "embedding");
    for (int64_t l = 0; l < c_.num_layers; ++l) {
        const Layer& ly = layers_[static_cast<size_t>(l)];
        attention_block(ly, l, position);
        if (ly.moe)
            moe_block(ly);
        else
            dense_block(ly);
    }
    if (logits) {
        rms_norm(x_, h_, 1, H, final_norm_, static_cast<float>(c_.rms_norm_eps), stream_);
        gemv(head_, h_, 1, logits_, stream_);
        check_cuda(cudaMemcpyAsync(logits, logits_, static_cast<size_t>(c_.vocab_size) * 4, cudaMemcpyDeviceToHost, stream_),
                   "logits");
        check_cuda(cudaStreamSynchronize(stream_), "forward");
    }
}

void GpuDecoder::forward(std::span<const int32_t> tokens, int64_t position, bool all_logits, float* logits) {
    const auto n = static_cast<int64_t>(tokens.size());
    for (int64_t t = 0; t < n; ++t) {
        const bool wanted = all_logits || t == n - 1;
        token(tokens[static_cast<size_t>(t)], position + t, wanted ? logits + (all_logits ? t * c_.vocab_size : 0) : nullptr);
    }
    check_cuda(cudaStreamSynchronize(stream_), "forward");
}

void GpuDecoder::context_to_host(int64_t positions) {
    const size_t bytes = static_cast<size_t>(positions * kv_dim_) * 4;
    for (int64_t l = 0; l < c_.num_layers; ++l) {
        check_cuda(cudaMemcpy(ctx_.kv.keys(l), kv(l, 0), bytes, cudaMemcpyDeviceToHost), "saving the KV cache");
        check_cuda(cudaMemcpy(ctx_.kv.values(l), kv(l, 1), bytes, cudaMemcpyDeviceToHost), "saving the KV cache");
    }
}

void GpuDecoder::context_from_host(int64_t positions) {
    const size_t bytes = static_cast<size_t>(positions * kv_dim_) * 4;
    for (int64_t l = 0; l < c_.num_layers; ++l) {
        check_cuda(cudaMemcpy(kv(l, 0), ctx_.kv.keys(l), bytes, cudaMemcpyHostToDevice), "loading the KV cache");
        check_cuda(cudaMemcpy(kv(l, 1), ctx_.kv.values(l), bytes, cudaMemcpyHostToDevice), "loading the KV cache");
    }
}

std::unique_ptr<engine::Model> make_gpu_decoder(const engine::ModelContext& context) {
    return std::make_unique<GpuDecoder>(context);
}

}  // namespace

void register_cuda_backend() { engine::set_cuda_model_factory(make_gpu_decoder); }

}  // namespace moepack::cuda
