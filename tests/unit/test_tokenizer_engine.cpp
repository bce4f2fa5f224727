// Engine pieces on their own: UTF-8 repair rules, streaming decode, BPE tie-breaking,
// regex splitting, and chat rendering edge cases.
#include <gtest/gtest.h>

#include "chat_format.hpp"
#include "detokenizer.hpp"
#include "regex_split.hpp"
#include "test_helpers.hpp"
#include "tokenizer.hpp"
#include "utf8.hpp"

using namespace moepack;
using namespace moepack::engine;
using namespace moepack::test;

namespace {

const std::string kFffd(kReplacementChar);

TEST(Utf8, LossyConversionReplacesEachMaximalInvalidSubpart) {
    auto lossy = [](std::string_view s) {
        std::string out;
        append_lossy_utf8(s, out);
        return out;
    };
    EXPECT_EQ(lossy("a\xE4\xB8"), "a" + kFffd);                      // truncated 3-byte character
    EXPECT_EQ(lossy("\xE4\xB8" "b"), kFffd + "b");                   // one U+FFFD for the subpart
    EXPECT_EQ(lossy("\xFF\xC0\x80"), kFffd + kFffd + kFffd);         // never-valid bytes one by one
    EXPECT_EQ(lossy("\xED\xA0\x80"), kFffd + kFffd + kFffd);         // surrogates are invalid
    EXPECT_EQ(lossy("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
    EXPECT_EQ(incomplete_utf8_tail("ab\xF0\x9F\x98"), 3u);
    EXPECT_EQ(incomplete_utf8_tail("ab\xF0\x9F\x98\x80"), 0u);
    EXPECT_EQ(incomplete_utf8_tail("ab\xFF"), 0u);
    EXPECT_EQ(first_invalid_utf8("ok\xC3"), 2u);
}

DecodeTable byte_level_table() {
    DecodeTable t;
    t.decoder = DecoderKind::byte_level;
    t.tokens = {{TokenKind::normal, "\xF0\x9F"}, {TokenKind::normal, "\x98\x80"}, {TokenKind::normal, " hi"},
                {TokenKind::special, "<|end|>"}, {TokenKind::normal, "\xFF"}};
    return t;
}

TEST(StreamDecoder, HoldsBackSplitCharactersAndRepairsBrokenOnes) {
    const DecodeTable t = byte_level_table();
    StreamDecoder s(t, true);
    EXPECT_EQ(s.push(2), " hi");
    EXPECT_EQ(s.push(0), "");  // first half of 😀
    EXPECT_EQ(s.push(1), "\xF0\x9F\x98\x80");
    EXPECT_EQ(s.push(3), "");  // special, skipped
    EXPECT_EQ(s.push(0), "");
    EXPECT_EQ(s.push(4), kFffd + kFffd);  // the held half and the 0xFF byte, each invalid
    EXPECT_EQ(s.push(0), "");
    EXPECT_EQ(s.finish(), kFffd);
    EXPECT_EQ(decode(t, std::vector<uint32_t>{0, 1, 3}, false), "\xF0\x9F\x98\x80<|end|>");
    EXPECT_EQ(error_of([&] { StreamDecoder(t, false).push(5); }), "token id 5 is not in the vocabulary (5 ids)");
}

TEST(StreamDecoder, ByteFallbackRunsAreJudgedWhole) {
    DecodeTable t;
    t.decoder = DecoderKind::byte_fallback;
    t.strip_leading_spaces = 1;
    t.tokens = {{TokenKind::byte, "\xE4"}, {TokenKind::byte, "\xB8"}, {TokenKind::byte, "\xAD"},
                {TokenKind::normal, " x"}};
    EXPECT_EQ(decode(t, std::vector<uint32_t>{3, 0, 1, 2, 3}, false), "x\xE4\xB8\xAD x");
    // an incomplete run becomes one U+FFFD per byte, unlike the byte-level rule
    EXPECT_EQ(decode(t, std::vector<uint32_t>{0, 1, 3}, false), kFffd + kFffd + " x");
    EXPECT_EQ(decode(t, std::vector<uint32_t>{3, 3}, false), "x x");  // one leading space stripped
}

TEST(RegexSplitter, IsolatesMatchesAndGapsWithUnicodeClasses) {
    RegexSplitter split(R"(\p{N}{1,3}|\p{L}+)");
    std::vector<std::string_view> out;
    split.split("ab12345 Ωμ!", out);
    EXPECT_EQ(out, (std::vector<std::string_view>{"ab", "123", "45", " ", "Ωμ", "!"}));
    EXPECT_NE(error_of([] { RegexSplitter("(unclosed"); }).find("pre-tokenizer pattern '(unclosed'"),
              std::string::npos);
}

// Equal-rank candidates merge leftmost first: "aaa" with merge "a a" is "aa" + "a".
TEST(Bpe, TiesGoToTheLeftmostPair) {
    TokenizerData d;
    d.model_flags = kModelByteLevel;
    d.vocab = {{0, 0, "a"}, {1, 0, "aa"}};
    d.merges = {{0, 0, 1}};
    d.pre_tokenizer = {{PreTokenizerKind::byte_level, "", false}};
    d.decode.tokens = {{TokenKind::normal, "a"}, {TokenKind::normal, "aa"}};
    const Tokenizer tok(d, "synthetic");
    EXPECT_EQ(tok.encode("aaa"), (std::vector<uint32_t>{1, 0}));
    EXPECT_EQ(tok.encode("aaaa"), (std::vector<uint32_t>{1, 1}));
    EXPECT_NE(error_of([] { (void)Tokenizer(TokenizerData{}, "x").encode("\xC3"); }).find("not valid UTF-8"),
              std::string::npos);

    d.merges = {{0, 0, 0}};  // a merge whose result is not the concatenation
    EXPECT_EQ(error_of([&] { Tokenizer(d, "bad.bin"); }),
              "bad.bin: merge #0 (0 + 0 -> 0): the result is not the concatenation of its parts");
}

TEST(ChatFormat, RefusalsAreExplicit) {
    const ChatSpecialTokens tokens{"<s>", "</s>"};
    const std::vector<ChatMessage> odd_role{{"narrator", "hi", std::nullopt, {}}};
    EXPECT_EQ(error_of([&] { render_chat(ChatFormat::chatml_qwen3, tokens, odd_role, {}); }),
              "chat: message 0 has role 'narrator', expected system, user, assistant or tool");
    const std::vector<ChatMessage> user{{"user", "hi", std::nullopt, {}}};
    EXPECT_EQ(error_of([&] { render_chat(ChatFormat::none, tokens, user, {}); }),
              "chat: the tokenizer has no chat template");
    EXPECT_EQ(error_of([&] { render_chat(ChatFormat::gpt_oss_harmony, tokens, user, {}); }),
              "chat format gpt_oss_harmony: the system header needs the current date");
    EXPECT_EQ(render_chat(ChatFormat::mistral_inst, tokens, user, {}), "<s> [INST] hi [/INST]");
}

}  // namespace
