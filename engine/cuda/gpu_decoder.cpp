// The decoder of qwen3_moe, mixtral, olmoe, qwen3_next and qwen3_5_moe on the GPU: the dense weights resident in GPU
// memory (weights.bin uploaded whole), the routed experts too when they fit (else a cache of
// them: gpu_expert_cache.hpp, gpu_streamed_experts.cpp), the KV cache in GPU memory, tokens
// run one at a time. With every expert resident a token is one CUDA graph (captured
// at the first token, replayed after; MOEPACK_CUDA_GRAPHS=0 launches the kernels one by one
// instead): token id and position copied up from pinned memory, the embedding row decoded,
// per layer RMSNorm, the q/k/v products in one launch, q/k norms + RoPE + KV store in one,
// attention, the output product added to the residual, RMSNorm, then a dense SwiGLU MLP or
// the router, top-k on the GPU and the chosen experts (gate and up with SwiGLU in one
// launch, down and the weighted sum into the residual in another, the expert ids read on
// the GPU); the head's logits come down at the end. Affine products read int8-quantised
// inputs (VectorInput). Gated attention, Gated DeltaNet layers and the gated shared expert
// are steps of gpu_hybrid_layers.cpp. The CPU graph (models/decoder.cpp) is the reference.
#include "cuda/gpu_decoder.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "blocks.hpp"
#include "cuda/device_resources.hpp"
#include "cuda/gpu_decoder_state.hpp"
#include "cuda_check.hpp"
#include "dense_weights.hpp"
#include "expert_store.hpp"
#include "kernels.hpp"
#include "kv_cache.hpp"
#include "model.hpp"
#include "models/gated_deltanet.hpp"
#include "pack_reader.hpp"
#include "weight_view.hpp"

namespace moepack::cuda {

using engine::WeightMatrix;

namespace {

std::string layer_name(int64_t layer, const char* rest) { return concat("layers.", layer, ".", rest); }

// Switches for comparisons, on unless the variable is "0": MOEPACK_CUDA_GRAPHS (graph
// capture; off: kernels launched one by one), MOEPACK_CUDA_L2_PREFETCH (dense weights
// pulled into L2 on a side stream ahead of their products).
bool switched_on(const char* variable) {
    const char* v = std::getenv(variable);
    return !(v && std::strcmp(v, "0") == 0);
}

// Why the graph cannot run a model ("" when it can).
std::string what_cuda_lacks(const ModelConfig& c) {
    if ((c.attention != AttentionType::gqa && c.attention != AttentionType::gated_gqa) || c.attention_bias ||
        c.activation != Activation::swiglu || c.expert_bias)
        return concat(to_string(c.family), " layers have no kernels yet");
    if (c.num_shared_experts > 1 || (c.num_shared_experts == 1 && !c.shared_expert_gated))
        return "shared experts other than one gated shared expert have no kernels yet";
    const DeltaRuleShape delta = engine::delta_rule_shape(c);
    for (const LayerDesc& d : c.layers)
        if (d.attention == AttentionKind::linear && !gated_deltanet_recur_supports(delta))
            return concat("linear attention with ", delta.nk, " key and ", delta.nv, " value heads of ", delta.dk, " and ",
                          delta.dv, " values (the delta-rule kernel takes value heads up to 256 wide and S within a block's "
                          "shared memory)");
    if (c.head_dim % 4 != 0 || c.head_dim > 256)
        return concat("head_dim ", c.head_dim, " (the attention kernels take multiples of 4 up to 256)");
    return "";
}

bool cuda_available() {
    int devices = 0;
    return cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0;
}

// Bytes each copy-rate probe moves at open (a few ms each).
constexpr size_t kRateProbeBytes = 256u << 20;

}  // namespace

GpuDecoder::GpuDecoder(const engine::ModelContext& ctx)
    : ctx_(ctx), c_(ctx.config), q_dim_(c_.num_heads * c_.head_dim), kv_dim_(c_.num_kv_heads * c_.head_dim),
      eps_(static_cast<float>(c_.rms_norm_eps)), gated_(c_.attention == AttentionType::gated_gqa), use_graphs_(switched_on("MOEPACK_CUDA_GRAPHS")) {
    const std::string unsupported = what_cuda_lacks(c_);
    if (!unsupported.empty())
        fail("the CUDA backend runs qwen3_moe, mixtral, olmoe, qwen3_next and qwen3_5_moe models so far: ", unsupported);
    if (ctx_.kv.recurrent_floats() > 0) {   // the model has linear-attention layers
        delta_rule_ = engine::delta_rule_shape(c_);
        linear_width_ = delta_rule_.width();
        linear_channels_ = delta_rule_.channels();
    }
    if (!cuda_available()) fail("CUDA backend: no CUDA device is available");
    stream_owner_ = std::make_unique<Stream>();
    stream_ = *stream_owner_;
    if (switched_on("MOEPACK_CUDA_L2_PREFETCH")) l2_ahead_ = std::make_unique<L2Ahead>();
    ctx_.device.used = true;
    ctx_.device.host_to_device_bytes_s = host_to_device_rate(kRateProbeBytes);
    ctx_.device.device_memory_bytes_s = device_memory_rate(kRateProbeBytes);
    upload_weights();
    allocate_recurrent_states();
    allocate_activations();
    allocate_streaming();
    allocate_prompt();
}

void GpuDecoder::upload_weights() {
    const int64_t H = c_.hidden_size, E = c_.num_experts, S = c_.shared_expert_intermediate_size;
    const int64_t C = linear_channels_, V = linear_width_, nv = delta_rule_.nv;
    // weights.bin, whole: each tensor keeps its offset
    const engine::DenseWeights& w = ctx_.weights;
    const std::byte* host_base = w.base();
    weights_ = DeviceMemory(w.bytes(), "weights.bin");
    check_cuda(cudaMemcpy(weights_.get(), host_base, w.bytes(), cudaMemcpyHostToDevice), "uploading weights.bin");
    // read_per_token: the matrix is read whole by every decode token (not the embedding)
    auto on_device = [&](const WeightMatrix& m, bool read_per_token = true) {
        if (read_per_token) token_weight_bytes_ += m.bytes();
        WeightMatrix d = m;
        const auto moved = [&](const void* p) { return weights_.get() + (static_cast<const std::byte*>(p) - host_base); };
        d.data = moved(m.data);
        if (m.scales) d.scales = reinterpret_cast<const uint16_t*>(moved(m.scales));
        if (m.biases) d.biases = reinterpret_cast<const uint16_t*>(moved(m.biases));
        return device_matrix(d);
    };
    auto vec = [&](const float* host) { return reinterpret_cast<const float*>(weights_.get() + (reinterpret_cast<const std::byte*>(host) - host_base)); };
    const WeightMatrix embed = w.matrix("embed_tokens.weight", c_.vocab_size, H);
    embed_ = on_device(embed, false);
    head_ = on_device(w.has("lm_head.weight") || !c_.tie_word_embeddings ? w.matrix("lm_head.weight", c_.vocab_size, H) : embed);
    final_norm_ = vec(w.vector("norm.weight", H));

    if (c_.num_moe_layers() > 0) experts_ = std::make_unique<GpuExpertCache>(*ctx_.experts, c_, ctx_.device_expert_bytes, ctx_.device);
    for (int64_t l = 0; l < c_.num_layers; ++l) {
        Layer ly;
        ly.input_norm = vec(w.vector(layer_name(l, "input_layernorm.weight"), H));
        ly.post_norm = vec(w.vector(layer_name(l, "post_attention_layernorm.weight"), H));
        ly.linear = c_.layers[static_cast<size_t>(l)].attention == AttentionKind::linear;
        if (ly.linear) {   // Gated DeltaNet: the weights engine/models/gated_deltanet.cpp binds
            ly.in_qkv = on_device(w.matrix(layer_name(l, "linear_attn.in_proj_qkv.weight"), C, H));
            ly.in_z = on_device(w.matrix(layer_name(l, "linear_attn.in_proj_z.weight"), V, H));
            ly.in_b = on_device(w.matrix(layer_name(l, "linear_attn.in_proj_b.weight"), nv, H));
            ly.in_a = on_device(w.matrix(layer_name(l, "linear_attn.in_proj_a.weight"), nv, H));
            ly.out_proj = on_device(w.matrix(layer_name(l, "linear_attn.out_proj.weight"), H, V));
            ly.conv = vec(w.values(layer_name(l, "linear_attn.conv1d.weight"), {C, c_.linear.conv_kernel}));
            ly.a_log = vec(w.vector(layer_name(l, "linear_attn.A_log"), nv));
            ly.dt_bias = vec(w.vector(layer_name(l, "linear_attn.dt_bias"), nv));
            ly.linear_norm = vec(w.vector(layer_name(l, "linear_attn.norm.weight"), delta_rule_.dv));
            token_weight_bytes_ += 2 * static_cast<uint64_t>(nv * delta_rule_.dk * delta_rule_.dv) * sizeof(float);   // S
        } else {
            ly.q = on_device(w.matrix(layer_name(l, "self_attn.q_proj.weight"), gated_ ? 2 * q_dim_ : q_dim_, H));
            ly.k = on_device(w.matrix(layer_name(l, "self_attn.k_proj.weight"), kv_dim_, H));
            ly.v = on_device(w.matrix(layer_name(l, "self_attn.v_proj.weight"), kv_dim_, H));
            ly.o = on_device(w.matrix(layer_name(l, "self_attn.o_proj.weight"), H, q_dim_));
            if (c_.qk_norm != QkNorm::none) {
                const bool per_head = c_.qk_norm == QkNorm::per_head;
                ly.q_norm = vec(w.vector(layer_name(l, "self_attn.q_norm.weight"), per_head ? c_.head_dim : q_dim_));
                ly.k_norm = vec(w.vector(layer_name(l, "self_attn.k_norm.weight"), per_head ? c_.head_dim : kv_dim_));
            }
        }
        ly.moe = c_.layers[static_cast<size_t>(l)].ffn == FfnKind::moe;
        if (ly.moe) {
            ly.router = on_device(w.matrix(layer_name(l, "mlp.router.weight"), E, H));
            const auto& layout = ctx_.experts->layout();
            auto record = [&](uint64_t offset, const pack::MatrixLayout& m) {
                const WeightMatrix host = WeightMatrix::from_record(experts_->base(l) + offset, m);
                token_weight_bytes_ += static_cast<uint64_t>(c_.experts_per_token) * host.bytes();
                return device_matrix(host);
            };
            ly.gate = record(layout.gate_offset, layout.gate);
            ly.up = record(layout.up_offset, layout.up);
            ly.down = record(layout.down_offset, layout.down);
            ly.blocks = experts_->blocks(l);
            ly.shared = c_.num_shared_experts == 1;
            if (ly.shared) {
                ly.shared_gate = on_device(w.matrix(layer_name(l, "mlp.shared_expert.gate_proj.weight"), S, H));
                ly.shared_up = on_device(w.matrix(layer_name(l, "mlp.shared_expert.up_proj.weight"), S, H));
                ly.shared_down = on_device(w.matrix(layer_name(l, "mlp.shared_expert.down_proj.weight"), H, S));
                ly.shared_score = on_device(w.matrix(layer_name(l, "mlp.shared_expert_gate.weight"), 1, H));
            }
        } else {
            ly.gate = on_device(w.matrix(layer_name(l, "mlp.gate_proj.weight"), c_.intermediate_size, H));
            ly.up = on_device(w.matrix(layer_name(l, "mlp.up_proj.weight"), c_.intermediate_size, H));
            ly.down = on_device(w.matrix(layer_name(l, "mlp.down_proj.weight"), H, c_.intermediate_size));
        }
        if (l2_ahead_) {   // the layer's weights outside the routed experts (whose gate, up, down are block 0's)
            const DeviceMatrix none;
            l2_ahead_->inputs.push_back(weight_spans({ly.q, ly.k, ly.v, ly.in_qkv, ly.in_z, ly.in_b, ly.in_a}));
            l2_ahead_->rest.push_back(weight_spans({ly.o, ly.out_proj, ly.router, ly.shared_gate, ly.shared_up, ly.shared_down,
                                                   ly.shared_score, ly.moe ? none : ly.gate, ly.moe ? none : ly.up,
                                                   ly.moe ? none : ly.down}));
        }
        layers_.push_back(std::move(ly));
    }
    const engine::Rope rope(c_);
    inv_freq_ = DeviceMemory(rope.inv_freq().size() * sizeof(float), "RoPE table");
    check_cuda(cudaMemcpy(inv_freq_.get(), rope.inv_freq().data(), rope.inv_freq().size() * sizeof(float),
                          cudaMemcpyHostToDevice), "uploading the RoPE table");
    rope_ = RopeTable{rope.rotary_dim(), rope.style() == RopeStyle::interleaved, inv_freq_.get<float>()};
}

void GpuDecoder::allocate_activations() {
    const int64_t H = c_.hidden_size, E = c_.num_experts, K = c_.experts_per_token;
    // keys and values for the attention layers only (a linear layer keeps a recurrent state)
    const int64_t cache_floats = ctx_.kv.context() * kv_dim_;
    int64_t attention_layers = 0;
    for (const Layer& l : layers_) attention_layers += l.linear ? 0 : 1;
    kv_ = DeviceMemory(static_cast<size_t>(2 * attention_layers * cache_floats) * sizeof(float), "the KV cache");
    float* next = kv_.get<float>();
    for (Layer& l : layers_)
        if (!l.linear) {
            l.keys = next, l.values = next + cache_floats;
            next += 2 * cache_floats;
        }
    const int64_t I = c_.expert_intermediate_size, F = c_.intermediate_size;
    scratch_ = carve_floats(
        [&](auto take) {
            x_ = take(H), h_ = take(H), q_ = take(q_dim_), k_ = take(kv_dim_), v_ = take(kv_dim_), attn_ = take(q_dim_);
            router_logits_ = take(E), act_ = take(K * I), ew_ = take(K), dg_ = take(F), du_ = take(F);
            logits_ = take(c_.vocab_size), ids_ = reinterpret_cast<int32_t*>(take(K));
            take_hybrid(hybrid_, take, 1);
        },
        "activations");
    attention_workspace_ = DeviceMemory(attention_workspace_bytes(1, c_.num_heads, c_.head_dim, ctx_.kv.context()),
                                        "attention workspace");
    io_ = DeviceMemory(2 * sizeof(int32_t), "token and position");
    io_host_ = PinnedMemory(2 * sizeof(int32_t), "token and position (host)");

    h_in_ = VectorInput(h_, 1, H);
    attn_in_ = VectorInput(attn_, 1, q_dim_);
    act_in_ = VectorInput(act_, K, I);
    dense_act_in_ = VectorInput(dg_, 1, F);
    h_in_.serve(head_);
    serve_hybrid(hybrid_, h_in_);
    for (const Layer& l : layers_) {
        if (!l.linear) {
            for (const DeviceMatrix* m : {&l.q, &l.k, &l.v}) h_in_.serve(*m);
            attn_in_.serve(l.o);
        }
        if (l.moe) {
            h_in_.serve(l.router);
            h_in_.serve(l.gate);
            act_in_.serve(l.down);
        } else {
            h_in_.serve(l.gate);
            h_in_.serve(l.up);
            dense_act_in_.serve(l.down);
        }
    }
}

// One launch per run of neighbours of one encoding (the usual q, k, v: one launch).
void GpuDecoder::products(std::initializer_list<GemvProduct> list, VectorInput& in, GemvOutput output) {
    const GemvProduct* p = list.begin();
    while (p != list.end()) {
        const GemvProduct* end = p + 1;
        while (end != list.end() && end - p < kMaxGemvProducts && end->w.format == p->w.format && end->w.bits == p->w.bits &&
               end->w.group_size == p->w.group_size)
            ++end;
        in.prepare(p->w, stream_, 1);
        gemv(p, static_cast<int>(end - p), in(p->w), 1, output, stream_);
        p = end;
    }
}

// q, k, v products, the prologue, attention, the output product added to x; a decode token
// (one row: the grouped decode products, attention quantising its output for o unless a
// gate scales it after) or a prompt batch (the tensor-core products and attention, or the
// split kernel for head sizes those do not take).
void GpuDecoder::attention_block(const Layer& l, int64_t layer, int64_t n, const AttentionRows& rows) {
    const int64_t D = c_.head_dim, H = c_.num_heads, Hkv = c_.num_kv_heads;
    HybridBuffers& b = rows.hybrid;
    project({{l.q, gated_ ? b.q_gate : rows.q}, {l.k, rows.k}, {l.v, rows.v}}, rows.h_in, n, GemvOutput::store);
    if (gated_) split_gated_q(b.q_gate, rows.q, b.gate, n, H, D, stream_);
    const bool per_head = c_.qk_norm == QkNorm::per_head;
    if (c_.qk_norm == QkNorm::full_width) {
        rms_norm(rows.q, rows.q, n, q_dim_, l.q_norm, eps_, stream_);
        rms_norm(rows.k, rows.k, n, kv_dim_, l.k_norm, eps_, stream_);
    }
    attention_prologue(rows.q, rows.k, rows.v, n, H, Hkv, D, per_head ? l.q_norm : nullptr, per_head ? l.k_norm : nullptr, eps_,
                       rope_, rows.positions, l.keys, l.values, stream_);
    const int64_t window = c_.layers[static_cast<size_t>(layer)].attention == AttentionKind::sliding ? c_.sliding_window : 0;
    const int64_t context = ctx_.kv.context();
    if (n == 1) {
        attention(rows.q, l.keys, l.values, rows.attn, 1, rows.positions, H, Hkv, D, window, context,
                  attention_workspace_.get<float>(), gated_ ? nullptr : rows.attn_in.produce(l.o), stream_);
    } else {
        const PromptState& p = *prompt_;
        if (prompt_attention_supports(H, Hkv, D))
            prompt_attention(rows.q, l.keys, l.values, rows.attn, n, rows.positions, H, Hkv, D, window, stream_);
        else
            for (int64_t r = 0; r < n; r += p.attention_rows)
                attention(rows.q + r * q_dim_, l.keys, l.values, rows.attn + r * q_dim_, std::min(p.attention_rows, n - r),
                          rows.positions + r, H, Hkv, D, window, context, p.workspace.get<float>(), nullptr, stream_);
    }
    if (gated_) apply_output_gate(rows.attn, b.gate, n * q_dim_, stream_);
    if (gated_ || n > 1) rows.attn_in.changed();
    project({{l.o, rows.x}}, rows.attn_in, n, GemvOutput::add);
}

void GpuDecoder::pull_into_l2(L2Part part, int64_t layer) {
    if (!l2_ahead_ || layer >= c_.num_layers) return;
    const std::vector<DeviceSpan>& list = (part == L2Part::inputs ? l2_ahead_->inputs : l2_ahead_->rest)[static_cast<size_t>(layer)];
    check_cuda(cudaEventRecord(l2_ahead_->fork, stream_), "forking the L2 prefetch");
    check_cuda(cudaStreamWaitEvent(l2_ahead_->stream, l2_ahead_->fork), "forking the L2 prefetch");
    prefetch_to_l2(list.data(), static_cast<int>(list.size()), l2_ahead_->stream);
    l2_ahead_->pending = true;
}

void GpuDecoder::join_l2_prefetches() {
    if (!l2_ahead_ || !l2_ahead_->pending) return;
    check_cuda(cudaEventRecord(l2_ahead_->join, l2_ahead_->stream), "joining the L2 prefetch");
    check_cuda(cudaStreamWaitEvent(stream_, l2_ahead_->join), "joining the L2 prefetch");
    l2_ahead_->pending = false;
}

void GpuDecoder::dense_block(const Layer& l, int64_t layer) {
    products({{l.gate, dg_}, {l.up, du_}}, h_in_, GemvOutput::store);
    pull_into_l2(L2Part::inputs, layer + 1);
    swiglu(dg_, du_, dg_, 1, c_.intermediate_size, nullptr, stream_);
    dense_act_in_.changed();
    products({{l.down, x_}}, dense_act_in_, GemvOutput::add);
}

void GpuDecoder::moe_block(const Layer& l, int64_t layer) {
    const int64_t E = c_.num_experts, K = c_.experts_per_token;
    products({{l.router, router_logits_}}, h_in_, GemvOutput::store);
    const RouteFunction function =
        c_.routing.function == RoutingFunction::softmax_topk ? RouteFunction::softmax_topk : RouteFunction::topk_softmax;
    const auto scaling = static_cast<float>(c_.routing.scaling_factor);
    if (streaming_) {
        route(router_logits_, 1, E, K, function, c_.routing.normalize_topk, scaling, ids_, ew_, stream_);
        streamed_token_experts(l, layer);
    } else {
        h_in_.prepare(l.gate, stream_);
        expert_gate_up_routed(router_logits_, E, function, c_.routing.normalize_topk, scaling, l.gate, l.up, l.blocks, K,
                              h_in_(l.gate), act_, ids_, ew_, stream_);
        pull_into_l2(L2Part::inputs, layer + 1);
        act_in_.changed();
        act_in_.prepare(l.down, stream_);
        expert_down_add(l.down, l.blocks, ids_, ew_, K, act_in_(l.down), x_, stream_);
    }
    if (l.shared) shared_expert(l, 1, hybrid_, h_in_, x_);
}

void GpuDecoder::enqueue_token(bool logits) {
    check_cuda(cudaMemcpyAsync(io_.get(), io_host_.get(), 2 * sizeof(int32_t), cudaMemcpyHostToDevice, stream_), "token");
    embed_rows(embed_, io_.get<int32_t>(), 1, x_, stream_);
    for (int64_t l = 0; l < c_.num_layers; ++l) {
        const Layer& ly = layers_[static_cast<size_t>(l)];
        h_in_.normalize(x_, ly.input_norm, eps_, stream_);
        pull_into_l2(L2Part::rest, l);   // read once the layer's input products are done
        if (ly.linear)
            linear_attention_block(ly, 1, hybrid_, h_in_, x_);
        else
            attention_block(ly, l, 1, {h_in_, attn_in_, hybrid_, q_, k_, v_, attn_, x_, io_.get<int32_t>() + 1});
        h_in_.normalize(x_, ly.post_norm, eps_, stream_);
        if (ly.moe)
            moe_block(ly, l);
        else
            dense_block(ly, l);
    }
    join_l2_prefetches();
    if (!logits) return;
    h_in_.normalize(x_, final_norm_, eps_, stream_);
    products({{head_, logits_}}, h_in_, GemvOutput::store);
}

void GpuDecoder::run_token(float* logits) {
    ctx_.times.weight_bytes += token_weight_bytes_;
    const bool wanted = logits != nullptr;
    if (use_graphs_ && !streaming_) {   // streaming waits for each layer's routing: no graph
        CapturedGraph& graph = graphs_[wanted ? 1 : 0];
        if (!graph.ready()) graph.capture(stream_, [&] { enqueue_token(wanted); });
        graph.launch(stream_);
    } else {
        enqueue_token(wanted);
    }
    // after the graph: the destination changes from call to call (no host-side copy after)
    if (wanted)
        check_cuda(cudaMemcpyAsync(logits, logits_, static_cast<size_t>(c_.vocab_size) * sizeof(float), cudaMemcpyDeviceToHost,
                                   stream_),
                   "logits");
    check_cuda(cudaStreamSynchronize(stream_), "forward");
}

void GpuDecoder::forward(std::span<const int32_t> tokens, int64_t position, bool all_logits, float* logits) {
    const auto n = static_cast<int64_t>(tokens.size());
    if (position < 0 || position + n > ctx_.kv.context())
        fail("CUDA: positions ", position, " to ", position + n, " do not fit a context of ", ctx_.kv.context());
    for (const int32_t id : tokens)
        if (id < 0 || id >= c_.vocab_size) fail("token id ", id, " is outside the vocabulary of ", c_.vocab_size);
    if (position == 0) clear_recurrent_states();   // a new context: the linear layers start from zero
    if (n > 1 && prompt_) return run_prompt(tokens, position, all_logits, logits);
    auto* io = io_host_.get<int32_t>();
    for (int64_t t = 0; t < n; ++t) {
        const int32_t id = tokens[static_cast<size_t>(t)];
        const bool wanted = all_logits || t == n - 1;
        io[0] = id;
        io[1] = static_cast<int32_t>(position + t);
        run_token(wanted ? logits + (all_logits ? t * c_.vocab_size : 0) : nullptr);
    }
}

// A linear layer keeps its recurrent state where an attention layer keeps its keys and values.
void GpuDecoder::context_to_host(int64_t positions) {
    const size_t bytes = static_cast<size_t>(positions * kv_dim_) * 4;
    const size_t state_bytes = static_cast<size_t>(ctx_.kv.recurrent_floats()) * sizeof(float);
    for (int64_t l = 0; l < c_.num_layers; ++l) {
        const Layer& ly = layers_[static_cast<size_t>(l)];
        if (ly.linear) {
            check_cuda(cudaMemcpy(ctx_.kv.recurrent(l), ly.state, state_bytes, cudaMemcpyDeviceToHost), "saving a recurrent state");
            continue;
        }
        check_cuda(cudaMemcpy(ctx_.kv.keys(l), ly.keys, bytes, cudaMemcpyDeviceToHost), "saving the KV cache");
        check_cuda(cudaMemcpy(ctx_.kv.values(l), ly.values, bytes, cudaMemcpyDeviceToHost), "saving the KV cache");
    }
}

void GpuDecoder::context_from_host(int64_t positions) {
    const size_t bytes = static_cast<size_t>(positions * kv_dim_) * 4;
    const size_t state_bytes = static_cast<size_t>(ctx_.kv.recurrent_floats()) * sizeof(float);
    for (int64_t l = 0; l < c_.num_layers; ++l) {
        const Layer& ly = layers_[static_cast<size_t>(l)];
        if (ly.linear) {
            check_cuda(cudaMemcpy(ly.state, ctx_.kv.recurrent(l), state_bytes, cudaMemcpyHostToDevice), "loading a recurrent state");
            continue;
        }
        check_cuda(cudaMemcpy(ly.keys, ctx_.kv.keys(l), bytes, cudaMemcpyHostToDevice), "loading the KV cache");
        check_cuda(cudaMemcpy(ly.values, ctx_.kv.values(l), bytes, cudaMemcpyHostToDevice), "loading the KV cache");
    }
}

namespace {

std::unique_ptr<engine::Model> make_gpu_decoder(const engine::ModelContext& context) {
    return std::make_unique<GpuDecoder>(context);
}

bool runs_on_cuda(const ModelConfig& c) { return what_cuda_lacks(c).empty(); }

uint64_t free_gpu_memory() {
    if (!cuda_available()) fail("CUDA backend: no CUDA device is available");
    size_t free = 0, total = 0;
    check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    return free;
}

// A refusal is not an error here; it is cleared so that no later launch check reports it.
bool pin_host(void* data, size_t bytes) {
    if (cudaHostRegister(data, bytes, cudaHostRegisterDefault) == cudaSuccess) return true;
    cudaGetLastError();
    return false;
}
void unpin_host(void* data) {
    if (cudaHostUnregister(data) != cudaSuccess) cudaGetLastError();
}

}  // namespace

void register_cuda_backend() {
    engine::set_cuda_backend({make_gpu_decoder, cuda_available, runs_on_cuda, free_gpu_memory, pin_host, unpin_host});
}

}  // namespace moepack::cuda
