// Internal to the matrix products: the entry points of the instruction-set specific kernels
// (matmul_avx2.cpp, matmul_avx512.cpp) that matmul.cpp dispatches to, and the constants they
// share with MatmulInput::prepare(). Not part of the engine's interface.
#pragma once

#include <cstdint>

#include "matmul.hpp"

namespace moepack::engine::detail {

// Products with fewer inputs than this use the decode kernels (affine: int8-quantised X);
// from this many on, the prefill kernels decode each weight row to float32 once and reuse it.
inline constexpr int64_t kPrefillMinInputs = 4;

// The int8 kernels need group sizes that are whole 32-value chunks (MatmulInput pads each
// group of its quantised X to the group size with zeros).
inline bool int8_group_ok(int group_size) { return group_size > 0 && group_size % 32 == 0; }

// Each returns false, having written nothing, when it does not handle this product (the
// caller then falls back to a less specific kernel). They run only on CPUs that have the
// instructions: matmul.cpp checks before calling.
bool matmul_rows_avx2(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride, int64_t row_begin,
                      int64_t row_end);
bool matmul_rows_avx512(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride,
                        int64_t row_begin, int64_t row_end);

// Decodes columns [c0, c0 + count) of row r to float32 (AVX2 + F16C); used by both files'
// prefill kernels. count > 0; for affine weights c0 is a multiple of 32.
void decode_span_avx2(const WeightMatrix& w, int64_t r, int64_t c0, int64_t count, float* out);

}  // namespace moepack::engine::detail
