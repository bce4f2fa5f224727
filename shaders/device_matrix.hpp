// A weight matrix in GPU memory as the kernels take it: the pack encodings of
// engine::WeightMatrix (formats/pack.md), with the affine record's derived sizes. Plain
// C++17, so that nvcc compiles it without the engine's C++20 headers; weight_view.cpp makes
// one from an engine::WeightMatrix whose pointers lie in device memory.
#pragma once

#include <cstdint>

namespace moepack::cuda {

enum class DeviceFormat : int { f32, f16, bf16, affine };

struct DeviceMatrix {
    DeviceFormat format = DeviceFormat::bf16;
    int64_t rows = 0, cols = 0;
    int bits = 16, group_size = 0;              // affine
    int64_t row_words = 0, groups = 0;          // affine: uint32 code words and groups per row
    const void* data = nullptr;                 // values, or codes [rows, row_words]
    const uint16_t* scales = nullptr;           // affine: bf16 [rows, groups]
    const uint16_t* biases = nullptr;           // affine: bf16 [rows, groups]
};

}  // namespace moepack::cuda
