// SwiGLU: out[i] = silu(gate[i]) * up[i], one thread per value. CPU reference: swiglu in
// engine/blocks.cpp.
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void swiglu_values(const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ out,
                              int64_t count) {
    detail::wait_for_inputs();
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (i < count) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

}  // namespace

void swiglu(const float* gate, const float* up, float* out, int64_t count, cudaStream_t stream) {
    if (count <= 0) return;
    detail::launch(swiglu_values, static_cast<unsigned>((count + kThreads - 1) / kThreads), kThreads, 0, stream, gate, up, out, count);
    check_launch("swiglu");
}

}  // namespace moepack::cuda
