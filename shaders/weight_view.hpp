// The bridge between the engine's weight views and the kernels' (C++20 side only).
#pragma once

#include <vector>

#include "cpu/matmul.hpp"
#include "device_matrix.hpp"
#include "kernels.hpp"

namespace moepack::cuda {

// `w` with its pointers in device memory (e.g. a record copied to the GPU as it is laid out
// in the pack) as the kernels take it.
DeviceMatrix device_matrix(const engine::WeightMatrix& w);

// The device memory the matrices occupy (values, scales, biases), as at most kMaxL2Spans
// spans for prefetch_to_l2: sorted, and neighbours merged across the smallest gaps until
// they fit (a gap's bytes, e.g. a norm's vector between two matrices, are fetched too).
std::vector<DeviceSpan> weight_spans(const std::vector<DeviceMatrix>& matrices);

}  // namespace moepack::cuda
