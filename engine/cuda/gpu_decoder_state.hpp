// The CUDA backend's decoder (qwen3_moe, mixtral, olmoe, qwen3_next, qwen3_5_moe): its state
// and steps, shared by gpu_decoder.cpp (set-up and the one-token graph), gpu_prompt.cpp
// (prompts in batches through the tensor-core products) and gpu_hybrid_layers.cpp (gated
// attention, Gated DeltaNet layers, the gated shared expert).
#pragma once

#include <initializer_list>
#include <memory>
#include <span>
#include <vector>

#include "cuda/device_resources.hpp"
#include "cuda/gpu_expert_cache.hpp"
#include "cuda/host_experts.hpp"
#include "kernels.hpp"
#include "kv_cache.hpp"
#include "model.hpp"

namespace moepack::cuda {

struct Layer {
    const float *input_norm = nullptr, *post_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;   // device
    DeviceMatrix q, k, v, o;               // full attention; q [Nq * D, H], [Nq * 2 * D, H] when gated
    float *keys = nullptr, *values = nullptr;   // full attention: its KV cache, [ctx, Nkv * D] each
    bool linear = false;                   // a Gated DeltaNet layer:
    // in_proj_qkv [C, H], in_proj_z [V, H], in_proj_b / in_proj_a [nv, H], out_proj [H, V]
    // (C = 2 nk dk + nv dv channels, V = nv dv)
    DeviceMatrix in_qkv, in_z, in_b, in_a, out_proj;
    const float *conv = nullptr, *a_log = nullptr, *dt_bias = nullptr, *linear_norm = nullptr;   // [C, K], [nv], [nv], [dv]
    float* state = nullptr;                // the convolution's last K - 1 inputs [K - 1, C], then S [nv, dk, dv]
    bool moe = false;
    DeviceMatrix router, gate, up, down;   // moe: the router and block 0's expert records; dense: the MLP
    ExpertBlocks blocks;                   // moe: where expert e's block lies from block 0
    bool shared = false;                   // moe: plus a shared expert scaled by sigmoid(shared_score . h)
    DeviceMatrix shared_gate, shared_up, shared_down, shared_score;   // [S, H], [S, H], [H, S], [1, H]
};

// The buffers of the steps of gated attention, linear attention and the shared expert, for
// `rows` rows (a decode token's 1, a prompt batch's): empty where the model has no such step.
struct HybridBuffers {
    float *q_gate, *gate;                       // [rows, 2 q_dim], [rows, q_dim]
    float *mixed, *conv_out, *z, *b, *a, *o;    // [rows, C] twice, [rows, V], [rows, nv] twice, [rows, V]
    float *shared_g, *shared_u, *shared_s;      // [rows, S] twice, [rows]
    VectorInput o_in, shared_act_in;            // o and shared_g as product inputs
};

class GpuDecoder final : public engine::Model {
public:
    explicit GpuDecoder(const engine::ModelContext& ctx);
    void forward(std::span<const int32_t> tokens, int64_t position, bool all_logits, float* logits) override;
    void context_to_host(int64_t positions) override;
    void context_from_host(int64_t positions) override;

private:
    // Prompts in batches of up to PromptState::rows tokens (gpu_prompt.cpp); null when the
    // experts are not affine (tensor-core products need codes), prompts then run token by token.
    struct PromptState {
        int64_t rows = 0, attention_rows = 0;   // batch rows; rows per split-attention launch (0: prompt_attention)
        DeviceMemory floats, ints, workspace, all_logits;
        PinnedMemory io_host;                   // tokens [rows], then positions [rows]
        // [rows, H] x, h; [rows, q_dim] q, attn; [rows, kv_dim] k, v; [rows, E] router logits;
        // [rows, K] weights; [rows * K, I] act; [rows * K, H] y; [rows, F] dense g, u; [V] logits
        float *x, *h, *q, *k, *v, *attn, *router_logits, *ew, *act, *y, *dg, *du, *logits;
        HybridBuffers hybrid;
        int32_t *tokens, *positions, *ids, *offsets, *order, *tiles;
        PinnedMemory ids_host;                  // [rows * K]: the routing, when experts stream in
        VectorInput h_in, attn_in, act_in, dense_act_in;
    };
    void allocate_prompt();
    void run_prompt(std::span<const int32_t> tokens, int64_t position, bool all_logits, float* logits);
    void run_batch(std::span<const int32_t> tokens, int64_t position, bool all_logits, float* logits);
    // y [n, w.rows] (=|+=) in [n, w.cols] . w^T: tensor cores for affine w, else the decode
    // product 8 rows at a time.
    void rows_product(const DeviceMatrix& w, VectorInput& in, int64_t n, float* y, GemvOutput output);
    void upload_weights();
    void allocate_activations();
    // the token and position in io_host_; its logits [vocab] copied to `logits` (host memory,
    // straight there when it is page-locked) unless null
    void run_token(float* logits);
    void enqueue_token(bool logits);    // what one token puts on the stream (captured as a graph)
    // The arrays a full-attention layer works in: a decode token's or a prompt batch's.
    struct AttentionRows {
        VectorInput& h_in;      // the normalised input [n, H]
        VectorInput& attn_in;   // attention's output [n, q_dim] as the o product's input
        HybridBuffers& hybrid;  // gated attention's q_gate and gate
        float *q, *k, *v, *attn, *x;
        const int32_t* positions;   // device memory [n]
    };
    void attention_block(const Layer& l, int64_t layer, int64_t n, const AttentionRows& rows);
    // gpu_hybrid_layers.cpp: weights, buffers and steps of gated attention, Gated DeltaNet
    // layers and the shared expert; their recurrent states (zeroed at position 0, saved
    // and loaded with the KV cache)
    void allocate_recurrent_states();
    template <typename Take>
    void take_hybrid(HybridBuffers& b, Take take, int64_t rows) const;
    void serve_hybrid(HybridBuffers& b, VectorInput& h_in) const;
    void linear_attention_block(const Layer& l, int64_t n, HybridBuffers& b, VectorInput& h_in, float* x);
    void shared_expert(const Layer& l, int64_t n, HybridBuffers& b, VectorInput& h_in, float* x);
    void clear_recurrent_states();
    // products of n rows sharing an input: one grouped decode launch per run of one
    // encoding for a token, the prompt products (rows_product) for a batch
    void project(std::initializer_list<GemvProduct> list, VectorInput& in, int64_t n, GemvOutput output);
    void moe_block(const Layer& l, int64_t layer);
    // Experts not all in GPU memory (gpu_streamed_experts.cpp): a token's routing crosses to
    // the host, the misses are copied over or computed on the CPU; a batch's experts are
    // fetched before its grouped products.
    void allocate_streaming();
    void calibrate_cpu_experts();
    void streamed_token_experts(const Layer& l, int64_t layer);
    void predict_next_layer(int64_t layer);
    void check_prediction(int64_t layer);
    void prefetch_next_layer(int64_t layer);
    void fetch_batch_experts(int64_t layer, int64_t n);
    int64_t cpu_share(int64_t misses) const;
    void dense_block(const Layer& l, int64_t layer);
    // A part of a layer's weights (none past the last layer, nor with the prefetch off)
    // pulled into L2 on the side stream, beside the work that follows on the main stream;
    // the side stream joins the main one at the token's end.
    enum class L2Part { inputs, rest };
    void pull_into_l2(L2Part part, int64_t layer);
    void join_l2_prefetches();
    void products(std::initializer_list<GemvProduct> list, VectorInput& in, GemvOutput output);

    engine::ModelContext ctx_;
    const ModelConfig& c_;
    int64_t q_dim_, kv_dim_;
    float eps_;
    bool gated_;                             // q_proj yields [q | gate] per head
    int64_t linear_channels_ = 0, linear_width_ = 0;   // C and V of the linear layers
    DeltaRuleShape delta_rule_;
    DeviceMemory recurrent_;                 // every linear layer's state, in layer order
    size_t recurrent_bytes_ = 0;
    std::unique_ptr<Stream> stream_owner_;   // made once a device is known to exist
    cudaStream_t stream_ = nullptr;
    struct L2Ahead {
        Stream stream;                              // the prefetches' side stream
        Event fork, join;
        // per layer, its weights outside the routed experts: those of the products that
        // read the layer's input (pulled in while the layer before runs its experts), the
        // rest (pulled in while the layer's input products run)
        std::vector<std::vector<DeviceSpan>> inputs, rest;
        bool pending = false;                       // a prefetch not yet joined
    };
    std::unique_ptr<L2Ahead> l2_ahead_;   // null: MOEPACK_CUDA_L2_PREFETCH=0
    DeviceMemory weights_, kv_, scratch_, inv_freq_, io_, attention_workspace_;
    std::unique_ptr<GpuExpertCache> experts_;
    PinnedMemory io_host_;                   // [token, position]
    DeviceMatrix embed_, head_;
    const float* final_norm_ = nullptr;
    RopeTable rope_;
    std::vector<Layer> layers_;
    // scratch: x, h [H]; q [q_dim]; k, v [kv_dim]; attn [q_dim]; router logits [E]; act [K, I];
    // expert weights [K]; ids [K]; dense g, u [F]; logits [V]
    float *x_, *h_, *q_, *k_, *v_, *attn_, *router_logits_, *act_, *ew_, *dg_, *du_, *logits_;
    int32_t* ids_;
    HybridBuffers hybrid_;
    VectorInput h_in_, attn_in_, act_in_, dense_act_in_;   // the inputs of products
    uint64_t token_weight_bytes_ = 0;   // weights a decode token reads from GPU memory
    bool use_graphs_;
    CapturedGraph graphs_[2];   // without, with logits
    // streaming: a token's routing and hidden state down, CPU-computed experts' sum up
    struct Streaming {
        // ids [K], weights [K], h [H], y [H], ids up [K], weights up [K], predicted [K]
        PinnedMemory host;
        int32_t *ids, *ids_up, *predicted;
        float *weights, *h, *y, *weights_up;
        DeviceMemory device;        // y [H], one [1], prediction: logits [E], weights [K], ids [K]
        float *prediction_logits, *prediction_weights;
        int32_t* prediction_ids;
        std::vector<int64_t> next_moe;           // per layer: the next MoE layer (-1: none)
        std::vector<int32_t> prediction;         // for layer prediction_for
        int64_t prediction_for = -1;
        std::vector<int32_t> prefetched;         // copied ahead for layer prefetched_for
        std::vector<const std::byte*> prefetched_blocks;   // their blocks in the RAM cache
        int64_t prefetched_for = -1;
        uint64_t predictions = 0, predictions_routed = 0;   // since open (the prefetch rule)
        int prefetch = -1;          // MOEPACK_CUDA_PREFETCH: 1 always, 0 never, -1 when it pays
        std::unique_ptr<HostExperts> cpu;
        std::vector<int32_t> gpu_ids, cpu_ids, fetch;
        std::vector<float> gpu_weights, cpu_weights;
        std::vector<const std::byte*> blocks;
        // measured: seconds per expert copied (moving average); the CPU's seconds per call
        // (calibrated at open) and per expert (calibrated, then a moving average)
        double copy_s = 0, cpu_call_s = 0, cpu_expert_s = 0;
    };
    std::unique_ptr<Streaming> streaming_;
    std::unique_ptr<PromptState> prompt_;
};

// b's arrays for `rows` rows, from carve_floats' take (sizes 0 where the model lacks a step).
template <typename Take>
void GpuDecoder::take_hybrid(HybridBuffers& b, Take take, int64_t rows) const {
    const int64_t S = c_.num_shared_experts > 0 ? c_.shared_expert_intermediate_size : 0, nv = delta_rule_.nv;
    const int64_t C = linear_channels_, V = linear_width_, G = gated_ ? q_dim_ : 0;
    b.q_gate = take(rows * 2 * G), b.gate = take(rows * G);
    b.mixed = take(rows * C), b.conv_out = take(rows * C), b.z = take(rows * V), b.b = take(rows * nv), b.a = take(rows * nv);
    b.o = take(rows * V);
    b.shared_g = take(rows * S), b.shared_u = take(rows * S), b.shared_s = take(S > 0 ? rows : 0);
    b.o_in = VectorInput(b.o, rows, V);
    b.shared_act_in = VectorInput(b.shared_g, rows, S);
}

}  // namespace moepack::cuda
