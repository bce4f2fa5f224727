// Causal attention of n query rows (positions position0 .. position0 + n - 1) over the KV
// cache, grouped-query: query head h reads kv head h / (heads / kv_heads); window > 0 keeps
// the last `window` positions. One block per (row, head); its warps take positions in turn,
// each keeping an online softmax (running max, sum and weighted values, head_dim / 32 per
// lane), merged through shared memory at the end. Any context length, head_dim a multiple of
// 32 up to 256. CPU reference: attention (engine/blocks.cpp).
#include "cuda_check.hpp"
#include "kernels.hpp"

namespace moepack::cuda {
namespace {

constexpr int kWarps = 4;

constexpr int kMaxHeadDim = 256;

template <int PerLane>   // ceil(head_dim / 32): lane l holds elements l, l + 32, ... below D
__global__ void __launch_bounds__(kWarps * 32)
    attention_rows(const float* __restrict__ q, const float* __restrict__ k_cache, const float* __restrict__ v_cache,
                   float* __restrict__ out, int64_t position0, int64_t heads, int64_t kv_heads, int D, int64_t window,
                   float scale) {
    const int64_t t = blockIdx.x / heads, h = blockIdx.x % heads;
    const int64_t kvh = h / (heads / kv_heads), kv_dim = kv_heads * D;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t last = position0 + t;
    const int64_t first = window > 0 ? max(int64_t{0}, last - window + 1) : 0;
    float qv[PerLane], acc[PerLane] = {};
    const float* qh = q + (t * heads + h) * D;
#pragma unroll
    for (int i = 0; i < PerLane; ++i) qv[i] = lane + 32 * i < D ? qh[lane + 32 * i] : 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int64_t p = first + warp; p <= last; p += kWarps) {
        const float* kp = k_cache + p * kv_dim + kvh * D;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < PerLane; ++i)
            if (lane + 32 * i < D) s = fmaf(qv[i], kp[lane + 32 * i], s);
        for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
        s *= scale;
        const float m_new = fmaxf(m, s), correction = expf(m - m_new), e = expf(s - m_new);
        const float* vp = v_cache + p * kv_dim + kvh * D;
#pragma unroll
        for (int i = 0; i < PerLane; ++i)
            acc[i] = fmaf(acc[i], correction, lane + 32 * i < D ? e * vp[lane + 32 * i] : 0.0f);
        l = l * correction + e;
        m = m_new;
    }
    __shared__ float ms[kWarps], ls[kWarps], accs[kWarps][PerLane * 32];
    if (lane == 0) {
        ms[warp] = m;
        ls[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < PerLane; ++i) accs[warp][lane + 32 * i] = acc[i];
    __syncthreads();
    if (warp != 0) return;
    float m_all = -INFINITY;
    for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, ms[w]);
    float l_all = 0.0f, o[PerLane] = {};
    for (int w = 0; w < kWarps; ++w) {
        if (ls[w] == 0.0f) continue;   // a warp that saw no position
        const float c = expf(ms[w] - m_all);
        l_all += ls[w] * c;
#pragma unroll
        for (int i = 0; i < PerLane; ++i) o[i] = fmaf(accs[w][lane + 32 * i], c, o[i]);
    }
    float* oh = out + (t * heads + h) * D;
#pragma unroll
    for (int i = 0; i < PerLane; ++i)
        if (lane + 32 * i < D) oh[lane + 32 * i] = o[i] / l_all;
}

}  // namespace

void attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n, int64_t position0,
               int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window, cudaStream_t stream) {
    if (n <= 0) return;
    if (kv_heads <= 0 || heads % kv_heads != 0) fail("attention: ", heads, " heads do not share ", kv_heads, " kv heads evenly");
    const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
    const auto blocks = static_cast<unsigned>(n * heads);
    if (head_dim < 1 || head_dim > kMaxHeadDim) fail("attention: head_dim ", head_dim, " (the kernel takes 1 to ", kMaxHeadDim, ")");
    const int D = static_cast<int>(head_dim);
    auto run = [&](auto kernel) {
        kernel<<<blocks, kWarps * 32, 0, stream>>>(q, k_cache, v_cache, out, position0, heads, kv_heads, D, window, scale);
    };
    switch ((D + 31) / 32) {
        case 1: run(attention_rows<1>); break;
        case 2: run(attention_rows<2>); break;
        case 3: run(attention_rows<3>); break;
        case 4: run(attention_rows<4>); break;
        case 5: run(attention_rows<5>); break;
        case 6: run(attention_rows<6>); break;
        case 7: run(attention_rows<7>); break;
        default: run(attention_rows<8>); break;
    }
    check_launch("attention");
}

}  // namespace moepack::cuda
