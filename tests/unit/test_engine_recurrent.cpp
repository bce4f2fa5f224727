// Models with linear-attention layers (qwen3_next, qwen3_5_moe) carry a recurrent state
// instead of keys and values: a prompt fed in several forward passes or several calls gives
// the reference logits; truncating the context evaluates the kept tokens again; a state file
// of another recurrent size is refused (test_engine_runtime.cpp saves and loads one); the pack
// holds the projections in one layout whichever the checkpoint used, and refuses grouped
// projections that do not fit the config.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine.hpp"
#include "engine_test_support.hpp"
#include "kv_cache.hpp"
#include "pack_reader.hpp"

namespace moepack {
namespace {

using engine::Engine;
using engine::EngineOptions;

EngineOptions options(int64_t batch = 256) {
    EngineOptions o = test::small_engine_options();
    o.batch = batch;
    return o;
}

// Relative L2 error of rows [first, first + rows) of the reference against `got`.
double relative_l2(const std::vector<float>& got, const test::Reference& ref, int64_t first, int64_t rows) {
    double err = 0, norm = 0;
    for (int64_t i = 0; i < rows * ref.vocab; ++i) {
        const double r = ref.logits[static_cast<size_t>(first * ref.vocab + i)];
        const double d = static_cast<double>(got[static_cast<size_t>(i)]) - r;
        err += d * d;
        norm += r * r;
    }
    return std::sqrt(err / norm);
}

// A linear layer's state takes the place of its keys and values: the cache (and a GPU copy
// of it, which allocates bytes()) holds context-sized keys and values for the attention
// layers only.
TEST(EngineRecurrent, TheCacheHoldsKeysAndValuesForAttentionLayersOnly) {
    const std::vector<bool> recurrent = {true, true, true, false, true, true, true, false};
    engine::KvCache kv(8, 1000, 64, recurrent, 4321);
    EXPECT_EQ(kv.bytes(), (2 * 2 * 1000 * 64 + 6 * 4321) * sizeof(float));
    EXPECT_EQ(kv.bytes_used(10), (2 * 2 * 10 * 64 + 6 * 4321) * sizeof(float));
    EXPECT_EQ(kv.values(3), kv.keys(3) + 1000 * 64);
    EXPECT_EQ(kv.recurrent(4), kv.values(3) + 1000 * 64);
    engine::KvCache plain(3, 100, 8);
    EXPECT_EQ(plain.bytes(), 3 * 2 * 100 * 8 * sizeof(float));
}

TEST(EngineRecurrent, APromptInSeveralPassesAndCallsGivesTheReferenceLogits) {
    for (const char* name : {"qwen3_next", "qwen3_5_moe"}) {
        test::ScratchDir dir(std::string("recurrent_") + name);
        const auto ref = test::load_reference(name);
        const auto pack = test::convert_fixture(name, dir.path() / "p", 16);
        const auto seq = ref.sequence();
        auto batched = Engine::open(pack, options(5));   // forward passes of 5 tokens
        std::vector<float> logits;
        batched->eval_prompt(seq, logits);
        EXPECT_LE(relative_l2(logits, ref, 0, ref.positions), 1e-4) << name;

        auto calls = Engine::open(pack, options());   // three calls of 7, 7 and 6 tokens
        std::vector<float> all, part;
        for (size_t first = 0; first < seq.size(); first += 7) {
            const size_t n = std::min<size_t>(7, seq.size() - first);
            calls->eval_prompt(std::span<const int32_t>(seq).subspan(first, n), part);
            all.insert(all.end(), part.begin(), part.end());
        }
        EXPECT_LE(relative_l2(all, ref, 0, ref.positions), 1e-4) << name;
    }
}

TEST(EngineRecurrent, TruncatingEvaluatesTheKeptTokensAgain) {
    test::ScratchDir dir("recurrent_truncate");
    const auto ref = test::load_reference("qwen3_next");
    const auto pack = test::convert_fixture("qwen3_next", dir.path() / "p", 16);
    const auto seq = ref.sequence();
    auto e = Engine::open(pack, options());
    e->eval_prompt(std::vector<int32_t>(seq.begin(), seq.begin() + 15));
    e->truncate(9);
    EXPECT_EQ(e->position(), 9);
    std::vector<float> rest;
    e->eval_prompt(std::span<const int32_t>(seq).subspan(9), rest);
    EXPECT_LE(relative_l2(rest, ref, 9, ref.positions - 9), 1e-4);
    e->reset();   // a new context starts from a zero state
    std::vector<float> again;
    e->eval_prompt(seq, again);
    EXPECT_LE(relative_l2(again, ref, 0, ref.positions), 1e-4);
}

TEST(EngineRecurrent, AStateOfAnotherRecurrentSizeIsRefused) {
    test::ScratchDir dir("recurrent_state");
    const auto ref = test::load_reference("qwen3_next");
    const auto pack = test::convert_fixture("qwen3_next", dir.path() / "p", 16);
    auto e = Engine::open(pack, options());
    e->eval_prompt(ref.prompt);
    const auto state = (dir.path() / "s.state").string();
    e->state_save(state);
    std::vector<char> bytes(std::filesystem::file_size(state));
    std::ifstream(state, std::ios::binary).read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    bytes[12] = static_cast<char>(bytes[12] ^ 1);   // R, the recurrent values per layer
    const auto tampered = (dir.path() / "r.state").string();
    std::ofstream(tampered, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    const std::string err = test::error_of([&] { e->state_load(tampered); });
    EXPECT_NE(err.find("recurrent state"), std::string::npos) << err;
    EXPECT_EQ(e->tokens(), ref.prompt);   // refused on its header: the context is untouched
}

TEST(EngineRecurrent, GroupedProjectionsOfAnotherShapeAreRefusedByName) {
    // config.json says value heads of 20, the checkpoint's in_proj_qkvz was made for 24
    test::ScratchDir dir("recurrent_bad_shape");
    const auto src = dir.path() / "ck";
    std::filesystem::copy(test::fixture_model("qwen3_next"), src);
    std::ifstream in(src / "config.json");
    auto config = nlohmann::json::parse(in);
    in.close();
    config["linear_value_head_dim"] = 20;
    std::ofstream(src / "config.json") << config.dump(2);
    BuildRequest r;
    r.source = src.string();
    r.output = (dir.path() / "p").string();
    const std::string err = test::error_of([&] { build_pack(r); });
    EXPECT_NE(err.find("model.safetensors: tensor 'model.layers.0.linear_attn.in_proj_qkvz.weight': expected 224 rows "
                       "(2 key heads of 112), got 256"),
              std::string::npos)
        << err;
    EXPECT_FALSE(std::filesystem::exists(dir.path() / "p"));
}

TEST(EngineRecurrent, QwenNextProjectionsArePackedInQwen35Layout) {
    // The same weights in both layouts give the same stored tensors: the qwen3_next fixture's
    // grouped in_proj_qkvz / in_proj_ba are split into in_proj_qkv / z / b / a.
    test::ScratchDir dir("recurrent_layout");
    const auto pack = Pack::open(test::convert_fixture("qwen3_next", dir.path() / "p", 16));
    for (const char* part : {"in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a"})
        EXPECT_NE(pack->find_tensor(concat("layers.0.linear_attn.", part, ".weight")), nullptr) << part;
    EXPECT_EQ(pack->find_tensor("layers.0.linear_attn.in_proj_qkvz.weight"), nullptr);
    EXPECT_EQ(pack->find_tensor("layers.0.linear_attn.in_proj_ba.weight"), nullptr);
    const PackTensor* conv = pack->find_tensor("layers.0.linear_attn.conv1d.weight");
    ASSERT_NE(conv, nullptr);
    EXPECT_EQ(conv->shape, (std::vector<int64_t>{160, 4}));
    EXPECT_EQ(conv->encoding, DenseEncoding::f32);
}

}  // namespace
}  // namespace moepack
