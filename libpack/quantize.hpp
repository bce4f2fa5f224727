// Group-wise affine quantization in the pack's (MLX's) layout: per group of `group_size`
// consecutive values of a row, w ≈ code * scale + bias with bf16 scale and bias and
// `bits`-bit codes packed LSB-first into uint32 words (the last group of a row may be
// shorter; the last word of a row is zero-padded). See pack_format.hpp for the record layout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "pack_format.hpp"

namespace moepack {

enum class QuantMethod {
    minmax,   // the group's min and max map to codes 0 and 2^bits - 1
    search,   // the best of a few clipped ranges, refined by least squares (default)
};

// Quantizes one row of `cols` finite values. `codes` has row_words() words, `scales` and
// `biases` groups() entries.
void quantize_row(const float* row, uint64_t cols, int bits, int group_size, QuantMethod method,
                  uint32_t* codes, uint16_t* scales, uint16_t* biases);

// Scales and biases as float32 (one per group), so sources with f16 or f32 scales decode too.
void dequantize_row(const uint32_t* codes, const float* scales, const float* biases, uint64_t cols, int bits,
                    int group_size, float* row);

// Whole matrix records (pack_format.hpp MatrixLayout): `record` holds layout.bytes() bytes.
// With bits == 16 the record is bf16 (round to nearest even). Throws moepack::Error on a
// non-finite value, naming its row and column.
void encode_matrix(const float* matrix, const pack::MatrixLayout& layout, QuantMethod method,
                   std::span<std::byte> record);
// Rows [row_begin, row_begin + row_count) only, for callers that stream a large matrix.
void encode_matrix_rows(const float* rows, uint64_t row_begin, uint64_t row_count,
                        const pack::MatrixLayout& layout, QuantMethod method, std::span<std::byte> record);
void decode_matrix(std::span<const std::byte> record, const pack::MatrixLayout& layout, float* matrix);

}  // namespace moepack
