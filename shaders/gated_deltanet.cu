// Gated DeltaNet, the linear-attention layers of qwen3_next and qwen3_5_moe, between the
// layer's input products and its output product:
//   gated_deltanet_convolve: the causal depthwise convolution with SiLU over a batch of
//     tokens, a thread per channel walking the tokens, and the convolution state (the last
//     K - 1 inputs) carried to the next call;
//   gated_deltanet_recur: the delta rule, a block per value head walking the tokens with the
//     head's state S [dk, dv] in shared memory (each thread owns value columns), q and k
//     l2-normalised per token on the fly, beta and the decay from the raw projections, and
//     the gated RMSNorm of each token's output; S is read once and written back at the end.
// CPU references: gated_deltanet_convolve, gated_deltanet_recur
// (engine/models/gated_deltanet.hpp), which these follow operation for operation.
#include <cstdint>

#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "rms.cuh"

namespace moepack::cuda {
namespace {

constexpr int kConvThreads = 256;
constexpr int kThreads = 128;                       // per value head
constexpr int kMaxColumns = 2;                      // value columns per thread: dv up to 256
constexpr float kL2NormEps = 1e-6f;                 // of the q and k l2 normalisation (as the CPU's)
constexpr size_t kMaxSharedBytes = 200 * 1024;      // S and one token's q, k

__device__ inline float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
// log(1 + e^x), linear above 20 as torch's softplus
__device__ inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

__global__ void __launch_bounds__(kConvThreads)
    convolve_channels(const float* __restrict__ mixed, int64_t n, int64_t channels, int kernel, const float* __restrict__ weight,
                      float* __restrict__ conv_state, float* __restrict__ out) {
    detail::wait_for_inputs();
    const int64_t c = static_cast<int64_t>(blockIdx.x) * kConvThreads + threadIdx.x;
    if (c >= channels) return;
    // input row s < 0 of this batch is state row s + K - 1
    const auto input = [&](int64_t s) { return s >= 0 ? mixed[s * channels + c] : conv_state[(s + kernel - 1) * channels + c]; };
    for (int64_t t = 0; t < n; ++t) {
        float acc = 0.0f;
        for (int j = 0; j < kernel; ++j) acc += weight[c * kernel + j] * input(t - (kernel - 1) + j);
        out[t * channels + c] = silu(acc);
    }
    // the last K - 1 inputs; ascending rows read state rows not yet overwritten
    for (int i = 0; i < kernel - 1; ++i) conv_state[i * channels + c] = input(n - (kernel - 1) + i);
}

__global__ void __launch_bounds__(kThreads)
    delta_rule_heads(DeltaRuleShape d, const float* __restrict__ x, int64_t n, const float* __restrict__ b,
                     const float* __restrict__ a, const float* __restrict__ a_log, const float* __restrict__ dt_bias,
                     const float* __restrict__ z, const float* __restrict__ norm, float* __restrict__ state,
                     float* __restrict__ o) {
    detail::wait_for_inputs();
    extern __shared__ float shared[];
    __shared__ float partial[kThreads / 32];
    const int64_t dk = d.dk, dv = d.dv, nk = d.nk, nv = d.nv;
    float* S = shared;        // [dk][dv]
    float* q = S + dk * dv;   // [dk], this token's, as projected
    float* k = q + dk;        // [dk]
    const int64_t v = blockIdx.x, kh = v / (nv / nk), C = 2 * nk * dk + nv * dv, V = nv * dv;
    float* S_head = state + v * dk * dv;
    for (int64_t i = threadIdx.x; i < dk * dv; i += kThreads) S[i] = S_head[i];
    const float q_scale = 1.0f / sqrtf(static_cast<float>(dk)), a_scale = expf(a_log[v]);
    for (int64_t t = 0; t < n; ++t) {
        const float* row = x + t * C;
        float qq = 0.0f, kk = 0.0f;
        for (int64_t i = threadIdx.x; i < dk; i += kThreads) {
            const float qi = row[kh * dk + i], ki = row[nk * dk + kh * dk + i];
            q[i] = qi;
            k[i] = ki;
            qq += qi * qi;
            kk += ki * ki;
        }
        // (the sums' barriers also publish q and k)
        const float q_norm = q_scale / sqrtf(detail::block_sum<kThreads>(qq, partial) + kL2NormEps);
        const float k_norm = 1.0f / sqrtf(detail::block_sum<kThreads>(kk, partial) + kL2NormEps);
        const float decay = expf(-a_scale * softplus(a[t * nv + v] + dt_bias[v]));
        const float beta = sigmoid(b[t * nv + v]);
        float out[kMaxColumns];
        float ss = 0.0f;
#pragma unroll
        for (int col = 0; col < kMaxColumns; ++col) {
            const int64_t j = threadIdx.x + col * kThreads;
            out[col] = 0.0f;
            if (j >= dv) continue;
            float kv = 0.0f;   // S^T k after the decay
            for (int64_t i = 0; i < dk; ++i) {
                const float s = S[i * dv + j] * decay;
                S[i * dv + j] = s;
                kv += s * (k[i] * k_norm);
            }
            const float delta = (row[2 * nk * dk + v * dv + j] - kv) * beta;
            float oj = 0.0f;
            for (int64_t i = 0; i < dk; ++i) {
                const float s = S[i * dv + j] + (k[i] * k_norm) * delta;
                S[i * dv + j] = s;
                oj += s * (q[i] * q_norm);
            }
            out[col] = oj;
            ss += oj * oj;
        }
        const float inv = 1.0f / sqrtf(detail::block_sum<kThreads>(ss, partial) / static_cast<float>(dv) + d.eps);
#pragma unroll
        for (int col = 0; col < kMaxColumns; ++col) {
            const int64_t j = threadIdx.x + col * kThreads;
            if (j < dv) o[t * V + v * dv + j] = out[col] * inv * norm[j] * silu(z[t * V + v * dv + j]);
        }
        // (block_sum's barrier keeps this token's q and k until every thread is done with them)
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < dk * dv; i += kThreads) S_head[i] = S[i];
}

size_t recur_shared_bytes(const DeltaRuleShape& d) { return static_cast<size_t>(d.dk * d.dv + 2 * d.dk) * sizeof(float); }

}  // namespace

void gated_deltanet_convolve(const float* mixed, int64_t n, int64_t channels, int64_t kernel, const float* weight,
                             float* conv_state, float* out, cudaStream_t stream) {
    if (n <= 0 || channels <= 0) return;
    if (kernel < 1 || kernel > 64) fail("gated_deltanet_convolve: a kernel of ", kernel, " (expected 1 to 64)");
    detail::launch(convolve_channels, static_cast<unsigned>((channels + kConvThreads - 1) / kConvThreads), kConvThreads, 0, stream,
                   mixed, n, channels, static_cast<int>(kernel), weight, conv_state, out);
    check_launch("gated_deltanet_convolve");
}

bool gated_deltanet_recur_supports(const DeltaRuleShape& d) {
    return d.nk >= 1 && d.nv % d.nk == 0 && d.dk >= 1 && d.dv >= 1 && d.dv <= kMaxColumns * kThreads &&
           recur_shared_bytes(d) <= kMaxSharedBytes;
}

void gated_deltanet_recur(const DeltaRuleShape& d, const float* x, int64_t n, const float* b, const float* a, const float* a_log,
                          const float* dt_bias, const float* z, const float* norm, float* state, float* o, cudaStream_t stream) {
    if (n <= 0) return;
    if (!gated_deltanet_recur_supports(d))
        fail("gated_deltanet_recur: ", d.nk, " key and ", d.nv, " value heads of ", d.dk, " and ", d.dv,
             " (expected value heads a multiple of key heads, dv up to ", kMaxColumns * kThreads, ", dk x dv within ",
             kMaxSharedBytes / 1024, " KB)");
    const size_t shared = recur_shared_bytes(d);
    static const cudaError_t allowed =
        cudaFuncSetAttribute(delta_rule_heads, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kMaxSharedBytes));
    check_cuda(allowed, "gated_deltanet_recur: shared memory");
    detail::launch(delta_rule_heads, static_cast<unsigned>(d.nv), kThreads, shared, stream, d, x, n, b, a, a_log, dt_bias, z, norm,
                   state, o);
    check_launch("gated_deltanet_recur");
}

}  // namespace moepack::cuda
