// The engine's tokenizer, loaded from tokenizer.bin: text -> ids exactly as the Hugging
// Face `tokenizers` library encodes it (added tokens split out first, normaliser,
// regex pre-tokenizer, byte-level or SentencePiece-style BPE, post-processor ids), and
// ids -> text (see detokenizer.hpp for streaming).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "added_tokens.hpp"
#include "bpe.hpp"
#include "normalizer.hpp"
#include "regex_split.hpp"
#include "tokenizer_format.hpp"

namespace moepack::engine {

class Tokenizer {
public:
    // `path` is a tokenizer.bin file or a pack directory holding one.
    static Tokenizer load(const std::string& path);
    Tokenizer(TokenizerData data, std::string name);

    // Throws moepack::Error when `text` is not valid UTF-8. With `add_special_tokens`, the
    // post-processor's ids (e.g. BOS) are put around the text.
    std::vector<uint32_t> encode(std::string_view text, bool add_special_tokens = true) const;
    std::string decode(std::span<const uint32_t> ids, bool skip_special_tokens = false) const;

    const TokenizerData& data() const { return data_; }
    // Text of an added token (e.g. to write BOS into a prompt); throws when `id` is not one.
    const std::string& added_token_text(uint32_t id) const;

private:
    struct PreStep {
        PreTokenizerKind kind;
        std::optional<RegexSplitter> splitter;
        bool add_prefix_space;
    };
    void encode_section(std::string_view text, std::vector<uint32_t>& out) const;
    void encode_normalized(std::string_view text, std::vector<uint32_t>& out) const;

    TokenizerData data_;
    std::string name_;
    AddedTokenMatcher raw_tokens_;         // added tokens matched in the input as written
    AddedTokenMatcher normalized_tokens_;  // added tokens matched after normalisation
    Normalizer normalizer_;
    std::vector<PreStep> pre_steps_;
    BpeModel model_;
};

}  // namespace moepack::engine
