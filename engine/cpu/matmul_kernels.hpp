// Internal to the matrix products: the entry points of the instruction-set specific kernels
// (matmul_avx2.cpp, matmul_avx512.cpp) that matmul.cpp dispatches to, and the constants they
// share with MatmulInput::prepare(). Not part of the engine's interface.
#pragma once

#include <xmmintrin.h>

#include <cstdint>
#include <vector>

#include "matmul.hpp"

namespace moepack::engine::detail {

// Products with fewer inputs than this use the decode kernels (affine: int8-quantised X);
// from this many on, the prefill kernels decode each weight row to float32 once and reuse it.
inline constexpr int64_t kPrefillMinInputs = 4;

// Affine products of 2 or 4-bit weights with fewer inputs than this (and at least
// kPrefillMinInputs) also take the AVX-512 int8 kernels, when the CPU has them and the group
// size is a power of two: a row
// unpacked once for a block of inputs costs less than decoding it to float32 or bf16 until
// the batch is large. Process-wide; set_int8_max_inputs() is for benchmarks and tests (not
// while products run).
int64_t int8_max_inputs();
void set_int8_max_inputs(int64_t n);
inline constexpr int64_t kInt8MaxInputsDefault = 12;

// Whether products of w with n inputs run on int8-quantised inputs (with the kernels now in use).
bool int8_inputs(const WeightMatrix& w, int64_t n);

// Whether the AMX-INT8 kernels take the product of w with n inputs: 2 or 4-bit weights in
// groups of a multiple of 64, from kAmxInt8MinInputs inputs on (below, the AVX-512 int8
// kernels were faster: a tile always computes 16 inputs), on CPUs with AMX-INT8.
inline constexpr int64_t kAmxInt8MinInputs = 10;
bool amx_int8_inputs(const WeightMatrix& w, int64_t n);
bool amx_int8_usable();
// MatmulInput::x_int8_tiles[plane_index(bits)] from the natural int8 copy (xq), and the
// transposed scales and sums, for products with `bits`-bit weights.
void prepare_amx_int8_input(MatmulInput& in, int bits);

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
bool matmul_rows_amx(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride, int64_t row_begin,
                     int64_t row_end);
bool matmul_rows_amx_int8(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride,
                          int64_t row_begin, int64_t row_end);

// Whether this CPU has AMX-BF16 (with AVX512-BF16) and the kernel granted this process the
// tile state (asked once).
bool amx_usable();
// MatmulInput::x_tiles from X [n, cols].
void prepare_amx_input(const float* x, int64_t n, int64_t cols, std::vector<uint16_t>& tiles);

// Rows are short (2-bit codes of 2048 columns: 512 bytes) and come from three places (codes,
// scales, biases): the decode kernels prefetch kPrefetchRows ahead, which uses more of the
// memory bandwidth than the hardware prefetchers alone. (SSE prefetches: no target needed.)
inline constexpr int64_t kPrefetchRows = 8;

inline void prefetch_row(const WeightMatrix& w, int64_t r, int64_t r_end, int64_t row_bytes, int64_t groups) {
    if (r >= r_end) return;
    const char* codes = reinterpret_cast<const char*>(w.data) + r * row_bytes;
    for (int64_t i = 0; i < row_bytes; i += 64) _mm_prefetch(codes + i, _MM_HINT_T0);
    const char* s = reinterpret_cast<const char*>(w.scales + r * groups);
    const char* b = reinterpret_cast<const char*>(w.biases + r * groups);
    for (int64_t i = 0; i < groups * 2; i += 64) {
        _mm_prefetch(s + i, _MM_HINT_T0);
        _mm_prefetch(b + i, _MM_HINT_T0);
    }
}

// Decodes columns [c0, c0 + count) of row r to float32 (AVX2 + F16C); used by both files'
// prefill kernels. count > 0; for affine weights c0 is a multiple of 32.
void decode_span_avx2(const WeightMatrix& w, int64_t r, int64_t c0, int64_t count, float* out);

}  // namespace moepack::engine::detail
