// The non-expert weights of a pack: weights.bin mapped read-only, tensors looked up by their
// normalised names and handed out as views (shape-checked against what the graph expects).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cpu/matmul.hpp"
#include "mapped_file.hpp"
#include "pack_reader.hpp"

namespace moepack::engine {

class DenseWeights {
public:
    // Maps weights.bin of `pack` and checks its header; throws moepack::Error naming the file.
    explicit DenseWeights(const Pack& pack);

    bool has(const std::string& name) const { return pack_.find_tensor(name) != nullptr; }
    // A 2-D weight [rows, cols]; throws naming the tensor when it is missing or shaped otherwise.
    WeightMatrix matrix(const std::string& name, int64_t rows, int64_t cols) const;
    // An f32 tensor of the given shape (norms, biases, a convolution's [channels, kernel]).
    const float* values(const std::string& name, const std::vector<int64_t>& shape) const;
    // A 1-D f32 tensor of `size` values.
    const float* vector(const std::string& name, int64_t size) const { return values(name, {size}); }
    uint64_t bytes() const { return file_.bytes().size(); }
    const std::byte* base() const { return file_.bytes().data(); }   // the mapped file (views point into it)

private:
    const PackTensor& find(const std::string& name) const;
    const Pack& pack_;
    MappedFile file_;
};

}  // namespace moepack::engine
