// RMSNorm of n rows: out[t, :] = x[t, :] * rsqrt(mean(x[t, :]^2) + eps) * weight, one block
// per row, the sum of squares reduced in float32 (rms.cuh). CPU reference:
// rms_norm_to in engine/blocks.cpp (which sums in double; the tests allow for it).
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
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

}  // namespace

void rms_norm(const float* x, float* out, int64_t n, int64_t dim, const float* weight, float eps, cudaStream_t stream) {
    if (n <= 0 || dim <= 0) return;
    detail::launch(rms_norm_rows, static_cast<unsigned>(n), kThreads, 0, stream, x, out, dim, weight, eps);
    check_launch("rms_norm");
}

}  // namespace moepack::cuda
