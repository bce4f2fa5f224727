// Causal grouped-query attention of a prompt batch on the tensor cores (flash attention):
// the same operation as attention() (attention.cu), for many query rows at once. A block
// takes the query rows (token, head) of kTileRows / group tokens and all `group` query heads
// sharing one kv head, so that each tile of kTileKeys cached keys and values is staged in
// shared memory once for all of them (converted to fp16). Each warp owns 16 query rows:
// scores by mma.sync m16n8k16 (fp16 inputs, fp32 sums), masked per row to the positions it
// may see (causal, window), an online softmax in registers (base-2 exponentials, the scale
// and log2(e) folded into the queries), and the probabilities, rounded to fp16, times the
// values by mma again (values read transposed by ldmatrix). Rows are divided by their sum of
// exponentials at the end. Inputs are rounded to fp16 (11 significant bits) and every sum is
// float32: results agree with the float32 reference to about 1e-3 relative.
// CPU reference: attention (engine/blocks.cpp).
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 128;   // 4 warps of 16 query rows
constexpr int kTileRows = 64, kTileKeys = 64;

__device__ inline uint32_t pack_halves(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ inline void mma_f16(const uint32_t (&a)[4], uint32_t b0, uint32_t b1, float (&c)[4]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 fp16 matrices from shared memory, transposed (B fragments of row-major values).
__device__ inline void load_transposed(const __half* row, uint32_t (&r)[4]) {
    const auto at = static_cast<uint32_t>(__cvta_generic_to_shared(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(at));
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    attend_tile(const float* __restrict__ q, const float* __restrict__ k_cache, const float* __restrict__ v_cache,
                float* __restrict__ out, const int32_t* __restrict__ positions, int64_t n, int heads, int kv_heads,
                int64_t window, float q_scale) {
    detail::wait_for_inputs();
    static_assert(D % 16 == 0 && D <= 128, "head_dim a multiple of 16, at most 128");
    constexpr int kSteps = D / 16, kValueTiles = D / 8, kRowHalves = D + 8;   // rows padded 16 bytes (banks)
    __shared__ __align__(16) __half keys[kTileKeys][kRowHalves];     // [key][dim]
    __shared__ __align__(16) __half values[kTileKeys][kRowHalves];   // [key][dim]
    __shared__ int64_t first_of[kTileRows], last_of[kTileRows];       // positions row r sees; last < first: none
    __shared__ int64_t key_range[2];

    const int group = heads / kv_heads, tokens = kTileRows / group;   // query rows m = token * group + head
    const int kvh = static_cast<int>(blockIdx.y);
    const int64_t t0 = static_cast<int64_t>(blockIdx.x) * tokens, kv_dim = static_cast<int64_t>(kv_heads) * D;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, gid = lane / 4, tig = lane % 4;
    for (int r = tid; r < kTileRows; r += kThreads) {
        const int64_t t = t0 + r / group;
        int64_t first = 1, last = 0;
        if (r < tokens * group && t < n) {
            last = positions[t];
            first = window > 0 ? max(int64_t{0}, last - window + 1) : 0;
        }
        first_of[r] = first;
        last_of[r] = last;
    }
    __syncthreads();
    if (tid == 0) {
        int64_t lo = INT64_MAX, hi = -1;
        for (int r = 0; r < kTileRows; ++r)
            if (first_of[r] <= last_of[r]) lo = min(lo, first_of[r]), hi = max(hi, last_of[r]);
        key_range[0] = lo;
        key_range[1] = hi;
    }

    // this warp's rows gid and gid + 8: the query A fragments, scaled, in fp16
    const int row[2] = {warp * 16 + gid, warp * 16 + gid + 8};
    const float* q_row[2];
    for (int h = 0; h < 2; ++h) {
        const int r = row[h];
        const int64_t t = t0 + r / group;
        q_row[h] = r < tokens * group && t < n ? q + (t * heads + static_cast<int64_t>(kvh) * group + r % group) * D : nullptr;
    }
    uint32_t qa[kSteps][4];
#pragma unroll
    for (int s = 0; s < kSteps; ++s)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float* p = q_row[i % 2];
            const int d = s * 16 + (i / 2) * 8 + tig * 2;
            qa[s][i] = p ? pack_halves(p[d] * q_scale, p[d + 1] * q_scale) : 0u;
        }
    float o[kValueTiles][4] = {};
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};   // row_sum: this thread's share
    __syncthreads();
    const int64_t lo = key_range[0], hi = key_range[1];
    const int64_t first[2] = {first_of[row[0]], first_of[row[1]]}, last[2] = {last_of[row[0]], last_of[row[1]]};

    for (int64_t kb = lo; kb <= hi; kb += kTileKeys) {
        __syncthreads();   // every warp is done with the previous tile
        for (int i = tid; i < kTileKeys * (D / 4); i += kThreads) {
            const int key = i / (D / 4), c = 4 * (i % (D / 4));
            const int64_t p = kb + key;
            float4 k4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f), v4 = k4;
            if (p <= hi) {
                k4 = __ldg(reinterpret_cast<const float4*>(k_cache + p * kv_dim + static_cast<int64_t>(kvh) * D + c));
                v4 = __ldg(reinterpret_cast<const float4*>(v_cache + p * kv_dim + static_cast<int64_t>(kvh) * D + c));
            }
            *reinterpret_cast<uint2*>(&keys[key][c]) = make_uint2(pack_halves(k4.x, k4.y), pack_halves(k4.z, k4.w));
            *reinterpret_cast<uint2*>(&values[key][c]) = make_uint2(pack_halves(v4.x, v4.y), pack_halves(v4.z, v4.w));
        }
        __syncthreads();

        // scores [16 rows, 64 keys] in 8 tiles of 8 keys, log2 units
        float s[kTileKeys / 8][4];
#pragma unroll
        for (int j = 0; j < kTileKeys / 8; ++j) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int st = 0; st < kSteps; ++st) {
                const __half* k_row = &keys[j * 8 + gid][st * 16 + tig * 2];
                mma_f16(qa[st], *reinterpret_cast<const uint32_t*>(k_row), *reinterpret_cast<const uint32_t*>(k_row + 8), s[j]);
            }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float m = row_max[h];
#pragma unroll
            for (int j = 0; j < kTileKeys / 8; ++j)
#pragma unroll
                for (int f = 0; f < 2; ++f) {
                    const int64_t key = kb + j * 8 + tig * 2 + f;
                    float& v = s[j][2 * h + f];
                    v = key >= first[h] && key <= last[h] ? v : -INFINITY;
                    m = fmaxf(m, v);
                }
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
            const bool none = m == -INFINITY;   // no key seen yet by this row
            const float alpha = none ? 1.0f : exp2f(row_max[h] - m);
            row_max[h] = m;
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < kTileKeys / 8; ++j)
#pragma unroll
                for (int f = 0; f < 2; ++f) {
                    float& v = s[j][2 * h + f];
                    v = none ? 0.0f : exp2f(v - m);
                    sum += v;
                }
            row_sum[h] = row_sum[h] * alpha + sum;
#pragma unroll
            for (int t = 0; t < kValueTiles; ++t) o[t][2 * h] *= alpha, o[t][2 * h + 1] *= alpha;
        }
        // o += p . v: the score tiles 2kk, 2kk + 1 are the A fragment of keys 16kk .. 16kk + 15
#pragma unroll
        for (int kk = 0; kk < kTileKeys / 16; ++kk) {
            const uint32_t a[4] = {pack_halves(s[2 * kk][0], s[2 * kk][1]), pack_halves(s[2 * kk][2], s[2 * kk][3]),
                                   pack_halves(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                   pack_halves(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            const int mi = lane / 8;   // this lane's row address: matrix mi, row lane % 8
#pragma unroll
            for (int t = 0; t < kValueTiles; t += 2) {
                uint32_t b[4];
                load_transposed(&values[kk * 16 + (mi % 2) * 8 + lane % 8][t * 8 + (mi / 2) * 8], b);
                mma_f16(a, b[0], b[1], o[t]);
                mma_f16(a, b[2], b[3], o[t + 1]);
            }
        }
    }

#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float l = row_sum[h];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        if (!q_row[h] || l == 0.0f) continue;
        float* dst = out + (q_row[h] - q);
#pragma unroll
        for (int t = 0; t < kValueTiles; ++t)
            *reinterpret_cast<float2*>(dst + t * 8 + tig * 2) = make_float2(o[t][2 * h] / l, o[t][2 * h + 1] / l);
    }
}

template <int D>
void launch(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n, const int32_t* positions,
            int64_t heads, int64_t kv_heads, int64_t window, cudaStream_t stream) {
    const int64_t tokens = kTileRows / (heads / kv_heads);
    const dim3 grid(static_cast<unsigned>((n + tokens - 1) / tokens), static_cast<unsigned>(kv_heads));
    const float q_scale = 1.4426950408889634f / sqrtf(static_cast<float>(D));   // log2(e) / sqrt(D)
    detail::launch(attend_tile<D>, grid, kThreads, 0, stream, q, k_cache, v_cache, out, positions, n, static_cast<int>(heads),
                   static_cast<int>(kv_heads), window, q_scale);
}

}  // namespace

bool prompt_attention_supports(int64_t heads, int64_t kv_heads, int64_t head_dim) {
    return kv_heads > 0 && heads % kv_heads == 0 && heads / kv_heads <= kTileRows &&
           (head_dim == 32 || head_dim == 64 || head_dim == 128);
}

void prompt_attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n,
                      const int32_t* positions, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window,
                      cudaStream_t stream) {
    if (n <= 0) return;
    if (!prompt_attention_supports(heads, kv_heads, head_dim))
        fail("prompt_attention: ", heads, " heads over ", kv_heads, " kv heads of ", head_dim,
             " (expected head_dim 32, 64 or 128 and at most ", kTileRows, " heads per kv head)");
    if ((n + kTileRows - 1) / kTileRows * kTileRows > 2147483647 || kv_heads > 65535)
        fail("prompt_attention: ", n, " rows of ", kv_heads, " kv heads in one launch");
    switch (head_dim) {
        case 32: launch<32>(q, k_cache, v_cache, out, n, positions, heads, kv_heads, window, stream); break;
        case 64: launch<64>(q, k_cache, v_cache, out, n, positions, heads, kv_heads, window, stream); break;
        default: launch<128>(q, k_cache, v_cache, out, n, positions, heads, kv_heads, window, stream); break;
    }
    check_launch("prompt_attention");
}

}  // namespace moepack::cuda
