// BPE merges with a min-heap keyed by (rank, position).
#include "bpe.hpp"

#include <queue>

#include "error.hpp"
#include "utf8.hpp"

namespace moepack::engine {
namespace {

std::string byte_token_text(unsigned b) {
    const char* hex = "0123456789ABCDEF";
    return std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
}

struct Candidate {
    uint32_t rank;
    int32_t pos;
    uint32_t result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

BpeModel::BpeModel(const TokenizerData& d, const std::string& file)
    : byte_level_(d.model_flags & kModelByteLevel),
      byte_fallback_(d.model_flags & kModelByteFallback),
      fuse_unk_(d.model_flags & kModelFuseUnk),
      ignore_merges_(d.model_flags & kModelIgnoreMerges) {
    if (d.unk_id) unk_id_ = *d.unk_id;
    byte_ids_.fill(-1);
    texts_.reserve(d.vocab.size());
    std::vector<const std::string*> text_of(d.decode.tokens.size(), nullptr);
    for (const auto& v : d.vocab) {
        if (v.flags & kVocabLiteral) continue;  // BPE can never produce it
        texts_.push_back(v.bytes);
        text_of[v.id] = &texts_.back();
    }
    ids_.reserve(texts_.size());
    for (const auto& v : d.vocab)
        if (text_of[v.id]) ids_.emplace(*text_of[v.id], v.id);
    if (byte_level_) {
        for (unsigned b = 0; b < 256; ++b) {
            auto it = ids_.find(std::string_view(std::string(1, static_cast<char>(b))));
            if (it != ids_.end()) byte_ids_[b] = it->second;
        }
    } else if (byte_fallback_) {
        for (unsigned b = 0; b < 256; ++b) {
            auto it = ids_.find(byte_token_text(b));
            if (it != ids_.end()) byte_ids_[b] = it->second;
        }
    }
    merges_.reserve(d.merges.size());
    for (size_t rank = 0; rank < d.merges.size(); ++rank) {
        const Merge& m = d.merges[rank];
        const std::string *l = text_of[m.left], *r = text_of[m.right], *res = text_of[m.result];
        if (!l || !r || !res || res->size() != l->size() + r->size() || res->compare(0, l->size(), *l) != 0 ||
            res->compare(l->size(), std::string::npos, *r) != 0)
            fail(file, ": merge #", rank, " (", m.left, " + ", m.right, " -> ", m.result,
                 "): the result is not the concatenation of its parts");
        merges_[pair_key(m.left, m.right)] = {static_cast<uint32_t>(rank), m.result};  // the last duplicate wins
    }
}

void BpeModel::initial_symbols(std::string_view word, std::vector<Symbol>& symbols) const {
    auto add = [&](uint32_t id) {
        const auto n = static_cast<int32_t>(symbols.size());
        symbols.push_back({id, n - 1, n + 1, false});
    };
    if (byte_level_) {
        for (unsigned char b : word) {
            if (byte_ids_[b] >= 0) add(static_cast<uint32_t>(byte_ids_[b]));
            else if (unk_id_ >= 0) add(static_cast<uint32_t>(unk_id_));
        }
    } else {
        bool pending_unk = false;
        for (size_t pos = 0; pos < word.size();) {
            const size_t n = utf8_length_at(word, pos);
            const std::string_view ch = word.substr(pos, n);
            pos += n;
            if (auto it = ids_.find(ch); it != ids_.end()) {
                if (pending_unk) add(static_cast<uint32_t>(unk_id_));
                pending_unk = false;
                add(it->second);
                continue;
            }
            if (byte_fallback_) {
                bool all = true;
                for (unsigned char b : ch) all = all && byte_ids_[b] >= 0;
                if (all) {  // a pending unk stays pending across byte tokens, as upstream does
                    for (unsigned char b : ch) add(static_cast<uint32_t>(byte_ids_[b]));
                    continue;
                }
            }
            if (unk_id_ < 0) continue;
            if (pending_unk && !fuse_unk_) add(static_cast<uint32_t>(unk_id_));
            pending_unk = true;
        }
        if (pending_unk) add(static_cast<uint32_t>(unk_id_));
    }
    if (!symbols.empty()) symbols.back().next = -1;
}

void BpeModel::merge(std::vector<Symbol>& symbols) const {
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
    auto consider = [&](int32_t pos) {
        const int32_t next = symbols[pos].next;
        if (next < 0) return;
        auto it = merges_.find(pair_key(symbols[pos].id, symbols[next].id));
        if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.result});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
    while (!queue.empty()) {
        const Candidate top = queue.top();
        queue.pop();
        Symbol& left = symbols[top.pos];
        if (left.removed || left.next < 0) continue;
        Symbol& right = symbols[left.next];
        auto it = merges_.find(pair_key(left.id, right.id));
        if (it == merges_.end() || it->second.result != top.result) continue;  // stale entry
        left.id = top.result;
        right.removed = true;
        left.next = right.next;
        if (left.next >= 0) symbols[left.next].prev = top.pos;
        if (left.prev >= 0) consider(left.prev);
        consider(top.pos);
    }
}

void BpeModel::encode_word(std::string_view word, std::vector<uint32_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
        if (auto it = ids_.find(word); it != ids_.end()) {
            out.push_back(it->second);
            return;
        }
    }
    std::vector<Symbol> symbols;
    symbols.reserve(word.size());
    initial_symbols(word, symbols);
    merge(symbols);
    for (const Symbol& s : symbols)
        if (!s.removed) out.push_back(s.id);
}

}  // namespace moepack::engine
