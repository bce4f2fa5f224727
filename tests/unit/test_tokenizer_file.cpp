// tokenizer.bin / vocab.bin: round trips, and rejection of truncated, corrupt, foreign and
// future-version files with messages naming the file and the item.
#include <gtest/gtest.h>

#include <cstring>

#include "byte_io.hpp"
#include "byte_level_alphabet.hpp"
#include "test_helpers.hpp"
#include "tokenizer_file.hpp"

using namespace moepack;
using namespace moepack::test;

namespace {

TokenizerData sample() {
    TokenizerData d;
    d.model_flags = kModelByteFallback | kModelFuseUnk;
    d.unk_id = 0;
    d.decode.decoder = DecoderKind::byte_fallback;
    d.decode.strip_leading_spaces = 1;
    d.decode.tokens = {{TokenKind::special, "<unk>"}, {TokenKind::special, "<s>"}, {TokenKind::byte, "\n"},
                       {TokenKind::normal, " a"}, {TokenKind::normal, "b"}, {TokenKind::normal, " ab"}};
    d.vocab = {{0, 0, "<unk>"}, {1, 0, "<s>"}, {2, 0, "<0x0A>"}, {3, 0, "\xE2\x96\x81" "a"}, {4, 0, "b"},
               {5, 0, "\xE2\x96\x81" "ab"}};
    d.merges = {{3, 4, 5}};
    d.added = {{0, kAddedSpecial, "<unk>"}, {1, kAddedSpecial | kAddedLstrip, "<s>"}};
    d.normalizer = {{NormalizerKind::prepend, "\xE2\x96\x81", ""}, {NormalizerKind::replace, " ", "\xE2\x96\x81"}};
    d.pre_tokenizer = {{PreTokenizerKind::split_isolated, "\\p{N}", false}};
    d.prefix_ids = {1};
    d.bos_id = 1;
    d.chat_format = ChatFormat::mistral_inst;
    d.chat_template = "{{ bos_token }}[INST]";
    return d;
}

std::span<const std::byte> as_span(const std::vector<std::byte>& v) { return {v.data(), v.size()}; }

TEST(TokenizerFile, RoundTripKeepsEveryField) {
    const TokenizerData d = sample();
    const auto bytes = serialize_tokenizer_file(d);
    const TokenizerData r = parse_tokenizer_file(as_span(bytes), "t.bin");
    EXPECT_EQ(r.model_flags, d.model_flags);
    EXPECT_EQ(r.unk_id, d.unk_id);
    ASSERT_EQ(r.vocab.size(), d.vocab.size());
    EXPECT_EQ(r.vocab[3].bytes, d.vocab[3].bytes);
    ASSERT_EQ(r.merges.size(), 1u);
    EXPECT_EQ(r.merges[0].result, 5u);
    ASSERT_EQ(r.added.size(), 2u);
    EXPECT_EQ(r.added[1].flags, kAddedSpecial | kAddedLstrip);
    ASSERT_EQ(r.normalizer.size(), 2u);
    EXPECT_EQ(r.normalizer[1].content, "\xE2\x96\x81");
    EXPECT_EQ(r.pre_tokenizer[0].pattern, "\\p{N}");
    EXPECT_EQ(r.prefix_ids, std::vector<uint32_t>{1});
    EXPECT_EQ(r.bos_id, d.bos_id);
    EXPECT_FALSE(r.eos_id.has_value());
    EXPECT_EQ(r.decode.strip_leading_spaces, 1u);
    EXPECT_EQ(r.decode.tokens[2].kind, TokenKind::byte);
    EXPECT_EQ(r.chat_format, ChatFormat::mistral_inst);
    EXPECT_EQ(r.chat_template, d.chat_template);
    EXPECT_EQ(serialize_tokenizer_file(r), bytes);
}

TEST(TokenizerFile, EveryTruncationIsRejected) {
    const auto bytes = serialize_tokenizer_file(sample());
    for (size_t n = 0; n < bytes.size(); ++n) {
        const std::string msg = error_of([&] { parse_tokenizer_file(as_span(bytes).first(n), "t.bin"); });
        ASSERT_NE(msg, "(no error)") << n;
        ASSERT_EQ(msg.rfind("t.bin: ", 0), 0u) << msg;
    }
}

TEST(TokenizerFile, CorruptPayloadFailsTheChecksum) {
    auto bytes = serialize_tokenizer_file(sample());
    bytes[kTokenFileHeaderBytes + 7] ^= std::byte{0x10};
    EXPECT_EQ(error_of([&] { parse_tokenizer_file(as_span(bytes), "t.bin"); }),
              "t.bin: payload checksum mismatch (file is corrupt)");
}

TEST(TokenizerFile, FutureVersionAndForeignFilesAreNamed) {
    auto bytes = serialize_tokenizer_file(sample());
    bytes[8] = std::byte{2};
    EXPECT_EQ(error_of([&] { parse_tokenizer_file(as_span(bytes), "t.bin"); }),
              "t.bin: tokenizer.bin format version 2 is not supported (this reader knows 1 to 1)");
    const auto vocab = serialize_vocab_file(sample().decode);
    EXPECT_EQ(error_of([&] { parse_tokenizer_file(as_span(vocab), "v.bin"); }),
              "v.bin: not a tokenizer.bin file (magic is not 'MOEPKTOK')");
}

TEST(TokenizerFile, ImplausibleCountsAndIdsAreRejectedWithoutAllocating) {
    ByteWriter w;
    w.u8(1);           // decoder
    w.u32(0);          // strip
    w.u32(0xFFFFFFF0);  // token count far beyond the bytes
    EXPECT_EQ(error_of([&] { parse_tokenizer_payload(as_span(w.bytes()), "p"); }),
              "p: token count is 4294967280 but only 0 bytes remain");

    // a merge that points past the vocabulary
    TokenizerData d = sample();
    d.merges[0].result = 99;
    const auto bytes = serialize_tokenizer_file(d);
    EXPECT_EQ(error_of([&] { parse_tokenizer_file(as_span(bytes), "t.bin"); }),
              "t.bin: merge result id 99 is out of range (6 ids)");
}

TEST(VocabFile, RoundTripAndTruncation) {
    const DecodeTable t = sample().decode;
    const auto bytes = serialize_vocab_file(t);
    const DecodeTable r = parse_vocab_file(as_span(bytes), "v.bin");
    ASSERT_EQ(r.tokens.size(), t.tokens.size());
    for (size_t i = 0; i < t.tokens.size(); ++i) {
        EXPECT_EQ(r.tokens[i].kind, t.tokens[i].kind);
        EXPECT_EQ(r.tokens[i].bytes, t.tokens[i].bytes);
    }
    for (size_t n = 0; n < bytes.size(); ++n)
        ASSERT_NE(error_of([&] { parse_vocab_file(as_span(bytes).first(n), "v.bin"); }), "(no error)") << n;
    auto bad = bytes;
    bad[kTokenFileHeaderBytes] = std::byte{7};  // decoder kind
    EXPECT_NE(error_of([&] { parse_vocab_file(as_span(bad), "v.bin"); }).find("checksum"), std::string::npos);
}

TEST(ByteLevelAlphabet, SymbolsMapBackToBytes) {
    // printable Latin-1 stands for itself; the 68 other bytes are U+0100.. in byte order
    EXPECT_EQ(byte_level_to_bytes("hi!\xC2\xA1\xC3\xBF"), "hi!\xA1\xFF");
    EXPECT_EQ(byte_level_to_bytes("\xC4\xA0\xC4\x8A"), " \n");                        // Ġ Ċ
    EXPECT_EQ(byte_level_to_bytes("\xC4\x80\xC4\xA1\xC5\x82\xC5\x83"), std::string("\x00\x7F\xA0\xAD", 4));  // Ā ġ ł Ń
    EXPECT_EQ(byte_level_to_bytes("\xC5\x84"), std::nullopt);    // ń, past the alphabet
    EXPECT_EQ(byte_level_to_bytes("\xE2\x96\x81"), std::nullopt);  // ▁
    EXPECT_EQ(byte_level_to_bytes(" "), std::nullopt);             // the space byte is Ġ, not itself
}

}  // namespace
