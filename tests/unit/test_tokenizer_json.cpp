// tokenizer.json reading: small hand-written tokenizers through export and the engine, and
// clear refusals of what is not supported or not consistent.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "chat_format.hpp"
#include "test_helpers.hpp"
#include "tokenizer.hpp"
#include "tokenizer_export.hpp"
#include "tokenizer_file.hpp"
#include "tokenizer_json.hpp"

using namespace moepack;
using namespace moepack::test;
using nlohmann::json;

namespace {

json fixture_tokenizer(const std::string& name) {
    std::ifstream in(test::fixtures_dir() / "tokenizers" / name / "tokenizer.json");
    return json::parse(in);
}

// SentencePiece-style BPE: "▁" + "a", "b", byte fallback for \n only, <unk> for the rest.
json sentencepiece_tokenizer() { return fixture_tokenizer("sentencepiece_bpe"); }

class TokenizerJson : public ::testing::Test {
protected:
    ScratchDir dir{"tokenizer_json"};
    void write(const json& tokenizer, const std::string& name = "tokenizer.json") {
        std::ofstream(dir.path() / name) << tokenizer.dump();
    }
    engine::Tokenizer exported() {
        const auto out = (dir.path() / "tokenizer.bin").string();
        export_tokenizer(dir.path().string(), out);
        return engine::Tokenizer::load(dir.path().string());
    }
};

TEST_F(TokenizerJson, SentencePieceBpeWithByteFallbackAndFusedUnk) {
    write(sentencepiece_tokenizer());
    const engine::Tokenizer tok = exported();
    using Ids = std::vector<uint32_t>;
    EXPECT_EQ(tok.encode("ab a"), (Ids{1, 8, 6}));
    EXPECT_EQ(tok.encode("a\nb"), (Ids{1, 6, 2, 5}));   // \n through byte fallback
    EXPECT_EQ(tok.encode("axyb"), (Ids{1, 6, 0, 5}));   // x and y fused into one <unk>
    EXPECT_EQ(tok.encode("a  <sep>  b", false), (Ids{6, 7, 3, 5}));  // <sep> takes the spaces beside it
    EXPECT_EQ(tok.encode(""), (Ids{1}));
    EXPECT_EQ(tok.decode(Ids{1, 8, 6}), "<s> ab a");
    EXPECT_EQ(tok.decode(Ids{1, 8, 6}, true), "ab a");
    EXPECT_EQ(tok.decode(Ids{2, 2, 6}, true), "\n\n a");
}

TEST_F(TokenizerJson, ByteLevelBpeWithNfcAndRegexSplit) {
    write(fixture_tokenizer("byte_level_bpe"));
    const engine::Tokenizer tok = exported();
    using Ids = std::vector<uint32_t>;
    EXPECT_EQ(tok.encode("hi hi!"), (Ids{4, 5, 6}));
    EXPECT_EQ(tok.encode("e\xCC\x81"), (Ids{12}));  // e + combining acute, NFC to é = bytes Ã©
    EXPECT_EQ(tok.encode("12<|end|>\n"), (Ids{7, 8, 9, 3}));
    EXPECT_EQ(tok.decode(Ids{12, 5}), "\xC3\xA9 hi");
    EXPECT_EQ(tok.decode(Ids{10}), "\xEF\xBF\xBD");  // half of é alone
}

TEST_F(TokenizerJson, UnsupportedModelTypeIsNamed) {
    json t = sentencepiece_tokenizer();
    t["model"]["type"] = "Unigram";
    write(t);
    const std::string path = (dir.path() / "tokenizer.json").string();
    EXPECT_EQ(error_of([&] { read_hf_tokenizer(dir.path().string()); }),
              path + ": model type 'Unigram' is not supported (only BPE)");
    t = sentencepiece_tokenizer();
    t["pre_tokenizer"] = json::parse(R"({"type": "Metaspace", "replacement": "\u2581"})");
    write(t);
    EXPECT_EQ(error_of([&] { read_hf_tokenizer(dir.path().string()); }),
              path + ": pre_tokenizer of type 'Metaspace' is not supported");
}

TEST_F(TokenizerJson, InconsistentFilesAreNamed) {
    const std::string path = (dir.path() / "tokenizer.json").string();
    EXPECT_EQ(error_of([&] { read_hf_tokenizer(dir.path().string()); }),
              path + ": no such file (the checkpoint has no tokenizer.json)");
    json t = sentencepiece_tokenizer();
    t["model"]["merges"].push_back("b c");
    write(t);
    EXPECT_EQ(error_of([&] { read_hf_tokenizer(dir.path().string()); }),
              path + ": merge #2 'b c': 'c' is not in the vocab");
    write(sentencepiece_tokenizer());
    write(json::parse(R"({"bos_token": "<bos>"})"), "tokenizer_config.json");
    EXPECT_EQ(error_of([&] { read_hf_tokenizer(dir.path().string()); }),
              (dir.path() / "tokenizer_config.json").string() + ": bos_token '<bos>' is not a token of the tokenizer");
    std::ofstream(dir.path() / "tokenizer.json") << "{\"model\": ";
    EXPECT_EQ(error_of([&] { read_hf_tokenizer(dir.path().string()); }), path + ": not valid UTF-8 JSON");
}

TEST_F(TokenizerJson, ChatTemplateFromConfigOrJinjaFileAndUnknownFamiliesRefused) {
    write(sentencepiece_tokenizer());
    write(json{{"bos_token", "<s>"}, {"chat_template", "{{ bos_token }}{% for m in messages %}[INST] {{ m.content }} "
                                                         "[/INST]{% endfor %}"}},
          "tokenizer_config.json");
    EXPECT_EQ(read_hf_tokenizer(dir.path().string()).chat_format, ChatFormat::mistral_inst);

    // Qwen2.5's ChatML adds a default system prompt the formatter does not know: refused.
    write(json{{"bos_token", "<s>"}}, "tokenizer_config.json");
    std::ofstream(dir.path() / "chat_template.jinja")
        << "{%- if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."
           "<|im_end|>\n{%- endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
           "{% endfor %}";
    const engine::Tokenizer tok = exported();
    EXPECT_EQ(tok.data().chat_format, ChatFormat::unknown);
    const std::vector<engine::ChatMessage> messages{{"user", "hi", std::nullopt, {}}};
    EXPECT_NE(error_of([&] { engine::render_chat(tok, messages, {}); }).find("not one of the supported families"),
              std::string::npos);
}

}  // namespace
