// A layer's fresh q, k and v made ready for attention in one launch: one block per head of
// one row (query heads, then key heads, then value heads): RMSNorm of the head with its
// weights (when given), RoPE of its leading rotary_dim values at the row's position (pairs
// (i, i + rotary_dim / 2), "half", or (2i, 2i + 1), "interleaved"; the angle position *
// inv_freq[i] in float32 as the CPU computes it), then key and value heads stored into the
// caches at that position. Positions are read from device memory, so that a captured graph
// serves every token. CPU references: rms_norm_to and Rope::apply (engine/blocks.cpp) and
// the KV writes of the attention block (engine/models/decoder.cpp).
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "rms.cuh"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxHeadDim = 256;

__global__ void __launch_bounds__(kThreads)
    prepare_heads(float* __restrict__ q, float* __restrict__ k, const float* __restrict__ v, int64_t heads, int64_t kv_heads,
                  int D, const float* __restrict__ q_norm, const float* __restrict__ k_norm, float eps, RopeTable rope,
                  const int32_t* __restrict__ positions, float* __restrict__ k_cache, float* __restrict__ v_cache) {
    detail::wait_for_inputs();
    __shared__ float head[kMaxHeadDim];
    const int64_t t = blockIdx.y, position = positions[t];
    const int64_t h = blockIdx.x, kv_dim = kv_heads * D;
    const bool is_q = h < heads, is_k = !is_q && h < heads + kv_heads;
    if (!is_q && !is_k) {   // a value head: to the cache
        if (!v_cache) return;
        const int64_t vh = h - heads - kv_heads;
        for (int i = threadIdx.x; i < D; i += kThreads) v_cache[position * kv_dim + vh * D + i] = v[t * kv_dim + vh * D + i];
        return;
    }
    float* x = is_q ? q + (t * heads + h) * D : k + t * kv_dim + (h - heads) * D;
    for (int i = threadIdx.x; i < D; i += kThreads) head[i] = x[i];
    const float* norm = is_q ? q_norm : k_norm;
    if (norm) {
        const float inv = detail::inverse_rms<kThreads>(head, D, eps);
        for (int i = threadIdx.x; i < D; i += kThreads) head[i] = head[i] * inv * norm[i];
    }
    __syncthreads();
    const int64_t half = rope.rotary_dim / 2;
    for (int64_t i = threadIdx.x; i < half; i += kThreads) {
        const float angle = static_cast<float>(position) * rope.inv_freq[i];
        float s, c;
        sincosf(angle, &s, &c);
        const int64_t a = rope.interleaved ? 2 * i : i, b = rope.interleaved ? 2 * i + 1 : i + half;
        const float x0 = head[a], x1 = head[b];
        head[a] = x0 * c - x1 * s;
        head[b] = x1 * c + x0 * s;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < D; i += kThreads) x[i] = head[i];
    if (is_k && k_cache)
        for (int i = threadIdx.x; i < D; i += kThreads) k_cache[position * kv_dim + (h - heads) * D + i] = head[i];
}

}  // namespace

void attention_prologue(float* q, float* k, const float* v, int64_t n, int64_t heads, int64_t kv_heads, int64_t head_dim,
                        const float* q_norm, const float* k_norm, float eps, const RopeTable& rope,
                        const int32_t* positions, float* k_cache, float* v_cache, cudaStream_t stream) {
    if (n <= 0) return;
    if (head_dim < 1 || head_dim > kMaxHeadDim) fail("attention_prologue: head_dim ", head_dim, " (1 to ", kMaxHeadDim, ")");
    if (rope.rotary_dim < 0 || rope.rotary_dim > head_dim || rope.rotary_dim % 2)
        fail("attention_prologue: rotary_dim ", rope.rotary_dim, " does not fit head_dim ", head_dim);
    if (n > 65535) fail("attention_prologue: ", n, " rows in one launch");
    const dim3 grid(static_cast<unsigned>(heads + 2 * kv_heads), static_cast<unsigned>(n));
    detail::launch(prepare_heads, grid, kThreads, 0, stream, q, k, v, heads, kv_heads, static_cast<int>(head_dim), q_norm, k_norm, eps,
                                                 rope, positions, k_cache, v_cache);
    check_launch("attention_prologue");
}

}  // namespace moepack::cuda
