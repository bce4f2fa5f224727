// libFuzzer target: arbitrary bytes as tokenizer.bin (header and checksum path) and as its
// payload (past the checksum); what parses is loaded into the engine's tokenizer, which
// encodes and decodes a few texts. Results and moepack::Error are fine; anything else
// (crash, sanitizer report, other exception, runaway allocation) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "error.hpp"
#include "tokenizer.hpp"
#include "tokenizer_file.hpp"

namespace {

void exercise(moepack::TokenizerData data) {
    const moepack::engine::Tokenizer tok(std::move(data), "fuzz");
    for (const char* text : {"", "Hello, world! 123", "a  b\r\n\tc", "<s>x</s>", "\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80"}) {
        const auto ids = tok.encode(text);
        (void)tok.decode(ids, false);
        (void)tok.decode(ids, true);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
    try {
        (void)moepack::parse_tokenizer_file(bytes, "fuzz");
    } catch (const moepack::Error&) {
    }
    try {
        exercise(moepack::parse_tokenizer_payload(bytes, "fuzz"));
    } catch (const moepack::Error&) {
    }
    return 0;
}
