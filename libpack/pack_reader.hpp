// Opening a pack: reads and checks manifest.json (every number range-checked, every path
// inside the pack, every piece inside its file), then gives the tensor and expert indexes
// and reads single experts with one pread each.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "pack_format.hpp"
#include "pack_plan.hpp"

namespace moepack {

struct PackFile {
    std::string path;   // relative to the pack directory
    uint64_t bytes = 0, xxh3 = 0;
};

struct PackPiece {
    uint64_t offset = 0, bytes = 0, xxh3 = 0;
};

struct PackTensor {
    std::string name, role;
    int64_t layer = -1;
    std::vector<int64_t> shape;
    DenseEncoding encoding = DenseEncoding::bf16;
    int bits = 16, group_size = 0;
    PackPiece piece;
    uint64_t rows() const;
    uint64_t cols() const;
    pack::MatrixLayout layout() const;   // affine and bf16 2-D tensors
};

struct PackExpertLayer {
    int64_t layer = 0;
    std::string file;
    std::vector<PackPiece> experts;
    int fd = -1;   // open for reading while the Pack lives
};

// One expert decoded to float32: gate/up [I * H], down [H * I], biases when present.
struct ExpertValues {
    std::vector<float> gate, up, down, gate_bias, up_bias, down_bias;
};

class Pack {
public:
    // Throws moepack::Error naming manifest.json and the entry that is wrong.
    static std::unique_ptr<Pack> open(const std::string& directory);
    ~Pack();
    Pack(const Pack&) = delete;
    Pack& operator=(const Pack&) = delete;

    const std::string& directory() const { return directory_; }
    const nlohmann::json& manifest() const { return manifest_; }
    const std::vector<PackFile>& files() const { return files_; }
    std::string path_of(const std::string& relative) const;

    bool has_weights() const { return has_weights_; }
    const std::vector<PackTensor>& tensors() const { return tensors_; }
    const PackTensor* find_tensor(const std::string& name) const;

    bool has_experts() const { return has_experts_; }
    const pack::ExpertBlockLayout& expert_layout() const { return expert_; }
    int64_t num_experts() const { return num_experts_; }
    const std::vector<PackExpertLayer>& expert_layers() const { return layers_; }
    // Reads expert `expert` of expert_layers()[layer_index] (expert_layout().bytes bytes).
    void read_expert(size_t layer_index, int64_t expert, std::span<std::byte> block) const;
    // tokenizer.bin and vocab.bin, relative to the pack; empty when the pack has none.
    const std::string& tokenizer_file() const { return tokenizer_file_; }
    const std::string& vocab_file() const { return vocab_file_; }
    // Reads a piece of weights.bin.
    void read_tensor(const PackTensor& t, std::span<std::byte> out) const;

private:
    Pack() = default;
    std::string directory_;
    nlohmann::json manifest_;
    std::vector<PackFile> files_;
    bool has_weights_ = false, has_experts_ = false;
    std::vector<PackTensor> tensors_;
    pack::ExpertBlockLayout expert_;
    int64_t num_experts_ = 0;
    std::vector<PackExpertLayer> layers_;
    std::string tokenizer_file_, vocab_file_;
    int weights_fd_ = -1;
};

// Decodes an expert block of `layout` (from Pack::read_expert or a writer) to float32.
void decode_expert(std::span<const std::byte> block, const pack::ExpertBlockLayout& layout, ExpertValues& out);
// pread of exactly out.size() bytes; throws naming `label` on an error or a short file.
void pread_exact(int fd, std::span<std::byte> out, uint64_t offset, const std::string& label);

}  // namespace moepack
