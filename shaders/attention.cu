// Causal grouped-query attention of n query rows (row t at position positions[t], read from
// device memory, so that a captured graph serves every token) over the KV cache, split over
// the context in chunks of kChunk positions (flash-decoding): one block per (row, kv head,
// group of query heads sharing it, chunk) stages the chunk's keys in shared memory, scores
// every query head of the group against them, and writes the chunk's softmax statistics
// (running max, sum of exponentials) and weighted sum of values; a second kernel merges the
// chunks of each (row, head) and, when asked and the head holds whole groups, quantises the
// head's outputs for the next product (quantize.cuh), sparing that product a launch. The
// grid covers the whole context, so blocks past a row's position exit at once. window > 0
// keeps the last `window` positions. CPU reference: attention (engine/blocks.cpp).
#include <algorithm>

#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "quantize.cuh"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kChunk = 32;          // positions per block
constexpr int kMaxHeadDim = 256;
constexpr int kMaxGroupHeads = 8;   // query heads per block

int64_t chunks_of(int64_t context) { return (context + kChunk - 1) / kChunk; }

// Query heads per block: the kv head's whole group when it is small, else a divisor of it.
int64_t heads_per_block(int64_t group) {
    int64_t g = std::min<int64_t>(group, kMaxGroupHeads);
    while (group % g) --g;
    return g;
}

// partial [n, heads, chunks, D + 2]: the weighted values, then max and sum.
__global__ void __launch_bounds__(kThreads)
    attend_chunk(const float* __restrict__ q, const float* __restrict__ k_cache, const float* __restrict__ v_cache,
                 float* __restrict__ partial, const int32_t* __restrict__ positions, int heads, int kv_heads, int D,
                 int group_heads, int64_t chunks, int64_t window, float scale) {
    detail::wait_for_inputs();
    __shared__ float qs[kMaxGroupHeads][kMaxHeadDim];
    __shared__ float ks[kChunk][kMaxHeadDim + 1];
    __shared__ float scores[kMaxGroupHeads][kChunk];
    const int64_t t = blockIdx.x / kv_heads, kvh = blockIdx.x % kv_heads, chunk = blockIdx.y;
    const int64_t h0 = kvh * (heads / kv_heads) + static_cast<int64_t>(blockIdx.z) * group_heads;
    const int64_t last = positions[t], first = window > 0 ? max(int64_t{0}, last - window + 1) : 0;
    const int64_t a = first / kChunk * kChunk + chunk * kChunk;   // chunks aligned to the context
    const int64_t begin = max(a, first), end = min(a + kChunk, last + 1);
    const int64_t stride = D + 2;
    float* out = partial + ((t * heads + h0) * chunks + chunk) * stride;
    if (begin >= end) {   // past the row's position: an empty chunk
        for (int g = threadIdx.x; g < group_heads; g += kThreads) out[g * chunks * stride + D + 1] = 0.0f;
        return;
    }
    const int64_t kv_dim = static_cast<int64_t>(kv_heads) * D;
    for (int i = threadIdx.x; i < group_heads * D; i += kThreads)
        qs[i / D][i % D] = q[(t * heads + h0 + i / D) * D + i % D] * scale;
    const int count = static_cast<int>(end - begin);
    for (int i = threadIdx.x; i < count * D; i += kThreads)
        ks[i / D][i % D] = k_cache[(begin + i / D) * kv_dim + kvh * D + i % D];
    __syncthreads();
    for (int i = threadIdx.x; i < group_heads * kChunk; i += kThreads) {
        const int g = i / kChunk, p = i % kChunk;
        float s = -INFINITY;
        if (p < count) {
            s = 0.0f;
            for (int d = 0; d < D; ++d) s = fmaf(qs[g][d], ks[p][d], s);
        }
        scores[g][p] = s;
    }
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int g = warp; g < group_heads; g += kThreads / 32) {   // kChunk == 32: a lane per position
        const float s = scores[g][lane];
        float m = s;
        for (int offset = 16; offset > 0; offset >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
        const float e = lane < count ? expf(s - m) : 0.0f;
        float l = e;
        for (int offset = 16; offset > 0; offset >>= 1) l += __shfl_xor_sync(0xffffffffu, l, offset);
        scores[g][lane] = e;
        if (lane == 0) {
            out[g * chunks * stride + D] = m;
            out[g * chunks * stride + D + 1] = l;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < group_heads * D; i += kThreads) {
        const int g = i / D, d = i % D;
        const float* v = v_cache + begin * kv_dim + kvh * D + d;
        float acc = 0.0f;
        for (int p = 0; p < count; ++p) acc = fmaf(scores[g][p], v[p * kv_dim], acc);
        out[g * chunks * stride + d] = acc;
    }
}

// out [n, heads * D] from the chunks' partial results: one block per (row, head); and, when
// quantize, the head's groups of `quantized` (whole groups within the head).
__global__ void __launch_bounds__(kThreads)
    merge_chunks(const float* __restrict__ partial, float* __restrict__ out, int D, int64_t chunks, QuantizedInput quantized,
                 bool quantize, int heads) {
    detail::wait_for_inputs();
    __shared__ float merged[kMaxHeadDim];
    const int64_t stride = D + 2;
    const float* p = partial + static_cast<int64_t>(blockIdx.x) * chunks * stride;
    float m = -INFINITY;
    for (int64_t c = 0; c < chunks; ++c)
        if (p[c * stride + D + 1] > 0.0f) m = fmaxf(m, p[c * stride + D]);
    for (int d = threadIdx.x; d < D; d += kThreads) {
        float acc = 0.0f, l = 0.0f;
        for (int64_t c = 0; c < chunks; ++c) {
            const float lc = p[c * stride + D + 1];
            if (lc == 0.0f) continue;
            const float w = expf(p[c * stride + D] - m);
            acc = fmaf(p[c * stride + d], w, acc);
            l = fmaf(lc, w, l);
        }
        out[static_cast<int64_t>(blockIdx.x) * D + d] = acc / l;
        merged[d] = acc / l;
    }
    if (!quantize) return;
    __syncthreads();
    const int64_t t = blockIdx.x / heads, h = blockIdx.x % heads;
    const int per_head = D / quantized.group_size, warp = threadIdx.x / 32;
    for (int j = warp; j < per_head; j += kThreads / 32)
        detail::quantize_group(quantized, t, h * per_head + j, static_cast<int>(threadIdx.x % 32),
                               [&](int64_t i) { return merged[j * quantized.group_size + i]; });
}

}  // namespace

size_t attention_workspace_bytes(int64_t n, int64_t heads, int64_t head_dim, int64_t context) {
    return static_cast<size_t>(n * heads * chunks_of(context) * (head_dim + 2)) * sizeof(float);
}

void attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n, const int32_t* positions,
               int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window, int64_t context, float* workspace,
               const QuantizedInput* quantized, cudaStream_t stream) {
    if (n <= 0) return;
    if (kv_heads <= 0 || heads % kv_heads != 0) fail("attention: ", heads, " heads do not share ", kv_heads, " kv heads evenly");
    if (head_dim < 1 || head_dim > kMaxHeadDim) fail("attention: head_dim ", head_dim, " (the kernel takes 1 to ", kMaxHeadDim, ")");
    if (quantized && (quantized->cols != heads * head_dim || quantized->n < n))
        fail("attention: the quantised output holds ", quantized->n, " rows of ", quantized->cols, " values, expected ", n,
             " of ", heads * head_dim);
    const int64_t chunks = chunks_of(context), group = heads_per_block(heads / kv_heads);
    if (chunks > 65535 || n * kv_heads > 2147483647) fail("attention: a context of ", context, " positions in one launch");
    const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
    const dim3 grid(static_cast<unsigned>(n * kv_heads), static_cast<unsigned>(chunks), static_cast<unsigned>(heads / kv_heads / group));
    detail::launch(attend_chunk, grid, kThreads, 0, stream, q, k_cache, v_cache, workspace, positions, static_cast<int>(heads),
                                                static_cast<int>(kv_heads), static_cast<int>(head_dim), static_cast<int>(group),
                                                chunks, window, scale);
    check_launch("attention");
    // heads holding whole groups are quantised by the merge, else by a launch of their own
    const bool in_merge = quantized && head_dim % quantized->group_size == 0;
    detail::launch(merge_chunks, static_cast<unsigned>(n * heads), kThreads, 0, stream, workspace, out, static_cast<int>(head_dim),
                   chunks, quantized ? *quantized : QuantizedInput{}, in_merge, static_cast<int>(heads));
    check_launch("attention (merge)");
    if (quantized && !in_merge) {
        QuantizedInput rows = *quantized;
        rows.n = n;
        quantize_input(out, rows, stream);
    }
}

}  // namespace moepack::cuda
