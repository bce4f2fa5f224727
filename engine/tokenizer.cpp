// Encoding pipeline of Tokenizer.
#include "tokenizer.hpp"

#include <deque>
#include <filesystem>

#include "detokenizer.hpp"
#include "error.hpp"
#include "tokenizer_file.hpp"
#include "utf8.hpp"

namespace moepack::engine {
namespace {

// Text fields must be UTF-8 before anything matches or normalises with them.
const TokenizerData& checked_text(const TokenizerData& d, const std::string& name) {
    auto check = [&](const std::string& s, const char* what) {
        if (first_invalid_utf8(s) != s.size()) fail(name, ": ", what, " is not valid UTF-8");
    };
    for (const auto& a : d.added) check(a.content, "an added token");
    for (const auto& n : d.normalizer) {
        check(n.pattern, "a normalizer pattern");
        check(n.content, "a normalizer replacement");
    }
    for (const auto& p : d.pre_tokenizer) check(p.pattern, "a pre-tokenizer pattern");
    return d;
}

std::vector<AddedTokenMatcher::Token> added_tokens(const TokenizerData& d, bool normalized, const Normalizer& n) {
    std::vector<AddedTokenMatcher::Token> out;
    for (const auto& a : d.added) {
        if (bool(a.flags & kAddedNormalized) != normalized) continue;
        // a normalised token is looked for in its normalised form, as the text is
        out.push_back({normalized ? n.apply(a.content) : a.content, a.id, bool(a.flags & kAddedLstrip),
                       bool(a.flags & kAddedRstrip)});
    }
    return out;
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& path) {
    std::string file = path;
    if (std::filesystem::is_directory(path)) file = (std::filesystem::path(path) / "tokenizer.bin").string();
    if (!std::filesystem::exists(file)) fail(file, ": no such file");
    return Tokenizer(read_tokenizer_file(file), file);
}

Tokenizer::Tokenizer(TokenizerData data, std::string name)
    : data_(std::move(data)),
      name_(std::move(name)),
      raw_tokens_(added_tokens(checked_text(data_, name_), false, Normalizer({}))),
      normalized_tokens_(added_tokens(data_, true, Normalizer(data_.normalizer))),
      normalizer_(data_.normalizer),
      model_(data_, name_) {
    for (const auto& s : data_.pre_tokenizer) {
        PreStep step{s.kind, std::nullopt, s.add_prefix_space};
        if (!s.pattern.empty()) {
            try {
                step.splitter.emplace(s.pattern);
            } catch (const Error& e) {
                fail(name_, ": ", e.what());
            }
        }
        pre_steps_.push_back(std::move(step));
    }
    for (const auto& a : data_.added)
        if (data_.decode.tokens[a.id].kind == TokenKind::unused)
            fail(name_, ": added token ", a.id, " has no entry in the token table");
}

const std::string& Tokenizer::added_token_text(uint32_t id) const {
    for (const auto& a : data_.added)
        if (a.id == id) return a.content;
    fail(name_, ": token ", id, " is not an added token");
}

std::vector<uint32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
    const size_t bad = first_invalid_utf8(text);
    if (bad != text.size()) fail("text to encode is not valid UTF-8 (byte ", bad, ")");
    std::vector<uint32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    if (add_special_tokens) ids.insert(ids.end(), data_.prefix_ids.begin(), data_.prefix_ids.end());
    std::vector<TextPiece> pieces;
    raw_tokens_.split(text, pieces);
    for (const TextPiece& piece : pieces) {
        if (piece.token) ids.push_back(*piece.token);
        else encode_section(piece.text, ids);
    }
    if (add_special_tokens) ids.insert(ids.end(), data_.suffix_ids.begin(), data_.suffix_ids.end());
    return ids;
}

void Tokenizer::encode_section(std::string_view text, std::vector<uint32_t>& out) const {
    if (normalizer_.empty() && normalized_tokens_.empty()) {
        encode_normalized(text, out);
        return;
    }
    const std::string normalized = normalizer_.apply(text);
    std::vector<TextPiece> pieces;
    normalized_tokens_.split(normalized, pieces);
    for (const TextPiece& piece : pieces) {
        if (piece.token) out.push_back(*piece.token);
        else encode_normalized(piece.text, out);
    }
}

void Tokenizer::encode_normalized(std::string_view text, std::vector<uint32_t>& out) const {
    // Pieces may be views into `prefixed` strings, which therefore live until the end.
    std::deque<std::string> prefixed;
    std::vector<std::string_view> pieces{text}, next;
    for (const PreStep& step : pre_steps_) {
        next.clear();
        for (std::string_view piece : pieces) {
            if (step.add_prefix_space && !piece.empty() && piece.front() != ' ') {
                std::string& with_space = prefixed.emplace_back(1, ' ');
                with_space.append(piece);
                piece = with_space;
            }
            if (step.splitter) step.splitter->split(piece, next);
            else if (!piece.empty()) next.push_back(piece);
        }
        pieces.swap(next);
    }
    for (std::string_view word : pieces) model_.encode_word(word, out);
}

std::string Tokenizer::decode(std::span<const uint32_t> ids, bool skip_special_tokens) const {
    return engine::decode(data_.decode, ids, skip_special_tokens);
}

}  // namespace moepack::engine
