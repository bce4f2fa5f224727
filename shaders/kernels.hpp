// The CUDA kernels' launchers, one per operation (one .cu each in shaders/), each the GPU twin
// of a CPU reference in engine/: pointers are device memory, work goes to `stream`, and
// errors surface as moepack::Error. Plain C++17 (nvcc compiles it); weight matrices are
// DeviceMatrix views (device_matrix.hpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "device_matrix.hpp"

namespace moepack::cuda {

// Most inputs one gemv launch takes (decode: 1; a few tokens of a short prompt).
inline constexpr int64_t kMaxGemvInputs = 8;

// y [n, w.rows] = x [n, w.cols] . w^T, weights decoded on the fly (affine 2/4/8-bit records,
// bf16, f16, f32), float32 accumulation; n in [1, kMaxGemvInputs]. CPU reference: matmul.
void gemv(const DeviceMatrix& w, const float* x, int64_t n, float* y, cudaStream_t stream);

// The same product for `count` experts in one launch, with no trip to the host: expert slot
// j uses the matrix of `w` moved by ids[j] * stride bytes (ids in device memory: the routed
// experts' indices into a table of blocks `stride` apart, w being that record of block 0),
// inputs x + j * x_slot (x_slot 0: one input for every slot) and outputs y + j * n * w.rows.
void gemv_experts(const DeviceMatrix& w, int64_t stride, const int32_t* ids, int64_t count, const float* x,
                  int64_t x_slot, int64_t n, float* y, cudaStream_t stream);

// out[t, :] = x[t, :] / rms(x[t, :]) * weight for n rows of dim values. CPU reference:
// rms_norm_to (blocks.hpp).
void rms_norm(const float* x, float* out, int64_t n, int64_t dim, const float* weight, float eps, cudaStream_t stream);

// out[i] = silu(gate[i]) * up[i] for count values. CPU reference: swiglu (blocks.hpp).
void swiglu(const float* gate, const float* up, float* out, int64_t count, cudaStream_t stream);

// Rotary embedding of the leading rotary_dim values of each of `heads` heads of head_dim in
// x [n, heads * head_dim], row t at position position0 + t; pairs (i, i + rotary_dim / 2), or
// (2i, 2i + 1) when interleaved; inv_freq [rotary_dim / 2]. CPU reference: Rope::apply.
void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t rotary_dim, bool interleaved,
          const float* inv_freq, int64_t position0, cudaStream_t stream);

// Causal grouped-query attention of n query rows q [n, heads * head_dim] at positions
// position0.. over k/v caches [positions, kv_heads * head_dim] into out [n, heads * head_dim];
// window > 0: the last `window` positions only. head_dim 1 to 256. CPU
// reference: attention (blocks.hpp).
void attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n, int64_t position0,
               int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window, cudaStream_t stream);

// How route() weighs the chosen experts (RoutingFunction's softmax_topk and topk_softmax).
enum class RouteFunction : int { softmax_topk, topk_softmax };

// Top-k routing of n tokens' logits [n, num_experts] into experts [n, k] (int32) and
// weights [n, k]. CPU reference: route (blocks.hpp).
void route(const float* logits, int64_t n, int64_t num_experts, int64_t k, RouteFunction function, bool normalize_topk,
           float scaling_factor, int32_t* experts, float* weights, cudaStream_t stream);

// x [n, hidden] += sum over j < k of weights[t, j] * y[t, j, :] (y [n, k, hidden]).
void moe_combine(float* x, const float* y, const float* weights, int64_t n, int64_t k, int64_t hidden, cudaStream_t stream);

}  // namespace moepack::cuda
