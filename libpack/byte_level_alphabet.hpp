// The byte-level alphabet of GPT-2-style tokenizers: every byte is written as one printable
// code point (printable Latin-1 bytes as themselves, the other 68 bytes as U+0100..U+0143 in
// byte order), so that vocabularies can be stored as text. The exporter reverses it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace moepack {

// The raw bytes a byte-level token text stands for; nullopt when a character of `text` is
// not in the alphabet (or `text` is not valid UTF-8).
std::optional<std::string> byte_level_to_bytes(std::string_view text);

}  // namespace moepack
