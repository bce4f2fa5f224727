// Decoding rules of the two decoder kinds of formats/vocab.md.
#include "detokenizer.hpp"

#include "error.hpp"
#include "utf8.hpp"

namespace moepack::engine {

StreamDecoder::StreamDecoder(const DecodeTable& table, bool skip_special)
    : table_(table), skip_special_(skip_special), strip_left_(table.strip_leading_spaces) {}

std::string StreamDecoder::emit(std::string text) {
    size_t cut = 0;
    while (strip_left_ > 0 && cut < text.size()) {
        if (text[cut] != ' ') {
            strip_left_ = 0;
            break;
        }
        ++cut;
        --strip_left_;
    }
    text.erase(0, cut);
    return text;
}

std::string StreamDecoder::flush_byte_run() {
    std::string out;
    if (first_invalid_utf8(pending_) == pending_.size()) {
        out = std::move(pending_);
    } else {
        for (size_t i = 0; i < pending_.size(); ++i) out.append(kReplacementChar);
    }
    pending_.clear();
    return out;
}

std::string StreamDecoder::push(uint32_t id) {
    if (id >= table_.tokens.size() || table_.tokens[id].kind == TokenKind::unused)
        fail("token id ", id, " is not in the vocabulary (", table_.tokens.size(), " ids)");
    const DecodeEntry& token = table_.tokens[id];
    if (skip_special_ && token.kind == TokenKind::special) return "";
    std::string out;
    if (table_.decoder == DecoderKind::byte_level) {
        pending_ += token.bytes;
        const size_t keep = incomplete_utf8_tail(pending_);
        append_lossy_utf8(std::string_view(pending_).substr(0, pending_.size() - keep), out);
        pending_.erase(0, pending_.size() - keep);
    } else {
        if (token.kind == TokenKind::byte) {
            pending_ += token.bytes;
            return "";
        }
        out = flush_byte_run();
        append_lossy_utf8(token.bytes, out);
    }
    return emit(std::move(out));
}

std::string StreamDecoder::finish() {
    std::string out;
    if (table_.decoder == DecoderKind::byte_level) {
        append_lossy_utf8(pending_, out);
        pending_.clear();
    } else {
        out = flush_byte_run();
    }
    return emit(std::move(out));
}

std::string decode(const DecodeTable& table, std::span<const uint32_t> ids, bool skip_special) {
    StreamDecoder stream(table, skip_special);
    std::string text;
    for (uint32_t id : ids) text += stream.push(id);
    text += stream.finish();
    return text;
}

}  // namespace moepack::engine
