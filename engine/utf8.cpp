// UTF-8 validation and lossy decoding by the well-formed byte sequences of Unicode table 3-7.
#include "utf8.hpp"

namespace moepack::engine {
namespace {

// For a lead byte: the sequence length and the allowed range of the second byte;
// length 0 for bytes that cannot start a sequence.
struct Lead {
    int length;
    unsigned char lo, hi;
};

Lead lead_of(unsigned char b) {
    if (b < 0x80) return {1, 0, 0};
    if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
    if (b == 0xE0) return {3, 0xA0, 0xBF};
    if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) return {3, 0x80, 0xBF};
    if (b == 0xED) return {3, 0x80, 0x9F};
    if (b == 0xF0) return {4, 0x90, 0xBF};
    if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
    if (b == 0xF4) return {4, 0x80, 0x8F};
    return {0, 0, 0};
}

// How many bytes from `pos` form a valid prefix of the sequence starting there (counting
// the lead byte); equals the sequence length when the character is complete.
int valid_prefix(std::string_view s, size_t pos, const Lead& lead) {
    int n = 1;
    while (n < lead.length && pos + n < s.size()) {
        const auto c = static_cast<unsigned char>(s[pos + n]);
        const bool ok = n == 1 ? (c >= lead.lo && c <= lead.hi) : (c >= 0x80 && c <= 0xBF);
        if (!ok) break;
        ++n;
    }
    return n;
}

}  // namespace

size_t first_invalid_utf8(std::string_view s) {
    size_t pos = 0;
    while (pos < s.size()) {
        const auto b = static_cast<unsigned char>(s[pos]);
        if (b < 0x80) {
            ++pos;
            continue;
        }
        const Lead lead = lead_of(b);
        if (lead.length == 0 || valid_prefix(s, pos, lead) != lead.length) return pos;
        pos += static_cast<size_t>(lead.length);
    }
    return s.size();
}

uint32_t utf8_code_point_at(std::string_view s, size_t pos) {
    const auto b = static_cast<unsigned char>(s[pos]);
    const size_t n = utf8_length_at(s, pos);
    if (n == 1) return b;
    uint32_t cp = b & (0x7Fu >> n);
    for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<unsigned char>(s[pos + i]) & 0x3Fu);
    return cp;
}

bool is_unicode_whitespace(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

void append_lossy_utf8(std::string_view s, std::string& out) {
    size_t pos = 0;
    while (pos < s.size()) {
        const auto b = static_cast<unsigned char>(s[pos]);
        if (b < 0x80) {
            out.push_back(static_cast<char>(b));
            ++pos;
            continue;
        }
        const Lead lead = lead_of(b);
        if (lead.length == 0) {
            out.append(kReplacementChar);
            ++pos;
            continue;
        }
        const int n = valid_prefix(s, pos, lead);
        if (n == lead.length) out.append(s.substr(pos, static_cast<size_t>(n)));
        else out.append(kReplacementChar);
        pos += static_cast<size_t>(n);
    }
}

size_t incomplete_utf8_tail(std::string_view s) {
    const size_t first = s.size() >= 3 ? s.size() - 3 : 0;
    for (size_t pos = first; pos < s.size(); ++pos) {
        const Lead lead = lead_of(static_cast<unsigned char>(s[pos]));
        if (lead.length <= 1) continue;
        const size_t have = s.size() - pos;
        if (have < static_cast<size_t>(lead.length) && valid_prefix(s, pos, lead) == static_cast<int>(have))
            return have;
    }
    return 0;
}

}  // namespace moepack::engine
