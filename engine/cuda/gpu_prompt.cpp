// Prompts on the GPU in batches: up to PromptState::rows tokens go through each layer
// together, every affine product on the tensor cores (gemm_int8.cu), the routed experts
// grouped by expert (one grouped launch for gate+up+SwiGLU, one for down, then the weighted
// sum per token in slot order), attention over the cache for all the batch's rows. Only the
// last row's logits are computed unless every position's are asked for. Float (16-bit)
// experts have no tensor-core path here: such packs run prompts token by token.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>

#include "cuda/gpu_decoder_state.hpp"
#include "cuda_check.hpp"
#include "kv_cache.hpp"

namespace moepack::cuda {

namespace {

constexpr int64_t kPromptRows = 512;                 // tokens per batch at most
constexpr size_t kAttentionWorkspace = 64u << 20;    // bytes for the split attention's partial sums

}  // namespace

void GpuDecoder::allocate_prompt() {
    for (const Layer& l : layers_)
        if (l.moe && l.gate.format != DeviceFormat::affine) return;   // token by token
    auto p = std::make_unique<PromptState>();
    const int64_t R = std::min(kPromptRows, ctx_.kv.context());
    const int64_t H = c_.hidden_size, E = c_.num_experts, K = c_.experts_per_token, I = c_.expert_intermediate_size;
    const bool dense = std::any_of(layers_.begin(), layers_.end(), [](const Layer& l) { return !l.moe; });
    const int64_t F = dense ? c_.intermediate_size : 0;
    p->rows = R;
    p->floats = carve_floats(
        [&](auto take) {
            p->x = take(R * H), p->h = take(R * H), p->q = take(R * q_dim_), p->attn = take(R * q_dim_);
            p->k = take(R * kv_dim_), p->v = take(R * kv_dim_), p->router_logits = take(R * E), p->ew = take(R * K);
            p->act = take(R * K * I), p->y = take(R * K * H), p->dg = take(R * F), p->du = take(R * F);
            p->logits = take(c_.vocab_size);
            take_hybrid(p->hybrid, take, R);
        },
        "prompt activations");
    p->ints = DeviceMemory(static_cast<size_t>(2 * R + R * K + E + 1 + R * K + E + 1) * sizeof(int32_t), "prompt indices");
    int32_t* i = p->ints.get<int32_t>();
    p->tokens = i, p->positions = i + R, p->ids = i + 2 * R, p->offsets = i + 2 * R + R * K, p->order = p->offsets + E + 1;
    p->tiles = p->order + R * K;
    if (streaming_) p->ids_host = PinnedMemory(static_cast<size_t>(R * K) * sizeof(int32_t), "prompt routing (host)");
    p->io_host = PinnedMemory(static_cast<size_t>(2 * R) * sizeof(int32_t), "prompt tokens (host)");
    if (!prompt_attention_supports(c_.num_heads, c_.num_kv_heads, c_.head_dim)) {   // the split attention's partial sums
        const size_t per_row = attention_workspace_bytes(1, c_.num_heads, c_.head_dim, ctx_.kv.context());
        p->attention_rows = std::clamp<int64_t>(static_cast<int64_t>(kAttentionWorkspace / per_row), 1, R);
        p->workspace = DeviceMemory(per_row * static_cast<size_t>(p->attention_rows), "prompt attention workspace");
    }

    p->h_in = VectorInput(p->h, R, H);
    p->attn_in = VectorInput(p->attn, R, q_dim_);
    p->act_in = VectorInput(p->act, R * K, I);
    p->dense_act_in = VectorInput(p->dg, R, F);
    p->h_in.serve(head_);
    serve_hybrid(p->hybrid, p->h_in);
    for (const Layer& l : layers_) {
        for (const DeviceMatrix* m : {&l.gate, &l.up}) p->h_in.serve(*m);
        if (!l.linear) {
            for (const DeviceMatrix* m : {&l.q, &l.k, &l.v}) p->h_in.serve(*m);
            p->attn_in.serve(l.o);
        }
        if (l.moe) {
            p->h_in.serve(l.router);
            p->act_in.serve(l.down);
        } else {
            p->dense_act_in.serve(l.down);
        }
    }
    prompt_ = std::move(p);
}

void GpuDecoder::rows_product(const DeviceMatrix& w, VectorInput& in, int64_t n, float* y, GemvOutput output) {
    if (w.format == DeviceFormat::affine) {
        in.prepare(w, stream_, n);
        RowGroups rows;
        rows.count = n;
        gemm(w, {}, in.quantized(w), rows, y, output, stream_);
        return;
    }
    for (int64_t r = 0; r < n; r += kMaxGemvInputs) {
        ProductInput x;
        x.x = in.x() + r * w.cols;
        gemv(w, x, std::min(kMaxGemvInputs, n - r), y + r * w.rows, output, stream_);
    }
}

void GpuDecoder::run_prompt(std::span<const int32_t> tokens, int64_t position, bool all_logits, float* logits) {
    const auto total = static_cast<int64_t>(tokens.size());
    for (int64_t first = 0; first < total; first += prompt_->rows) {
        const int64_t count = std::min(prompt_->rows, total - first);
        const bool last = first + count == total;
        float* out = all_logits ? logits + first * c_.vocab_size : last ? logits : nullptr;
        run_batch(tokens.subspan(static_cast<size_t>(first), static_cast<size_t>(count)), position + first, all_logits, out);
    }
}

void GpuDecoder::run_batch(std::span<const int32_t> tokens, int64_t position, bool all_logits, float* logits) {
    PromptState& p = *prompt_;
    const auto n = static_cast<int64_t>(tokens.size());
    const int64_t H = c_.hidden_size, E = c_.num_experts, K = c_.experts_per_token;
    auto* io = p.io_host.get<int32_t>();
    std::copy(tokens.begin(), tokens.end(), io);
    for (int64_t t = 0; t < n; ++t) io[p.rows + t] = static_cast<int32_t>(position + t);
    check_cuda(cudaMemcpyAsync(p.tokens, io, static_cast<size_t>(2 * p.rows) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_),
               "prompt tokens");
    embed_rows(embed_, p.tokens, n, p.x, stream_);
    for (int64_t layer = 0; layer < c_.num_layers; ++layer) {
        const Layer& l = layers_[static_cast<size_t>(layer)];
        p.h_in.normalize(p.x, l.input_norm, eps_, stream_, n);
        if (l.linear)
            linear_attention_block(l, n, p.hybrid, p.h_in, p.x);
        else
            attention_block(l, layer, n, {p.h_in, p.attn_in, p.hybrid, p.q, p.k, p.v, p.attn, p.x, p.positions});
        p.h_in.normalize(p.x, l.post_norm, eps_, stream_, n);
        if (l.moe) {
            rows_product(l.router, p.h_in, n, p.router_logits, GemvOutput::store);
            route(p.router_logits, n, E, K,
                  c_.routing.function == RoutingFunction::softmax_topk ? RouteFunction::softmax_topk : RouteFunction::topk_softmax,
                  c_.routing.normalize_topk, static_cast<float>(c_.routing.scaling_factor), p.ids, p.ew, stream_);
            group_by_expert(p.ids, n, K, E, p.offsets, p.order, p.tiles, stream_);
            if (streaming_) fetch_batch_experts(layer, n);
            RowGroups groups;
            groups.offsets = p.offsets, groups.order = p.order, groups.tiles = p.tiles;
            groups.problems = E, groups.count = n * K, groups.input_div = K;
            p.h_in.prepare(l.gate, stream_, n);
            gemm_swiglu(l.gate, l.up, l.blocks, p.h_in.quantized(l.gate), groups, p.act, stream_);
            p.act_in.changed();
            p.act_in.prepare(l.down, stream_, n * K);
            groups.input_div = 1;
            gemm(l.down, l.blocks, p.act_in.quantized(l.down), groups, p.y, GemvOutput::store, stream_);
            combine_experts(p.x, p.y, p.ew, n, K, H, stream_);
            if (l.shared) shared_expert(l, n, p.hybrid, p.h_in, p.x);
        } else {
            rows_product(l.gate, p.h_in, n, p.dg, GemvOutput::store);
            rows_product(l.up, p.h_in, n, p.du, GemvOutput::store);
            swiglu(p.dg, p.du, p.dg, n, c_.intermediate_size, nullptr, stream_);
            p.dense_act_in.changed();
            rows_product(l.down, p.dense_act_in, n, p.x, GemvOutput::add);
        }
    }
    if (!logits) {
        check_cuda(cudaStreamSynchronize(stream_), "prompt");
        return;
    }
    const auto vocab_bytes = static_cast<size_t>(c_.vocab_size) * sizeof(float);
    if (all_logits) {
        if (!p.all_logits.get())
            p.all_logits = DeviceMemory(static_cast<size_t>(p.rows) * vocab_bytes, "prompt logits");
        p.h_in.normalize(p.x, final_norm_, eps_, stream_, n);
        rows_product(head_, p.h_in, n, p.all_logits.get<float>(), GemvOutput::store);
        check_cuda(cudaMemcpyAsync(logits, p.all_logits.get(), static_cast<size_t>(n) * vocab_bytes, cudaMemcpyDeviceToHost, stream_),
                   "logits");
    } else {
        p.h_in.normalize(p.x + (n - 1) * H, final_norm_, eps_, stream_, 1);
        p.h_in.prepare(head_, stream_, 1);
        gemv(head_, p.h_in(head_), 1, p.logits, GemvOutput::store, stream_);
        check_cuda(cudaMemcpyAsync(logits, p.logits, vocab_bytes, cudaMemcpyDeviceToHost, stream_), "logits");
    }
    check_cuda(cudaStreamSynchronize(stream_), "prompt");
}

}  // namespace moepack::cuda
