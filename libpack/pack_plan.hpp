// What a pack will hold, decided before a byte is written: every non-expert tensor with its
// normalised name, source encoding, output encoding, offset and size in weights.bin, and for
// every MoE layer where each expert's gate/up/down (and biases) come from in the checkpoint.
// Because sizes are known up front, free space is checked and the manifest is exact.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint_summary.hpp"
#include "pack_format.hpp"
#include "quantize.hpp"
#include "source_matrix.hpp"

namespace moepack {

struct PackOptions {
    int expert_bits = 4;                          // 2, 4, 8 or 16
    int group_size = pack::kDefaultGroupSize;     // 32, 64 or 128
    int dense_bits = 16;                          // 16: source precision; 8 or 4: affine
    QuantMethod method = QuantMethod::search;
    int threads = 0;                              // 0: all cores
};

// How a non-expert tensor is stored in weights.bin.
enum class DenseEncoding { f32, f16, bf16, affine };
const char* to_string(DenseEncoding e);

// Source rows [first, first + count).
struct RowRun {
    uint64_t first = 0, count = 0;
};

struct DenseTensorPlan {
    std::string name;                  // normalised pack name ("layers.0.self_attn.q_proj.weight")
    TensorRole role = TensorRole::skipped;
    int64_t layer = -1;
    std::vector<std::string> sources;  // checkpoint tensors it is made from
    std::vector<int64_t> shape;        // logical shape
    SourceMatrix source;               // read as [rows, cols] (1-D tensors: one row)
    std::vector<RowRun> row_runs;      // the tensor's rows, when only some source rows or another order
    DenseEncoding encoding = DenseEncoding::bf16;
    int bits = 16, group_size = 0;     // affine
    bool fold_one_plus = false;        // stored weight = 1 + source weight
    bool copy_record = false;          // MLX codes copied unchanged
    uint64_t offset = 0, bytes = 0;    // in weights.bin
    pack::MatrixLayout layout() const;
    uint64_t rows() const;             // of the stored tensor
    // Stored rows [begin, begin + count) as float32 values (before folding or encoding).
    void read_rows(uint64_t begin, uint64_t count, float* out) const;
};

// One projection of one expert, as a view of a source matrix: output row i is source row
// (first + i * step), or source column (first + i * step) when transposed.
struct ProjectionSource {
    SourceMatrix matrix;
    bool transposed = false;
    uint64_t first = 0, step = 1;
};

struct BiasSource {
    const SafetensorsFile* file = nullptr;
    const TensorInfo* tensor = nullptr;  // [E, n]
    uint64_t slice = 0, first = 0, step = 1;
};

struct ExpertSourcePlan {
    ProjectionSource gate, up, down;
    std::optional<BiasSource> gate_bias, up_bias, down_bias;
};

struct LayerSourcePlan {
    int64_t layer = 0;
    std::vector<ExpertSourcePlan> experts;
};

struct PackPlan {
    nlohmann::json model;                      // the normalised model description (manifest "model")
    int64_t num_experts = 0;
    PackOptions options;
    pack::ExpertBlockLayout expert;            // zero sizes when the model has no MoE layer
    std::vector<DenseTensorPlan> dense;        // in weights.bin order
    uint64_t weights_file_bytes = 0;
    std::vector<LayerSourcePlan> layers;       // MoE layers in order (empty sources for pack sources)
    uint64_t expert_file_bytes() const;        // one layer file
    uint64_t total_bytes() const;
};

// Throws moepack::Error naming the tensor when the checkpoint cannot be packed.
PackPlan plan_pack(const CheckpointSummary& summary, const PackOptions& options);

// Reads one expert projection as float32 [rows, cols] (`scratch` is reused between calls).
void read_projection(const ProjectionSource& p, uint64_t rows, uint64_t cols, float* out,
                     std::vector<float>& scratch);
void read_bias(const BiasSource& b, uint64_t count, float* out);

}  // namespace moepack
