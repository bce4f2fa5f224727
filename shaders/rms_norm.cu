// RMSNorm of n rows: out[t, :] = x[t, :] * rsqrt(mean(x[t, :]^2) + eps) * weight, one block
// per row, the sum of squares reduced in float32 (rms.cuh). Fused with the quantisation of
// the normalised rows for affine products: a warp per (row, quantisation, group), each block
// working out its row's inverse RMS again (the same reduction, so the same bits), the
// normalised values made on the fly and written out by the first quantisation's warps. CPU
// references: rms_norm_to in engine/blocks.cpp (which sums in double; the tests allow for
// it) and MatmulInput::prepare.
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "quantize.cuh"
#include "rms.cuh"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) rms_norm_rows(const float* __restrict__ x, float* __restrict__ out,
                                                          int64_t dim, const float* __restrict__ weight, float eps) {
    detail::wait_for_inputs();
    const float* xr = x + blockIdx.x * dim;
    float* o = out + blockIdx.x * dim;
    const float inv = detail::inverse_rms<kThreads>(xr, dim, eps);
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) o[i] = xr[i] * inv * weight[i];
}

struct Quantizations {
    QuantizedInput q[kMaxNormQuantizations];
    int count;
    int64_t items;   // groups of all of them, per row
};

constexpr int kWarps = kThreads / 32;

// grid: (blocks of kWarps items of a row, rows)
__global__ void __launch_bounds__(kThreads)
    rms_norm_quantize_rows(const float* __restrict__ x, float* __restrict__ out, int64_t dim, const float* __restrict__ weight,
                           float eps, Quantizations qs) {
    detail::wait_for_inputs();
    const int64_t t = blockIdx.y;
    const float* xr = x + t * dim;
    const float inv = detail::inverse_rms<kThreads>(xr, dim, eps);
    int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    if (item >= qs.items) return;
    int k = 0;
    while (item >= qs.q[k].groups) item -= qs.q[k++].groups;
    const QuantizedInput& q = qs.q[k];
    const int64_t c0 = item * q.group_size;
    float* o = k == 0 ? out + t * dim + c0 : nullptr;   // the first quantisation's warps write the row
    detail::quantize_group(q, t, item, static_cast<int>(threadIdx.x % 32), [&](int64_t i) {
        const float v = xr[c0 + i] * inv * weight[c0 + i];
        if (o) o[i] = v;
        return v;
    });
}

}  // namespace

void rms_norm_quantized(const float* x, float* out, int64_t n, int64_t dim, const float* weight, float eps,
                        const QuantizedInput* quantized, int count, cudaStream_t stream) {
    if (count == 0) return rms_norm(x, out, n, dim, weight, eps, stream);
    if (count < 0 || count > kMaxNormQuantizations)
        fail("rms_norm_quantized: ", count, " quantisations (at most ", kMaxNormQuantizations, ")");
    if (x == out) fail("rms_norm_quantized: the rows cannot be normalised in place");
    if (n <= 0 || dim <= 0) return;
    Quantizations qs{{}, count, 0};
    for (int k = 0; k < count; ++k) {
        if (quantized[k].cols != dim || quantized[k].n < n)
            fail("rms_norm_quantized: a quantisation of ", quantized[k].n, " x ", quantized[k].cols, " for ", n, " rows of ", dim);
        qs.q[k] = quantized[k];
        qs.items += quantized[k].groups;
    }
    if (n > 65535) fail("rms_norm_quantized: ", n, " rows in one launch");
    const dim3 grid(static_cast<unsigned>((qs.items + kWarps - 1) / kWarps), static_cast<unsigned>(n));
    detail::launch(rms_norm_quantize_rows, grid, kThreads, 0, stream, x, out, dim, weight, eps, qs);
    check_launch("rms_norm_quantized");
}

void rms_norm(const float* x, float* out, int64_t n, int64_t dim, const float* weight, float eps, cudaStream_t stream) {
    if (n <= 0 || dim <= 0) return;
    detail::launch(rms_norm_rows, static_cast<unsigned>(n), kThreads, 0, stream, x, out, dim, weight, eps);
    check_launch("rms_norm");
}

}  // namespace moepack::cuda
