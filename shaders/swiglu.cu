// SwiGLU of rows: out[t, i] = silu(gate[t, i]) * up[t, i], times sigmoid(row_gates[t]) when
// given (a gated shared expert's scale, applied before its down product, which is linear),
// one thread per value. CPU reference: swiglu in engine/blocks.cpp (and the shared expert's
// scale in engine/models/decoder.cpp).
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void swiglu_values(const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ out,
                              int64_t count, int64_t width, const float* __restrict__ row_gates) {
    detail::wait_for_inputs();
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (i >= count) return;
    const float act = gate[i] / (1.0f + expf(-gate[i])) * up[i];
    out[i] = row_gates ? act / (1.0f + expf(-row_gates[i / width])) : act;
}

}  // namespace

void swiglu(const float* gate, const float* up, float* out, int64_t rows, int64_t width, const float* row_gates,
            cudaStream_t stream) {
    const int64_t count = rows * width;
    if (count <= 0) return;
    if ((count + kThreads - 1) / kThreads > 2147483647) fail("swiglu: ", count, " values in one launch");
    detail::launch(swiglu_values, static_cast<unsigned>((count + kThreads - 1) / kThreads), kThreads, 0, stream, gate, up, out, count,
                   width, row_gates);
    check_launch("swiglu");
}

}  // namespace moepack::cuda
