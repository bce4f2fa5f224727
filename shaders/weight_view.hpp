// The bridge between the engine's weight views and the kernels' (C++20 side only).
#pragma once

#include "cpu/matmul.hpp"
#include "device_matrix.hpp"

namespace moepack::cuda {

// `w` with its pointers in device memory (e.g. a record copied to the GPU as it is laid out
// in the pack) as the kernels take it.
DeviceMatrix device_matrix(const engine::WeightMatrix& w);

}  // namespace moepack::cuda
