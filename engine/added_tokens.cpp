// Added-token splitting with a byte trie.
#include "added_tokens.hpp"

#include "utf8.hpp"

namespace moepack::engine {
namespace {

// Start of the whitespace run that ends at `end` (not before `floor`).
size_t whitespace_start(std::string_view text, size_t end, size_t floor) {
    size_t pos = end;
    while (pos > floor) {
        size_t prev = pos - 1;
        while (prev > floor && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
        if (!is_unicode_whitespace(utf8_code_point_at(text, prev))) break;
        pos = prev;
    }
    return pos;
}

size_t whitespace_end(std::string_view text, size_t start) {
    size_t pos = start;
    while (pos < text.size() && is_unicode_whitespace(utf8_code_point_at(text, pos))) pos += utf8_length_at(text, pos);
    return pos;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<Token>& tokens) : nodes_(1), tokens_(tokens) {
    for (size_t t = 0; t < tokens_.size(); ++t) {
        const std::string& s = tokens_[t].content;
        if (s.empty()) continue;
        first_byte_[static_cast<unsigned char>(s[0])] = true;
        int32_t node = 0;
        for (unsigned char c : s) {
            int32_t next = -1;
            for (const auto& [byte, child] : nodes_[node].children)
                if (byte == c) next = child;
            if (next < 0) {
                next = static_cast<int32_t>(nodes_.size());
                nodes_[node].children.emplace_back(c, next);
                nodes_.emplace_back();
            }
            node = next;
        }
        if (nodes_[node].token < 0) nodes_[node].token = static_cast<int32_t>(t);  // first of duplicates wins
    }
}

std::pair<size_t, int32_t> AddedTokenMatcher::longest_at(std::string_view text, size_t pos) const {
    std::pair<size_t, int32_t> best{0, -1};
    int32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        int32_t next = -1;
        for (const auto& [byte, child] : nodes_[node].children)
            if (byte == c) next = child;
        if (next < 0) break;
        node = next;
        if (nodes_[node].token >= 0) best = {i + 1 - pos, nodes_[node].token};
    }
    return best;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<TextPiece>& out) const {
    size_t piece_start = 0;  // start of the text not yet emitted
    size_t pos = 0;
    while (pos < text.size()) {
        if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
            ++pos;
            continue;
        }
        const auto [length, index] = longest_at(text, pos);
        if (index < 0) {
            ++pos;
            continue;
        }
        const Token& token = tokens_[static_cast<size_t>(index)];
        size_t start = pos, end = pos + length;
        if (token.lstrip) start = whitespace_start(text, start, piece_start);
        if (token.rstrip) end = whitespace_end(text, end);
        if (start > piece_start) out.push_back({text.substr(piece_start, start - piece_start), std::nullopt});
        out.push_back({text.substr(start, end - start), token.id});
        piece_start = pos = end;
    }
    if (piece_start < text.size()) out.push_back({text.substr(piece_start), std::nullopt});
}

}  // namespace moepack::engine
