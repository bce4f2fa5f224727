// Pack format version 1: the one definition of every constant, file name and layout rule
// of a pack (formats/pack.md describes the same bytes). The writer and every reader use
// these functions, so the two cannot disagree on where a byte lives.
//
// A quantized matrix [rows, cols] is a "matrix record" of three sections, each starting on
// a kSectionAlignment boundary relative to the record:
//   codes   rows x row_words(cols, bits) uint32, values packed LSB-first (MLX layout)
//   scales  rows x groups(cols, group) bf16
//   biases  rows x groups(cols, group) bf16          w = code * scale + bias
// A 16-bit record is one section: rows x cols bf16.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace moepack::pack {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr std::string_view kManifestName = "manifest.json";
inline constexpr std::string_view kWeightsName = "weights.bin";
inline constexpr std::string_view kConfigName = "config.json";
inline constexpr std::string_view kExpertsDir = "experts";
inline constexpr std::string_view kTokenizerName = "tokenizer.bin";   // formats/tokenizer.md
inline constexpr std::string_view kVocabName = "vocab.bin";           // formats/vocab.md
// Suffix of the directory a pack is assembled in before it is renamed into place.
inline constexpr std::string_view kStagingSuffix = ".partial";

inline constexpr std::array<char, 8> kWeightsMagic{'M', 'O', 'E', 'P', 'K', 'W', 'T', 'S'};
inline constexpr std::array<char, 8> kExpertsMagic{'M', 'O', 'E', 'P', 'K', 'E', 'X', 'P'};

inline constexpr uint64_t kWeightsHeaderBytes = 256;
inline constexpr uint64_t kTensorAlignment = 256;    // tensors in weights.bin
inline constexpr uint64_t kExpertAlignment = 4096;   // expert blocks (one direct read each)
inline constexpr uint64_t kExpertsHeaderBytes = 4096;
inline constexpr uint64_t kSectionAlignment = 64;    // sections inside a record

inline constexpr int kDefaultGroupSize = 64;
bool valid_expert_bits(int bits);       // 2, 4, 8, 16
bool valid_dense_bits(int bits);        // 4, 8, 16
bool valid_group_size(int group_size);  // 32, 64, 128

inline constexpr uint64_t align_up(uint64_t value, uint64_t alignment) {
    return (value + alignment - 1) / alignment * alignment;
}

// "experts/layer-007.bin"
std::string expert_file_name(int64_t layer);

// Sizes of one matrix record. `bits` 16 means bf16 passthrough (no scales or biases).
struct MatrixLayout {
    uint64_t rows = 0, cols = 0;
    int bits = 16;
    int group_size = 0;
    uint64_t row_words() const;      // uint32 words of codes per row
    uint64_t groups() const;         // groups per row (the last may be partial)
    uint64_t codes_offset() const { return 0; }
    uint64_t codes_bytes() const;    // bf16 data when bits == 16
    uint64_t scales_offset() const;
    uint64_t scales_bytes() const;
    uint64_t biases_offset() const;
    uint64_t biases_bytes() const { return scales_bytes(); }
    uint64_t bytes() const;          // the whole record, unpadded at the end
};
MatrixLayout matrix_layout(uint64_t rows, uint64_t cols, int bits, int group_size);

// One routed expert: gate [I, H], up [I, H], down [H, I] records, then optionally f32
// biases gate [I], up [I], down [H]; each part starts on kSectionAlignment.
struct ExpertBlockLayout {
    uint64_t hidden = 0, intermediate = 0;
    int bits = 16, group_size = 0;
    bool has_bias = false;
    MatrixLayout gate, up, down;
    uint64_t gate_offset = 0, up_offset = 0, down_offset = 0;
    uint64_t gate_bias_offset = 0, up_bias_offset = 0, down_bias_offset = 0;  // has_bias only
    uint64_t bytes = 0;    // unpadded block
    uint64_t stride = 0;   // block padded to kExpertAlignment
};
ExpertBlockLayout expert_block_layout(uint64_t hidden, uint64_t intermediate, int bits, int group_size, bool has_bias);

// Header of a per-layer expert file (little-endian, kExpertsHeaderBytes with zero padding).
struct ExpertsHeader {
    uint32_t version = kFormatVersion;
    uint32_t layer = 0;
    uint32_t num_experts = 0;
    uint32_t bits = 0;
    uint32_t group_size = 0;
    uint32_t flags = 0;          // bit 0: experts carry biases
    uint64_t hidden = 0, intermediate = 0;
    uint64_t expert_bytes = 0, expert_stride = 0;
    uint64_t file_bytes = 0;
};
inline constexpr uint32_t kExpertFlagBias = 1;
// The header of the expert file of `layer` holding `num_experts` blocks of `layout`.
ExpertsHeader experts_header(const ExpertBlockLayout& layout, int64_t layer, int64_t num_experts);
std::array<std::byte, kExpertsHeaderBytes> encode(const ExpertsHeader& h);
// Throws moepack::Error naming `label` for a wrong magic, a future version or bad fields.
ExpertsHeader decode_experts_header(std::span<const std::byte> bytes, const std::string& label);

// Header of weights.bin (little-endian, kWeightsHeaderBytes with zero padding).
struct WeightsHeader {
    uint32_t version = kFormatVersion;
    uint64_t tensor_count = 0;
    uint64_t file_bytes = 0;
};
std::array<std::byte, kWeightsHeaderBytes> encode(const WeightsHeader& h);
WeightsHeader decode_weights_header(std::span<const std::byte> bytes, const std::string& label);

// XXH3-64 as the 16 lowercase hex digits the manifest stores.
std::string hash_hex(uint64_t hash);
uint64_t parse_hash_hex(std::string_view text, const std::string& what);

}  // namespace moepack::pack
