// CUDA runtime errors as moepack::Error (the library never prints or exits): every runtime
// call and kernel launch of the backend goes through check_cuda.
#pragma once

#include <cuda_runtime_api.h>

#include "error.hpp"

namespace moepack::cuda {

inline void check_cuda(cudaError_t status, const char* what) {
    if (status != cudaSuccess) fail("CUDA: ", what, ": ", cudaGetErrorString(status));
}

// After a kernel launch: a bad configuration shows here, not at the launch.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

}  // namespace moepack::cuda
