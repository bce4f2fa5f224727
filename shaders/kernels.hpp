// The CUDA kernels' launchers, one per operation (one .cu each in shaders/), each the GPU twin
// of a CPU reference in engine/: pointers are device memory, work goes to `stream`, and
// errors surface as moepack::Error. Plain C++17 (nvcc compiles it); weight matrices are
// DeviceMatrix views (device_matrix.hpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "device_matrix.hpp"

namespace moepack::cuda {

// Most inputs one gemv launch takes (decode: 1; a few tokens of a short prompt).
inline constexpr int64_t kMaxGemvInputs = 8;

// y [n, w.rows] = x [n, w.cols] . w^T, weights decoded on the fly (affine 2/4/8-bit records,
// bf16, f16, f32), float32 accumulation; n in [1, kMaxGemvInputs]. CPU reference: matmul.
void gemv(const DeviceMatrix& w, const float* x, int64_t n, float* y, cudaStream_t stream);

// out[t, :] = x[t, :] / rms(x[t, :]) * weight for n rows of dim values. CPU reference:
// rms_norm_to (blocks.hpp).
void rms_norm(const float* x, float* out, int64_t n, int64_t dim, const float* weight, float eps, cudaStream_t stream);

// out[i] = silu(gate[i]) * up[i] for count values. CPU reference: swiglu (blocks.hpp).
void swiglu(const float* gate, const float* up, float* out, int64_t count, cudaStream_t stream);

}  // namespace moepack::cuda
