// Writes safetensors files (tests, synthetic checkpoints for benchmarks). The header is
// padded with spaces to a multiple of 8 bytes unless `align_data` is false, which writes it
// unpadded as MLX does.
#pragma once

#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "dtype.hpp"

namespace moepack {

struct TensorToWrite {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::span<const std::byte> data;  // numel * dtype_size bytes
};

// The header JSON text (without the length prefix) that write_safetensors would emit.
std::string safetensors_header_json(const std::vector<TensorToWrite>& tensors,
                                    const std::map<std::string, std::string>& metadata);

// Writes `path` atomically. Throws moepack::Error when a tensor's data size does not match
// its shape.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {},
                       bool align_data = true);

}  // namespace moepack
