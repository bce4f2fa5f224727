// tokenizer.bin / vocab.bin writer and validating reader.
#include "tokenizer_file.hpp"

#define XXH_INLINE_ALL   // header-only: no runtime library to ship
#include <xxhash.h>

#include <cstring>

#include "byte_io.hpp"
#include "error.hpp"
#include "mapped_file.hpp"

namespace moepack {
namespace {

constexpr uint32_t kMaxTokens = 1u << 24;  // far above any released vocabulary
constexpr int32_t kNoId = -1;

std::vector<std::byte> with_header(const char (&magic)[8], uint32_t version, std::vector<std::byte> payload) {
    ByteWriter w;
    w.raw(magic, 8);
    w.u32(version);
    w.u32(0);
    w.u64(payload.size());
    w.u64(XXH64(payload.data(), payload.size(), 0));
    w.raw(payload.data(), payload.size());
    return std::move(w.bytes());
}

std::span<const std::byte> checked_payload(std::span<const std::byte> bytes, const std::string& file,
                                           const char (&magic)[8], uint32_t supported, const char* what) {
    ByteReader r(bytes, file);
    if (bytes.size() < kTokenFileHeaderBytes)
        fail(file, ": ", bytes.size(), " bytes is too short for a ", what, " header (", kTokenFileHeaderBytes,
             " bytes)");
    if (std::memcmp(bytes.data(), magic, 8) != 0)
        fail(file, ": not a ", what, " file (magic is not '", std::string(magic, 8), "')");
    for (int i = 0; i < 8; ++i) r.u8("magic");
    const uint32_t version = r.u32("format version");
    if (version == 0 || version > supported)
        fail(file, ": ", what, " format version ", version, " is not supported (this reader knows 1 to ",
             supported, ")");
    if (r.u32("reserved field") != 0) fail(file, ": reserved header field is not zero");
    const uint64_t size = r.u64("payload size");
    const uint64_t hash = r.u64("payload checksum");
    if (size != r.remaining())
        fail(file, ": header says the payload is ", size, " bytes, the file holds ", r.remaining());
    auto payload = bytes.subspan(kTokenFileHeaderBytes);
    if (XXH64(payload.data(), payload.size(), 0) != hash)
        fail(file, ": payload checksum mismatch (file is corrupt)");
    return payload;
}

void write_decode_table(ByteWriter& w, const DecodeTable& t) {
    w.u8(static_cast<uint8_t>(t.decoder));
    w.u32(t.strip_leading_spaces);
    w.u32(static_cast<uint32_t>(t.tokens.size()));
    for (const auto& e : t.tokens) {
        w.u8(static_cast<uint8_t>(e.kind));
        w.str(e.bytes);
    }
}

DecodeTable read_decode_table(ByteReader& r) {
    DecodeTable t;
    const uint8_t decoder = r.u8("decoder kind");
    if (decoder != static_cast<uint8_t>(DecoderKind::byte_level) &&
        decoder != static_cast<uint8_t>(DecoderKind::byte_fallback))
        fail(r.file(), ": unknown decoder kind ", int(decoder));
    t.decoder = static_cast<DecoderKind>(decoder);
    t.strip_leading_spaces = r.u32("strip count");
    if (t.strip_leading_spaces > 16) fail(r.file(), ": strip count ", t.strip_leading_spaces, " is implausible");
    const uint32_t n = r.count("token count", 5);
    if (n > kMaxTokens) fail(r.file(), ": token count ", n, " exceeds ", kMaxTokens);
    t.tokens.resize(n);
    for (uint32_t id = 0; id < n; ++id) {
        auto& e = t.tokens[id];
        const uint8_t kind = r.u8("token kind");
        if (kind > static_cast<uint8_t>(TokenKind::added)) fail(r.file(), ": token ", id, ": unknown kind ", int(kind));
        e.kind = static_cast<TokenKind>(kind);
        e.bytes = r.str("token bytes");
        if (e.kind == TokenKind::byte && e.bytes.size() != 1)
            fail(r.file(), ": token ", id, ": byte token holds ", e.bytes.size(), " bytes, expected 1");
    }
    return t;
}

std::optional<uint32_t> read_optional_id(ByteReader& r, const char* item, uint32_t limit) {
    const int32_t v = r.i32(item);
    if (v == kNoId) return std::nullopt;
    if (v < 0 || static_cast<uint32_t>(v) >= limit) fail(r.file(), ": ", item, " ", v, " is out of range");
    return static_cast<uint32_t>(v);
}

uint32_t read_id(ByteReader& r, const char* item, uint32_t limit) {
    const uint32_t v = r.u32(item);
    if (v >= limit) fail(r.file(), ": ", item, " ", v, " is out of range (", limit, " ids)");
    return v;
}

void write_optional_id(ByteWriter& w, const std::optional<uint32_t>& id) {
    w.i32(id ? static_cast<int32_t>(*id) : kNoId);
}

void write_ids(ByteWriter& w, const std::vector<uint32_t>& ids) {
    w.u32(static_cast<uint32_t>(ids.size()));
    for (uint32_t id : ids) w.u32(id);
}

std::vector<uint32_t> read_ids(ByteReader& r, const char* item, uint32_t limit) {
    const uint32_t n = r.count(item, 4);
    std::vector<uint32_t> ids(n);
    for (auto& id : ids) id = read_id(r, item, limit);
    return ids;
}

}  // namespace

std::vector<std::byte> serialize_tokenizer_file(const TokenizerData& d) {
    ByteWriter w;
    write_decode_table(w, d.decode);
    w.u8(d.model_flags);
    write_optional_id(w, d.unk_id);
    w.u32(static_cast<uint32_t>(d.vocab.size()));
    for (const auto& v : d.vocab) {
        w.u32(v.id);
        w.u8(v.flags);
        w.str(v.bytes);
    }
    w.u32(static_cast<uint32_t>(d.merges.size()));
    for (const auto& m : d.merges) {
        w.u32(m.left);
        w.u32(m.right);
        w.u32(m.result);
    }
    w.u32(static_cast<uint32_t>(d.added.size()));
    for (const auto& a : d.added) {
        w.u32(a.id);
        w.u8(a.flags);
        w.str(a.content);
    }
    w.u32(static_cast<uint32_t>(d.normalizer.size()));
    for (const auto& s : d.normalizer) {
        w.u8(static_cast<uint8_t>(s.kind));
        w.str(s.pattern);
        w.str(s.content);
    }
    w.u32(static_cast<uint32_t>(d.pre_tokenizer.size()));
    for (const auto& s : d.pre_tokenizer) {
        w.u8(static_cast<uint8_t>(s.kind));
        w.u8(s.add_prefix_space ? 1 : 0);
        w.str(s.pattern);
    }
    write_ids(w, d.prefix_ids);
    write_ids(w, d.suffix_ids);
    write_optional_id(w, d.bos_id);
    write_optional_id(w, d.eos_id);
    write_optional_id(w, d.pad_id);
    w.u8(static_cast<uint8_t>(d.chat_format));
    w.str(d.chat_template);
    return with_header(kTokenizerMagic, kTokenizerFormatVersion, std::move(w.bytes()));
}

TokenizerData parse_tokenizer_payload(std::span<const std::byte> payload, const std::string& file) {
    ByteReader r(payload, file);
    TokenizerData d;
    d.decode = read_decode_table(r);
    const uint32_t limit = static_cast<uint32_t>(d.decode.tokens.size());
    d.model_flags = r.u8("model flags");
    if (d.model_flags & ~kModelFlagsKnown) fail(file, ": unknown model flags ", int(d.model_flags));
    d.unk_id = read_optional_id(r, "unk id", limit);

    const uint32_t nvocab = r.count("vocabulary size", 9);
    d.vocab.resize(nvocab);
    std::vector<bool> seen(limit, false);
    for (auto& v : d.vocab) {
        v.id = read_id(r, "vocabulary id", limit);
        if (seen[v.id]) fail(file, ": vocabulary id ", v.id, " appears twice");
        seen[v.id] = true;
        v.flags = r.u8("vocabulary flags");
        if (v.flags & ~kVocabLiteral) fail(file, ": vocabulary id ", v.id, ": unknown flags ", int(v.flags));
        v.bytes = r.str("vocabulary entry");
        if (v.bytes.empty()) fail(file, ": vocabulary id ", v.id, " is empty");
    }
    const uint32_t nmerges = r.count("merge count", 12);
    d.merges.resize(nmerges);
    for (auto& m : d.merges) {
        m.left = read_id(r, "merge left id", limit);
        m.right = read_id(r, "merge right id", limit);
        m.result = read_id(r, "merge result id", limit);
    }
    const uint32_t nadded = r.count("added token count", 9);
    d.added.resize(nadded);
    for (auto& a : d.added) {
        a.id = read_id(r, "added token id", limit);
        a.flags = r.u8("added token flags");
        if (a.flags & ~kAddedFlagsKnown) fail(file, ": added token ", a.id, ": unknown flags ", int(a.flags));
        a.content = r.str("added token content");
        if (a.content.empty()) fail(file, ": added token ", a.id, " is empty");
    }
    const uint32_t nnorm = r.count("normalizer step count", 9);
    d.normalizer.resize(nnorm);
    for (auto& s : d.normalizer) {
        const uint8_t kind = r.u8("normalizer kind");
        if (kind < 1 || kind > static_cast<uint8_t>(NormalizerKind::replace))
            fail(file, ": unknown normalizer kind ", int(kind));
        s.kind = static_cast<NormalizerKind>(kind);
        s.pattern = r.str("normalizer pattern");
        s.content = r.str("normalizer content");
        if (s.kind == NormalizerKind::replace && s.pattern.empty())
            fail(file, ": replace normalizer with an empty pattern");
    }
    const uint32_t npre = r.count("pre-tokenizer step count", 6);
    d.pre_tokenizer.resize(npre);
    for (auto& s : d.pre_tokenizer) {
        const uint8_t kind = r.u8("pre-tokenizer kind");
        if (kind < 1 || kind > static_cast<uint8_t>(PreTokenizerKind::byte_level))
            fail(file, ": unknown pre-tokenizer kind ", int(kind));
        s.kind = static_cast<PreTokenizerKind>(kind);
        const uint8_t prefix = r.u8("add_prefix_space");
        if (prefix > 1) fail(file, ": add_prefix_space is ", int(prefix), ", expected 0 or 1");
        s.add_prefix_space = prefix == 1;
        s.pattern = r.str("pre-tokenizer pattern");
        if (s.kind == PreTokenizerKind::split_isolated && s.pattern.empty())
            fail(file, ": split pre-tokenizer with an empty pattern");
    }
    d.prefix_ids = read_ids(r, "prefix id", limit);
    d.suffix_ids = read_ids(r, "suffix id", limit);
    d.bos_id = read_optional_id(r, "bos id", limit);
    d.eos_id = read_optional_id(r, "eos id", limit);
    d.pad_id = read_optional_id(r, "pad id", limit);
    const uint8_t chat = r.u8("chat format");
    if (chat > kChatFormatLast) fail(file, ": unknown chat format ", int(chat));
    d.chat_format = static_cast<ChatFormat>(chat);
    d.chat_template = r.str("chat template");
    if (r.remaining() != 0) fail(file, ": ", r.remaining(), " unexpected bytes after the chat template");
    return d;
}

TokenizerData parse_tokenizer_file(std::span<const std::byte> bytes, const std::string& file) {
    return parse_tokenizer_payload(
        checked_payload(bytes, file, kTokenizerMagic, kTokenizerFormatVersion, "tokenizer.bin"), file);
}

std::vector<std::byte> serialize_vocab_file(const DecodeTable& table) {
    ByteWriter w;
    write_decode_table(w, table);
    return with_header(kVocabMagic, kVocabFormatVersion, std::move(w.bytes()));
}

DecodeTable parse_vocab_file(std::span<const std::byte> bytes, const std::string& file) {
    ByteReader r(checked_payload(bytes, file, kVocabMagic, kVocabFormatVersion, "vocab.bin"), file);
    DecodeTable t = read_decode_table(r);
    if (r.remaining() != 0) fail(file, ": ", r.remaining(), " unexpected bytes after the token table");
    return t;
}

TokenizerData read_tokenizer_file(const std::string& path) {
    MappedFile f(path);
    return parse_tokenizer_file(f.bytes(), path);
}

}  // namespace moepack
