// One logical matrix [rows, cols] of a checkpoint, however it is stored: a floating tensor
// (bf16/f16/f32, possibly one slice of a stacked [E, rows, cols] tensor), an fp8 tensor with
// block scales, MLX affine codes with scales and biases, or MXFP4 blocks with E8M0 scales.
// Reading gives float32 rows; MLX sources can also hand over their records unchanged.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "pack_format.hpp"
#include "safetensors.hpp"

namespace moepack {

enum class SourceEncoding { floating, fp8_block, mlx_affine, mxfp4 };

struct SourceMatrix {
    SourceEncoding encoding = SourceEncoding::floating;
    const SafetensorsFile* file = nullptr;
    const TensorInfo* weight = nullptr;   // values, codes, fp8 or FP4 blocks
    const TensorInfo* scales = nullptr;   // fp8 weight_scale_inv, MLX scales, MXFP4 scales
    const TensorInfo* biases = nullptr;   // MLX biases
    bool stacked = false;                 // tensors have a leading expert dimension [E, ...]
    uint64_t slice = 0;                   // the expert, when stacked
    uint64_t rows = 0, cols = 0;
    int bits = 0, group_size = 0;         // mlx_affine
    int64_t block_rows = 0, block_cols = 0;  // fp8_block

    // Human-readable name for errors ("model.layers.0.mlp.experts.gate_up_proj[3]").
    std::string label() const;
    // Checks the stored tensors' shapes against rows/cols (and slice), naming the tensor.
    void validate() const;
    // Rows [row_begin, row_begin + count) as float32, `count * cols` values.
    void read_rows(uint64_t row_begin, uint64_t count, float* out) const;
    // True when the stored codes are already a pack record of this bit width and group size.
    bool is_record_of(int bits, int group_size) const;
    // Copies the MLX codes, scales and biases into a record of `layout` (is_record_of must hold).
    void copy_record(const pack::MatrixLayout& layout, std::span<std::byte> record) const;
    // Lets this matrix's source pages leave the resident set once it has been consumed.
    void drop_pages() const;
};

}  // namespace moepack
