// Byte-level alphabet: symbols back to bytes.
#include "byte_level_alphabet.hpp"

#include <array>
#include <cstdint>

namespace moepack {
namespace {

bool printable_as_itself(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

struct Alphabet {
    std::array<int, 0x144> byte_of{};  // code point -> byte, -1 when not in the alphabet
    Alphabet() {
        byte_of.fill(-1);
        uint32_t next = 0x100;
        for (int b = 0; b < 256; ++b) byte_of[printable_as_itself(b) ? static_cast<uint32_t>(b) : next++] = b;
    }
};

const Alphabet& alphabet() {
    static const Alphabet a;
    return a;
}

}  // namespace

std::optional<std::string> byte_level_to_bytes(std::string_view text) {
    const Alphabet& a = alphabet();
    std::string out;
    out.reserve(text.size());
    size_t i = 0;
    while (i < text.size()) {
        const auto c0 = static_cast<unsigned char>(text[i]);
        uint32_t cp;
        if (c0 < 0x80) {
            cp = c0;
            i += 1;
        } else if ((c0 & 0xE0) == 0xC0 && i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80) {
            cp = ((c0 & 0x1Fu) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3Fu);
            if (cp < 0x80) return std::nullopt;  // overlong form
            i += 2;
        } else {
            return std::nullopt;  // every alphabet code point is below U+0800
        }
        if (cp >= a.byte_of.size() || a.byte_of[cp] < 0) return std::nullopt;
        out.push_back(static_cast<char>(a.byte_of[cp]));
    }
    return out;
}

}  // namespace moepack
