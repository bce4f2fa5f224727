// UTF-8 helpers of the tokenizer: validation, character boundaries, Unicode whitespace, and
// the lossy conversion of arbitrary bytes to text (each maximal invalid subpart becomes one
// U+FFFD, as the Unicode standard recommends and Rust's from_utf8_lossy does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moepack::engine {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Offset of the first byte that starts an invalid sequence, or text.size() when valid.
size_t first_invalid_utf8(std::string_view text);

// Length of the character starting at `pos` of valid UTF-8 text.
inline size_t utf8_length_at(std::string_view text, size_t pos) {
    const auto b = static_cast<unsigned char>(text[pos]);
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

// Decodes the character at `pos` of valid UTF-8 text.
uint32_t utf8_code_point_at(std::string_view text, size_t pos);

// Unicode White_Space (what Rust's char::is_whitespace accepts).
bool is_unicode_whitespace(uint32_t cp);

// Appends `bytes` to `out` as text, replacing invalid sequences with U+FFFD.
void append_lossy_utf8(std::string_view bytes, std::string& out);

// Bytes at the end of `bytes` that begin a character but do not complete it yet
// (0 to 3): the part of a stream that must wait for the next bytes.
size_t incomplete_utf8_tail(std::string_view bytes);

}  // namespace moepack::engine
