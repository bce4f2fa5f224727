// Token ids back to text, whole or streamed. A stream never emits part of a UTF-8 character:
// bytes that may still complete one wait for the next token, so every piece is valid UTF-8
// and the pieces concatenate to exactly what decoding all ids at once gives.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "tokenizer_format.hpp"

namespace moepack::engine {

class StreamDecoder {
public:
    // `table` must outlive the decoder. With `skip_special`, special tokens print nothing.
    StreamDecoder(const DecodeTable& table, bool skip_special);
    // Text that token `id` completes (possibly empty); throws moepack::Error for an id
    // outside the vocabulary.
    std::string push(uint32_t id);
    // Whatever is still held back (incomplete characters become U+FFFD).
    std::string finish();

private:
    std::string emit(std::string text);
    std::string flush_byte_run();
    const DecodeTable& table_;
    bool skip_special_;
    std::string pending_;  // byte-level: bytes of an incomplete character; else a run of byte tokens
    uint32_t strip_left_;
};

std::string decode(const DecodeTable& table, std::span<const uint32_t> ids, bool skip_special);

}  // namespace moepack::engine
