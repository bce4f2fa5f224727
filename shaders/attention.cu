// Causal grouped-query attention of n query rows (row t at position positions[t], read from
// device memory, so that a captured graph serves every token) over the KV cache, split over
// the context in chunks of kChunk positions (flash-decoding). A block takes one (row, kv
// head, chunk) and up to kWarps of the query heads sharing that kv head: it copies the
// chunk's keys, values and the heads' queries into shared memory at once (cp.async: one
// memory round trip, the values still in flight while the keys are scored); a warp per
// head, a lane per position; the warp's shuffles give the chunk's softmax
// statistics (max, sum of exponentials) and each lane sums the weighted value rows over its
// columns. A second kernel merges the chunks of each (row, head), a tile of chunk records
// copied the same way, and, when asked and the head holds whole groups, quantises the
// head's outputs for the next product (quantize.cuh), sparing that product a launch. The
// grid covers the whole context; blocks past a row's position exit at once and the merge
// reads only the chunks that hold positions. window > 0 keeps the last `window` positions.
// CPU reference: attention (engine/blocks.cpp).
#include <algorithm>

#include "async_copy.cuh"
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "quantize.cuh"

namespace moepack::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kChunk = 32;                     // positions per block: a lane each
constexpr int kMaxHeadDim = 256;
constexpr int kMergeTile = 32;                 // chunk records per merge step

int64_t chunks_of(int64_t context) { return (context + kChunk - 1) / kChunk; }

// partial [n, heads, chunks, stride]: a chunk's weighted values, then its max and sum (the
// stride keeps every record 16-byte aligned).
__host__ __device__ inline int64_t partial_stride(int64_t head_dim) { return head_dim + 4; }

// Query heads per block: the kv head's whole group when it is small, else a divisor of it.
int64_t heads_per_block(int64_t group) {
    int64_t g = std::min<int64_t>(group, kWarps);
    while (group % g) --g;
    return g;
}

// The positions a row at `last` attends to: from `first`, in chunks aligned to the context
// (chunk c covers [base + c * kChunk, base + (c + 1) * kChunk) within [first, last]).
struct Span {
    int64_t first, base, chunks;
};
__device__ inline Span span_of(int64_t last, int64_t window) {
    const int64_t first = window > 0 ? max(int64_t{0}, last - window + 1) : 0;
    const int64_t base = first / kChunk * kChunk;
    return {first, base, (last - base) / kChunk + 1};
}

// attend_chunk's shared memory, in floats: keys [kChunk][D + 4] (the padding spreads a
// warp's rows over the banks), values [kChunk][D], queries [kWarps][D], weights
// [kWarps][kChunk].
__host__ __device__ inline int64_t key_pitch(int64_t D) { return D + 4; }
__host__ __device__ inline size_t attend_shared_floats(int64_t D) {
    return static_cast<size_t>(kChunk * key_pitch(D) + kChunk * D + kWarps * D + kWarps * kChunk);
}

__device__ inline float4 fma4(float w, float4 v, float4 acc) {
    return {fmaf(w, v.x, acc.x), fmaf(w, v.y, acc.y), fmaf(w, v.z, acc.z), fmaf(w, v.w, acc.w)};
}

__device__ inline float dot4(float4 a, float4 b, float acc) {
    return fmaf(a.x, b.x, fmaf(a.y, b.y, fmaf(a.z, b.z, fmaf(a.w, b.w, acc))));
}

// Vectors: float4 columns per lane (head_dim <= 128 * Vectors). Warp w takes the block's
// head w.
template <int Vectors>
__global__ void __launch_bounds__(kThreads)
    attend_chunk(const float* __restrict__ q, const float* __restrict__ k_cache, const float* __restrict__ v_cache,
                 float* __restrict__ partial, const int32_t* __restrict__ positions, int heads, int kv_heads, int D,
                 int group_heads, int64_t chunks, int64_t window, float scale) {
    detail::wait_for_inputs();
    extern __shared__ float4 shared[];
    const int64_t t = blockIdx.x / kv_heads, kvh = blockIdx.x % kv_heads, chunk = blockIdx.y;
    const int64_t last = positions[t];
    const Span span = span_of(last, window);
    if (chunk >= span.chunks) return;   // past the row's position (the whole block)
    const int64_t a = span.base + chunk * kChunk;
    const int64_t begin = max(a, span.first), end = min(a + kChunk, last + 1);
    const int count = static_cast<int>(end - begin), vectors = D / 4, pitch = static_cast<int>(key_pitch(D)) / 4;
    const int64_t kv_dim = static_cast<int64_t>(kv_heads) * D, stride = partial_stride(D);
    const int64_t h0 = kvh * (heads / kv_heads) + static_cast<int64_t>(blockIdx.z) * group_heads;
    float4* keys = shared;                          // [kChunk][pitch]
    float4* values = keys + kChunk * pitch;         // [kChunk][vectors]
    float4* queries = values + kChunk * vectors;    // [kWarps][vectors]
    float* weights = reinterpret_cast<float*>(queries + kWarps * vectors);   // [kWarps][kChunk]

    const float* q_rows = q + (t * heads + h0) * D;
    for (int i = threadIdx.x; i < group_heads * vectors; i += kThreads) detail::copy16(queries + i, q_rows + 4 * i, 16);
    const float* k_rows = k_cache + begin * kv_dim + kvh * D;
    for (int i = threadIdx.x; i < count * vectors; i += kThreads) {
        const int r = i / vectors, c = i - r * vectors;
        detail::copy16(keys + r * pitch + c, k_rows + r * kv_dim + 4 * c, 16);
    }
    detail::commit_copies();
    const float* v_rows = v_cache + begin * kv_dim + kvh * D;
    for (int i = threadIdx.x; i < count * vectors; i += kThreads) {
        const int r = i / vectors, c = i - r * vectors;
        detail::copy16(values + i, v_rows + r * kv_dim + 4 * c, 16);
    }
    detail::commit_copies();
    detail::wait_copies<1>();   // queries and keys
    __syncthreads();

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const bool has_head = warp < group_heads;
    float* record = partial + ((t * heads + h0 + warp) * chunks + chunk) * stride;
    if (has_head) {
        float s = 0.0f;
        if (lane < count) {   // two sums in flight (odd and even columns)
            const float4* key = keys + lane * pitch;
            const float4* query = queries + warp * vectors;
            float odd = 0.0f;
#pragma unroll 4
            for (int i = 0; i + 1 < vectors; i += 2) {
                s = dot4(query[i], key[i], s);
                odd = dot4(query[i + 1], key[i + 1], odd);
            }
            if (vectors % 2) s = dot4(query[vectors - 1], key[vectors - 1], s);
            s += odd;
        }
        float m = lane < count ? s * scale : -INFINITY;
        for (int offset = 16; offset > 0; offset >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
        const float e = lane < count ? expf(s * scale - m) : 0.0f;
        float l = e;
        for (int offset = 16; offset > 0; offset >>= 1) l += __shfl_xor_sync(0xffffffffu, l, offset);
        weights[warp * kChunk + lane] = e;
        if (lane == 0) {
            record[D] = m;
            record[D + 1] = l;
        }
    }
    detail::wait_copies<0>();   // values
    __syncthreads();
    if (!has_head) return;
    float4 acc[Vectors] = {};
    for (int p = 0; p < count; ++p) {
        const float w = weights[warp * kChunk + p];
#pragma unroll
        for (int r = 0; r < Vectors; ++r)
            if (lane + 32 * r < vectors) acc[r] = fma4(w, values[p * vectors + lane + 32 * r], acc[r]);
    }
#pragma unroll
    for (int r = 0; r < Vectors; ++r)
        if (lane + 32 * r < vectors) reinterpret_cast<float4*>(record)[lane + 32 * r] = acc[r];
}

// out [n, heads * D] from the chunks' partial results: one block per (row, head), the
// records of kMergeTile chunks at a time copied to shared memory and folded into running
// sums (online softmax); and, when quantize, the head's groups of `quantized` (whole groups
// within the head).
__global__ void __launch_bounds__(kThreads)
    merge_chunks(const float* __restrict__ partial, float* __restrict__ out, const int32_t* __restrict__ positions, int D,
                 int64_t chunks, int64_t window, QuantizedInput quantized, bool quantize, int heads) {
    detail::wait_for_inputs();
    constexpr int kColumns = kMaxHeadDim / kThreads;   // output columns per thread
    __shared__ float4 records[kMergeTile * (kMaxHeadDim + 4) / 4];
    __shared__ float weight[kMergeTile];
    __shared__ float merged[kMaxHeadDim];
    const int64_t t = blockIdx.x / heads, h = blockIdx.x % heads;
    const int64_t stride = partial_stride(D), used = span_of(positions[t], window).chunks;
    const float* p = partial + static_cast<int64_t>(blockIdx.x) * chunks * stride;
    const float* record = reinterpret_cast<const float*>(records);
    float m = -INFINITY, l = 0.0f, acc[kColumns] = {};   // every used chunk holds a position: its sum is positive
    for (int64_t c0 = 0; c0 < used; c0 += kMergeTile) {
        const int tile = static_cast<int>(min(int64_t{kMergeTile}, used - c0));
        const float* src = p + c0 * stride;
        for (int64_t i = threadIdx.x; i < tile * stride / 4; i += kThreads) detail::copy16(records + i, src + 4 * i, 16);
        detail::commit_copies();
        detail::wait_copies<0>();
        __syncthreads();
        float tile_max = m;
        for (int c = 0; c < tile; ++c) tile_max = fmaxf(tile_max, record[c * stride + D]);
        if (threadIdx.x < tile) weight[threadIdx.x] = expf(record[threadIdx.x * stride + D] - tile_max);
        __syncthreads();
        const float rescale = expf(m - tile_max);   // 0 on the first tile (m = -inf)
        m = tile_max;
        l *= rescale;
        for (int c = 0; c < tile; ++c) l = fmaf(record[c * stride + D + 1], weight[c], l);
#pragma unroll
        for (int k = 0; k < kColumns; ++k) {
            const int d = threadIdx.x + k * kThreads;
            if (d >= D) continue;
            float sum = acc[k] * rescale;
            for (int c = 0; c < tile; ++c) sum = fmaf(record[c * stride + d], weight[c], sum);
            acc[k] = sum;
        }
        __syncthreads();   // records and weights free for the next tile
    }
#pragma unroll
    for (int k = 0; k < kColumns; ++k) {
        const int d = threadIdx.x + k * kThreads;
        if (d >= D) continue;
        out[static_cast<int64_t>(blockIdx.x) * D + d] = acc[k] / l;
        merged[d] = acc[k] / l;
    }
    if (!quantize) return;
    __syncthreads();
    const int per_head = D / quantized.group_size, warp = threadIdx.x / 32;
    for (int j = warp; j < per_head; j += kThreads / 32)
        detail::quantize_group(quantized, t, h * per_head + j, static_cast<int>(threadIdx.x % 32),
                               [&](int64_t i) { return merged[j * quantized.group_size + i]; });
}

}  // namespace

size_t attention_workspace_bytes(int64_t n, int64_t heads, int64_t head_dim, int64_t context) {
    return static_cast<size_t>(n * heads * chunks_of(context) * partial_stride(head_dim)) * sizeof(float);
}

void attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n, const int32_t* positions,
               int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window, int64_t context, float* workspace,
               const QuantizedInput* quantized, cudaStream_t stream) {
    if (n <= 0) return;
    if (kv_heads <= 0 || heads % kv_heads != 0) fail("attention: ", heads, " heads do not share ", kv_heads, " kv heads evenly");
    if (head_dim < 4 || head_dim > kMaxHeadDim || head_dim % 4 != 0)
        fail("attention: head_dim ", head_dim, " (the kernel takes multiples of 4 up to ", kMaxHeadDim, ")");
    for (const void* data : {static_cast<const void*>(q), static_cast<const void*>(k_cache), static_cast<const void*>(v_cache),
                             static_cast<const void*>(workspace)})
        if (reinterpret_cast<uintptr_t>(data) % 16 != 0) fail("attention: q, caches and workspace must be 16-byte aligned");
    if (quantized && (quantized->cols != heads * head_dim || quantized->n < n))
        fail("attention: the quantised output holds ", quantized->n, " rows of ", quantized->cols, " values, expected ", n,
             " of ", heads * head_dim);
    const int64_t chunks = chunks_of(context), group = heads_per_block(heads / kv_heads);
    if (chunks > 65535 || n * kv_heads > 2147483647) fail("attention: a context of ", context, " positions in one launch");
    const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
    const dim3 grid(static_cast<unsigned>(n * kv_heads), static_cast<unsigned>(chunks), static_cast<unsigned>(heads / kv_heads / group));
    auto* kernel = head_dim > 128 ? attend_chunk<2> : attend_chunk<1>;
    static const cudaError_t allowed = [] {   // both instances may take the largest head's shared memory
        const int most = static_cast<int>(attend_shared_floats(kMaxHeadDim) * sizeof(float));
        for (auto* k : {attend_chunk<1>, attend_chunk<2>})
            if (const cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, most); e != cudaSuccess)
                return e;
        return cudaSuccess;
    }();
    check_cuda(allowed, "attention: shared memory");
    detail::launch(kernel, grid, kThreads, attend_shared_floats(head_dim) * sizeof(float), stream, q, k_cache, v_cache, workspace, positions, static_cast<int>(heads),
                   static_cast<int>(kv_heads), static_cast<int>(head_dim), static_cast<int>(group), chunks, window, scale);
    check_launch("attention");
    // heads holding whole groups are quantised by the merge, else by a launch of their own
    const bool in_merge = quantized && head_dim % quantized->group_size == 0;
    detail::launch(merge_chunks, static_cast<unsigned>(n * heads), kThreads, 0, stream, workspace, out, positions,
                   static_cast<int>(head_dim), chunks, window, quantized ? *quantized : QuantizedInput{}, in_merge,
                   static_cast<int>(heads));
    check_launch("attention (merge)");
    if (quantized && !in_merge) {
        QuantizedInput rows = *quantized;
        rows.n = n;
        quantize_input(out, rows, stream);
    }
}

}  // namespace moepack::cuda
