// Splits text on a tokenizer's added tokens (special tokens included) before anything else
// looks at it: leftmost match first, the longest token at that position, as Hugging Face
// tokenizers do; lstrip/rstrip tokens take the whitespace beside them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moepack::engine {

struct TextPiece {
    std::string_view text;
    std::optional<uint32_t> token;  // set when the piece is an added token
};

class AddedTokenMatcher {
public:
    struct Token {
        std::string content;
        uint32_t id;
        bool lstrip, rstrip;
    };
    explicit AddedTokenMatcher(const std::vector<Token>& tokens);
    bool empty() const { return nodes_.size() == 1; }
    // Appends the pieces of `text` (valid UTF-8) to `out`; empty text pieces are dropped.
    void split(std::string_view text, std::vector<TextPiece>& out) const;

private:
    struct Node {
        std::vector<std::pair<unsigned char, int32_t>> children;
        int32_t token = -1;  // index into tokens_ when a token ends here
    };
    // Length of the longest token starting at `pos` and its index, or {0, -1}.
    std::pair<size_t, int32_t> longest_at(std::string_view text, size_t pos) const;
    std::vector<Node> nodes_;
    std::vector<Token> tokens_;
    bool first_byte_[256] = {};
};

}  // namespace moepack::engine
