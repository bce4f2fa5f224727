// The CUDA kernels' launchers, one per operation (one .cu each in shaders/), each the GPU twin
// of a CPU reference in engine/: pointers are device memory, work goes to `stream`, and
// errors surface as moepack::Error. Plain C++17 (nvcc compiles it); weight matrices are
// DeviceMatrix views (device_matrix.hpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "device_matrix.hpp"
#include "models/delta_rule_shape.hpp"

namespace moepack::cuda {

// Most inputs one gemv launch takes (decode: 1; a few tokens of a short prompt).
inline constexpr int64_t kMaxGemvInputs = 8;

// Inputs of affine products, prepared once per vector and weight group size: the vectors
// quantised per group to int8 (x ~= scale * q, scale = max|x| / 127, q rounded to nearest
// even: the CPU decode kernels' rule) in the code-plane order of `bits`-bit words (value i
// of each 32-bit word's codes sits at byte (i % (8 / bits)) * 4 + i / (8 / bits) of its
// slot, so that one mask and shift of a code word lines four codes up with four inputs),
// zero past cols; and each group's float sum (the bias term). Device memory.
struct QuantizedInput {
    int8_t* values = nullptr;   // [n, padded()]
    float* scales = nullptr;    // [n, groups]
    float* sums = nullptr;      // [n, groups]
    int64_t n = 0, cols = 0, groups = 0;
    int group_size = 0, bits = 0;
    int64_t padded() const { return groups * group_size; }
};

// Bytes of device memory a QuantizedInput of n vectors of cols values needs.
size_t quantized_input_bytes(int64_t n, int64_t cols, int group_size);
// A QuantizedInput laid out in `memory` (quantized_input_bytes of it, 16-byte aligned).
QuantizedInput quantized_input_in(void* memory, int64_t n, int64_t cols, int group_size, int bits);
// Fills q from x [q.n, q.cols]. CPU reference: MatmulInput::prepare (engine/cpu/matmul.cpp).
void quantize_input(const float* x, const QuantizedInput& q, cudaStream_t stream);

// The input of a product: float vectors x (float weights) or their quantisation for the
// matrix's bits and group size (affine weights).
struct ProductInput {
    const float* x = nullptr;
    const QuantizedInput* quantized = nullptr;
};

// What a product does with its outputs: store them, or add them to what is there (the
// residual stream).
enum class GemvOutput : int { store, add };

// One matrix of a gemv launch and where its outputs go.
struct GemvProduct {
    DeviceMatrix w;
    float* y;   // [n, w.rows]
};

// y [n, w.rows] (=|+=) x [n, w.cols] . w^T for up to kMaxGemvProducts matrices of one encoding
// and width sharing their input, in one launch; weights decoded in registers, float32
// accumulation; n in [1, kMaxGemvInputs]. CPU reference: matmul (engine/cpu/matmul.cpp).
inline constexpr int kMaxGemvProducts = 3;
void gemv(const GemvProduct* products, int count, const ProductInput& x, int64_t n, GemvOutput output,
          cudaStream_t stream);
inline void gemv(const DeviceMatrix& w, const ProductInput& x, int64_t n, float* y, GemvOutput output,
                 cudaStream_t stream) {
    const GemvProduct p{w, y};
    gemv(&p, 1, x, n, output, stream);
}

// Where the experts' blocks lie: expert e's block at block 0's address + b * stride, with
// b = slot[e] when slot is set (device memory [num_experts]: experts held in the slots of a
// cache), else b = e (a layer's blocks side by side).
struct ExpertBlocks {
    int64_t stride = 0;
    const int32_t* slot = nullptr;
};

// The routed experts of one token, the expert ids in device memory (no trip to the host):
// `gate`, `up`, `down` are the records of block 0 (block 0's address plus the record's
// offset), expert ids[j]'s block found through `blocks`.
// act [k, I] = silu(gate_j . x) * (up_j . x) (I = gate.rows). CPU reference: moe_ffn
// (engine/models/decoder.cpp).
void expert_gate_up(const DeviceMatrix& gate, const DeviceMatrix& up, const ExpertBlocks& blocks, const int32_t* ids,
                    int64_t k, const ProductInput& x, float* act, cudaStream_t stream);
// x [H] += sum over j < k, in slot order, of weights[j] * (down_j . act_j) (H = down.rows;
// act holds k vectors of down.cols values).
void expert_down_add(const DeviceMatrix& down, const ExpertBlocks& blocks, const int32_t* ids, const float* weights,
                     int64_t k, const ProductInput& act, float* x, cudaStream_t stream);

// out[t, :] = x[t, :] / rms(x[t, :]) * weight for n rows of dim values. CPU reference:
// rms_norm_to (blocks.hpp).
void rms_norm(const float* x, float* out, int64_t n, int64_t dim, const float* weight, float eps, cudaStream_t stream);
// The same, and out's rows quantised into each of quantized[0 .. count) in one launch (count
// up to kMaxNormQuantizations; x must not be out). The floats and codes equal rms_norm's
// followed by quantize_input's.
inline constexpr int kMaxNormQuantizations = 3;
void rms_norm_quantized(const float* x, float* out, int64_t n, int64_t dim, const float* weight, float eps,
                        const QuantizedInput* quantized, int count, cudaStream_t stream);

// out[t, i] = silu(gate[t, i]) * up[t, i] for rows of width values, each row also scaled by
// sigmoid(row_gates[t]) when row_gates (device memory, [rows]) is given. CPU reference:
// swiglu (blocks.hpp).
void swiglu(const float* gate, const float* up, float* out, int64_t rows, int64_t width, const float* row_gates,
            cudaStream_t stream);

// Gated attention: q_gate [n, heads, 2, head_dim] ([q | gate] per head) split into q and
// gate [n, heads * head_dim]; out[i] *= sigmoid(gate[i]) after attention. CPU references:
// split_gated_q, apply_output_gate (blocks.hpp).
void split_gated_q(const float* q_gate, float* q, float* gate, int64_t n, int64_t heads, int64_t head_dim, cudaStream_t stream);
void apply_output_gate(float* out, const float* gate, int64_t count, cudaStream_t stream);

// The RoPE table of a model: rotary_dim / 2 inverse frequencies in device memory.
struct RopeTable {
    int64_t rotary_dim = 0;
    bool interleaved = false;   // pairs (2i, 2i + 1), else (i, i + rotary_dim / 2)
    const float* inv_freq = nullptr;
};

// Makes n rows of q [n, heads * head_dim], k and v [n, kv_heads * head_dim] ready for
// attention at positions[t] (device memory): per head RMSNorm with q_norm / k_norm
// [head_dim] (skipped when null), RoPE of the leading rotary_dim values, then k and v rows
// stored at row positions[t] of k_cache / v_cache [ctx, kv_heads * head_dim] (skipped when
// null). head_dim 1 to 256. CPU references: rms_norm_to, Rope::apply (engine/blocks.hpp).
void attention_prologue(float* q, float* k, const float* v, int64_t n, int64_t heads, int64_t kv_heads, int64_t head_dim,
                        const float* q_norm, const float* k_norm, float eps, const RopeTable& rope,
                        const int32_t* positions, float* k_cache, float* v_cache, cudaStream_t stream);

// Which rows a grouped product reads and writes. With order: problem e (0 <= e < problems)
// takes the row indices order[offsets[e] .. offsets[e + 1]) (device memory): for each such
// index p it reads input row p / input_div and writes output row p; tiles [problems + 1]
// numbers the product's tiles of rows per problem (group_by_expert makes all three), and
// count is the number of indices. Without: one problem, rows 0 .. count - 1.
struct RowGroups {
    const int32_t* offsets = nullptr;   // [problems + 1]
    const int32_t* order = nullptr;
    const int32_t* tiles = nullptr;     // [problems + 1]
    int64_t problems = 1, count = 0;
    int64_t input_div = 1;
};

// Prompt products on the tensor cores, affine weights only: y[p, :] (=|+=) x[p / input_div]
// . w_e^T for the rows of each problem e, w_e the matrix of expert e's block (`blocks`).
// CPU reference: matmul's int8 kernels (the same integer sums).
void gemm(const DeviceMatrix& w, const ExpertBlocks& blocks, const QuantizedInput& x, const RowGroups& groups, float* y,
          GemvOutput output, cudaStream_t stream);
// act[p, :] = silu(x . gate_e^T) * (x . up_e^T) for the rows of each problem e.
void gemm_swiglu(const DeviceMatrix& gate, const DeviceMatrix& up, const ExpertBlocks& blocks, const QuantizedInput& x,
                 const RowGroups& groups, float* act, cudaStream_t stream);
// The (token, slot) pairs p = t * k + j of experts [n, k] grouped by expert: offsets
// [num_experts + 1], order [n * k] (within an expert in no fixed order), and the grouped
// products' row tiles per expert, tiles [num_experts + 1] (device memory, all three).
void group_by_expert(const int32_t* experts, int64_t n, int64_t k, int64_t num_experts, int32_t* offsets, int32_t* order,
                     int32_t* tiles, cudaStream_t stream);
// x [n, hidden] += sum over j < k, in slot order, of weights[t, j] * y[t * k + j, :].
void combine_experts(float* x, const float* y, const float* weights, int64_t n, int64_t k, int64_t hidden, cudaStream_t stream);

// Causal grouped-query attention of n query rows q [n, heads * head_dim], row t at position
// positions[t] (device memory), over k/v caches [context, kv_heads * head_dim] into out
// [n, heads * head_dim]; window > 0: the last `window` positions only. head_dim a multiple
// of 4 up to 256; q, the caches and the workspace 16-byte aligned. workspace:
// attention_workspace_bytes of device memory. quantized (may be null): out's quantisation
// for the next product, made with the merge. CPU reference: attention (blocks.hpp).
size_t attention_workspace_bytes(int64_t n, int64_t heads, int64_t head_dim, int64_t context);
void attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n, const int32_t* positions,
               int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window, int64_t context, float* workspace,
               const QuantizedInput* quantized, cudaStream_t stream);

// The same attention for a prompt batch on the tensor cores (flash attention): q, k and v
// rounded to fp16, float32 sums and softmax; within about 1e-3 relative of attention().
// Takes head_dim 32, 64 or 128 and at most 64 query heads per kv head
// (prompt_attention_supports); no workspace.
bool prompt_attention_supports(int64_t heads, int64_t kv_heads, int64_t head_dim);
void prompt_attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n,
                      const int32_t* positions, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window,
                      cudaStream_t stream);

// How route() weighs the chosen experts (RoutingFunction's softmax_topk and topk_softmax).
enum class RouteFunction : int { softmax_topk, topk_softmax };

// Top-k routing of n tokens' logits [n, num_experts] into experts [n, k] (int32) and
// weights [n, k]. CPU reference: route (blocks.hpp).
void route(const float* logits, int64_t n, int64_t num_experts, int64_t k, RouteFunction function, bool normalize_topk,
           float scaling_factor, int32_t* experts, float* weights, cudaStream_t stream);
// route() of one token's logits [num_experts] and expert_gate_up of the k experts chosen, in
// one launch: each block routes the token itself (a launch fewer on a decode token's path);
// ids and weights [k] receive the choice, as route() gives it, for expert_down_add.
void expert_gate_up_routed(const float* logits, int64_t num_experts, RouteFunction function, bool normalize_topk,
                           float scaling_factor, const DeviceMatrix& gate, const DeviceMatrix& up, const ExpertBlocks& blocks,
                           int64_t k, const ProductInput& x, float* act, int32_t* ids, float* weights, cudaStream_t stream);

// Gated DeltaNet (qwen3_next / qwen3_5_moe linear attention) between its products. CPU
// references: gated_deltanet_convolve, gated_deltanet_recur (engine/models/gated_deltanet.hpp).
// out [n, C] = silu(causal depthwise convolution, kernel K, weight [C, K]) of mixed [n, C]
// after the K - 1 rows conv_state [K - 1, C] holds; conv_state becomes the last K - 1 inputs.
void gated_deltanet_convolve(const float* mixed, int64_t n, int64_t channels, int64_t kernel, const float* weight,
                             float* conv_state, float* out, cudaStream_t stream);
using engine::DeltaRuleShape;
// The delta rule over x [n, 2 nk dk + nv dv] (the convolution's q, k, v; left as it is),
// b, a [n, nv] (raw projections), a_log, dt_bias [nv], z, o [n, nv dv], norm [dv]; state
// [nv, dk, dv] updated. Takes dv up to 256 and dk x dv within the shared memory of a block
// (gated_deltanet_recur_supports).
bool gated_deltanet_recur_supports(const DeltaRuleShape& shape);
void gated_deltanet_recur(const DeltaRuleShape& shape, const float* x, int64_t n, const float* b, const float* a, const float* a_log,
                          const float* dt_bias, const float* z, const float* norm, float* state, float* o, cudaStream_t stream);

// A run of device memory.
struct DeviceSpan {
    const void* data = nullptr;
    int64_t bytes = 0;
};
// Pulls spans [count] (count <= kMaxL2Spans) of device memory into the L2 cache and writes
// nothing: run on a side stream, it lets the products after it find their weights in L2.
// The 16-byte units wholly inside a span are fetched.
inline constexpr int kMaxL2Spans = 16;
void prefetch_to_l2(const DeviceSpan* spans, int count, cudaStream_t stream);

// out[t, :] = row ids[t] (device memory) of the table, decoded to float. CPU reference:
// decode_row (engine/cpu/matmul.hpp).
void embed_rows(const DeviceMatrix& table, const int32_t* ids, int64_t n, float* out, cudaStream_t stream);

}  // namespace moepack::cuda
