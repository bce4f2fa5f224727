// Byte-pair encoding of one pre-tokenized word, as Hugging Face tokenizers' BPE model does
// it: initial symbols (bytes for byte-level models, characters otherwise, with <0xNN> byte
// fallback and unk), then repeated application of the lowest-ranked adjacent merge, ties to
// the leftmost, through a priority queue. Ranks and results are validated on construction.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer_format.hpp"

namespace moepack::engine {

class BpeModel {
public:
    // `file` names the tokenizer in errors about inconsistent data.
    BpeModel(const TokenizerData& data, const std::string& file);
    // Appends the ids of `word` (model symbol space: raw bytes for byte-level models,
    // normalised UTF-8 otherwise) to `out`.
    void encode_word(std::string_view word, std::vector<uint32_t>& out) const;

private:
    struct Symbol {
        uint32_t id;
        int32_t prev, next;
        bool removed;
    };
    void initial_symbols(std::string_view word, std::vector<Symbol>& symbols) const;
    void merge(std::vector<Symbol>& symbols) const;
    static uint64_t pair_key(uint32_t a, uint32_t b) { return (uint64_t{a} << 32) | b; }

    bool byte_level_, byte_fallback_, fuse_unk_, ignore_merges_;
    int64_t unk_id_ = -1;
    std::unordered_map<std::string_view, uint32_t> ids_;  // model symbol text -> id
    std::array<int64_t, 256> byte_ids_{};                 // byte-level symbols / <0xNN> tokens, -1 absent
    struct MergeInfo {
        uint32_t rank, result;
    };
    std::unordered_map<uint64_t, MergeInfo> merges_;
    std::vector<std::string> texts_;  // storage behind ids_
};

}  // namespace moepack::engine
