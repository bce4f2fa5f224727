// The engine beyond parity: a cache that holds only a few experts gives the same logits as
// an unbounded one (for every policy, with and without O_DIRECT and verification);
// state_save -> state_load -> continue gives identical logits; bad inputs (token ids,
// context overflow, damaged or missing expert files, a future pack version, foreign or
// damaged state files) are refused with messages that name what is wrong.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine.hpp"
#include "engine_test_support.hpp"
#include "hashing.hpp"
#include "pack_reader.hpp"

namespace moepack {
namespace {

namespace fs = std::filesystem;
using engine::CachePolicyKind;
using engine::Engine;
using engine::EngineOptions;

EngineOptions options(int64_t cache_bytes = -1) {
    EngineOptions o;
    o.threads = 2;
    o.context = 64;
    o.io_threads = 3;
    o.expert_cache_bytes = cache_bytes;
    return o;
}

std::vector<float> all_logits(Engine& e, const std::vector<int32_t>& ids) {
    std::vector<float> out;
    e.eval_prompt(ids, out);
    return out;
}

std::vector<float> decoded_logits(Engine& e, const std::vector<int32_t>& prompt, int steps) {
    std::vector<float> out;
    auto l = e.eval_prompt(prompt);
    for (int i = 0; i < steps; ++i) {
        const auto next = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
        l = e.eval_token(next);
        out.insert(out.end(), l.begin(), l.end());
    }
    return out;
}

void flip_byte(const fs::path& file, uint64_t offset) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5a);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(&c, 1);
}

TEST(EngineCache, ASmallCacheGivesTheSameLogitsAsAnUnboundedOne) {
    test::ScratchDir dir("engine_cache");
    const auto ref = test::load_reference("qwen3_moe_wide");   // 16 experts, top-4
    const auto pack = test::convert_fixture("qwen3_moe_wide", dir.path() / "p", 4);
    auto unbounded = Engine::open(pack, options());
    const auto want = all_logits(*unbounded, ref.sequence());
    unbounded->reset();
    const auto want_decode = decoded_logits(*unbounded, ref.prompt, 6);
    EXPECT_EQ(unbounded->stats().cache_slots, 2 * 16);   // every expert of both MoE layers fits

    const uint64_t stride = Pack::open(pack)->expert_layout().stride;
    for (auto policy : {CachePolicyKind::lru, CachePolicyKind::lfu, CachePolicyKind::lru2}) {
        for (bool direct : {false, true}) {
            auto o = options(static_cast<int64_t>(5 * stride));   // 5 of 32 experts
            o.cache_policy = policy;
            o.direct_io = direct;
            o.verify_experts = true;
            std::unique_ptr<Engine> small;
            try {
                small = Engine::open(pack, o);
            } catch (const Error& e) {   // tmpfs has no O_DIRECT
                ASSERT_TRUE(direct) << e.what();
                continue;
            }
            EXPECT_EQ(small->stats().cache_slots, 5);
            EXPECT_EQ(all_logits(*small, ref.sequence()), want) << to_string(policy) << " direct " << direct;
            small->reset();
            EXPECT_EQ(decoded_logits(*small, ref.prompt, 6), want_decode) << to_string(policy);
            const auto s = small->stats();
            // experts were evicted and read again, but each was checked only on its first load
            EXPECT_GT(s.experts.verified, 20u);
            EXPECT_LE(s.experts.verified, 32u);
            EXPECT_GT(s.experts.misses, 2 * s.experts.verified);
            EXPECT_GE(s.experts.bytes_read, s.experts.misses * Pack::open(pack)->expert_layout().bytes);
        }
    }
}

TEST(EngineCache, TheCacheHoldsAtLeastTheExpertsOfOneToken) {
    test::ScratchDir dir("engine_cache_min");
    const auto pack = test::convert_fixture("qwen3_moe_wide", dir.path() / "p", 4);
    auto e = Engine::open(pack, options(0));
    EXPECT_EQ(e->stats().cache_slots, 4);   // top-4
    const auto ref = test::load_reference("qwen3_moe_wide");
    auto full = Engine::open(pack, options());
    EXPECT_EQ(all_logits(*e, ref.sequence()), all_logits(*full, ref.sequence()));
}

// Attention layers' keys and values (mixtral_wide), and linear-attention layers' recurrent
// states as well (qwen3_next).
TEST(EngineState, SaveLoadContinueGivesIdenticalLogits) {
    for (const char* name : {"mixtral_wide", "qwen3_next"}) {
        test::ScratchDir dir(std::string("engine_state_") + name);
        const auto ref = test::load_reference(name);
        const auto pack = test::convert_fixture(name, dir.path() / "p", 16);
        auto a = Engine::open(pack, options());
        a->eval_prompt(ref.prompt);
        const auto state = (dir.path() / "s.state").string();
        a->state_save(state);
        const auto before = std::vector<float>(a->last_logits().begin(), a->last_logits().end());
        const auto continued = test::logits_token_by_token(*a, ref.greedy);
        auto b = Engine::open(pack, options());
        b->eval_prompt(ref.greedy);   // another context first: loading replaces it whole
        b->state_load(state);
        EXPECT_EQ(b->position(), static_cast<int64_t>(ref.prompt.size())) << name;
        EXPECT_EQ(b->tokens(), ref.prompt) << name;
        EXPECT_EQ(std::vector<float>(b->last_logits().begin(), b->last_logits().end()), before) << name;
        EXPECT_EQ(test::logits_token_by_token(*b, ref.greedy), continued) << name;
        if (std::string(name) != "mixtral_wide") continue;

        // a version 1 file (no recurrent states; bytes 12..15 zero) reads as version 2
        std::vector<std::byte> bytes(fs::file_size(state));
        std::ifstream(state, std::ios::binary)
            .read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        bytes[8] = std::byte{1};
        const uint64_t digest = hash_bytes(std::span(bytes).first(bytes.size() - 8));
        std::memcpy(bytes.data() + bytes.size() - 8, &digest, 8);
        const auto v1 = (dir.path() / "v1.state").string();
        std::ofstream(v1, std::ios::binary)
            .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        auto c = Engine::open(pack, options());
        c->state_load(v1);
        EXPECT_EQ(test::logits_token_by_token(*c, ref.greedy), continued);
    }
}

TEST(EngineState, ForeignDamagedAndOversizedStatesAreRefused) {
    test::ScratchDir dir("engine_state_bad");
    const auto ref = test::load_reference("mixtral_wide");
    const auto pack = test::convert_fixture("mixtral_wide", dir.path() / "p", 16);
    const auto other = test::convert_fixture("mixtral", dir.path() / "q", 16);
    auto a = Engine::open(pack, options());
    a->eval_prompt(ref.prompt);
    const fs::path state = dir.path() / "s.state";
    a->state_save(state.string());
    EXPECT_FALSE(fs::exists(dir.path() / "s.state.tmp"));

    auto foreign = Engine::open(other, options());
    EXPECT_NE(test::error_of([&] { foreign->state_load(state.string()); }).find("saved with another pack"),
              std::string::npos);
    auto small_ctx = options();
    small_ctx.context = 8;
    auto tiny = Engine::open(pack, small_ctx);
    EXPECT_NE(test::error_of([&] { tiny->state_load(state.string()); }).find("more than the context size of 8"),
              std::string::npos);

    const fs::path damaged = dir.path() / "d.state";
    fs::copy_file(state, damaged);
    flip_byte(damaged, fs::file_size(damaged) / 2);
    auto b = Engine::open(pack, options());
    b->eval_prompt(ref.prompt);
    EXPECT_NE(test::error_of([&] { b->state_load(damaged.string()); }).find("checksum mismatch"), std::string::npos);
    EXPECT_EQ(b->position(), 0);   // a failed load leaves an empty context

    const fs::path truncated = dir.path() / "t.state";
    fs::copy_file(state, truncated);
    fs::resize_file(truncated, fs::file_size(truncated) - 9);
    EXPECT_NE(test::error_of([&] { b->state_load(truncated.string()); }).find("size: expected"), std::string::npos);

    const fs::path not_state = dir.path() / "m.state";
    fs::copy_file(state, not_state);
    flip_byte(not_state, 0);
    EXPECT_NE(test::error_of([&] { b->state_load(not_state.string()); }).find("m.state: not a moepack state file (bad magic)"),
              std::string::npos);

    const fs::path future = dir.path() / "f.state";
    fs::copy_file(state, future);
    flip_byte(future, 8);   // version 1 -> 0x5b
    EXPECT_NE(test::error_of([&] { b->state_load(future.string()); }).find("newer than this engine"), std::string::npos);
    EXPECT_NE(test::error_of([&] { b->state_load((dir.path() / "none").string()); }).find("cannot open"),
              std::string::npos);
}

TEST(EngineInput, OutOfRangeTokensAndContextOverflowAreRefused) {
    test::ScratchDir dir("engine_input");
    const auto pack = test::convert_fixture("olmoe", dir.path() / "p", 4);
    auto o = options();
    o.context = 16;
    auto e = Engine::open(pack, o);
    EXPECT_NE(test::error_of([&] { e->eval_token(512); }).find("id 512 out of range (vocabulary of 512)"),
              std::string::npos);
    EXPECT_NE(test::error_of([&] { e->eval_token(-1); }).find("out of range"), std::string::npos);
    EXPECT_EQ(e->position(), 0);
    const std::vector<int32_t> long_prompt(17, 5);
    EXPECT_NE(test::error_of([&] { e->eval_prompt(long_prompt); }).find("exceed the context size of 16"),
              std::string::npos);
    EXPECT_EQ(e->position(), 0);
    e->eval_prompt(std::vector<int32_t>(10, 3));
    EXPECT_NE(test::error_of([&] { e->eval_prompt(std::vector<int32_t>(7, 3)); }).find("the context holds 10 tokens"),
              std::string::npos);
    EXPECT_EQ(e->position(), 10);
    e->truncate(4);
    EXPECT_EQ(e->position(), 4);
    EXPECT_NO_THROW(e->eval_prompt(std::vector<int32_t>(12, 3)));
}

TEST(EngineInput, TheCudaBackendIsRefusedWhereItIsNotBuiltIn) {
    // this test program does not register the CUDA backend, as a build without nvcc
    test::ScratchDir dir("engine_no_cuda");
    auto o = options();
    o.backend = engine::Backend::cuda;
    const auto pack = test::convert_fixture("olmoe", dir.path() / "p", 4);
    const std::string err = test::error_of([&] { Engine::open(pack, o); });
    EXPECT_NE(err.find("this build has no CUDA backend"), std::string::npos) << err;
}

TEST(EngineInput, GpuMissHandlingIsParsedByName) {
    EXPECT_EQ(engine::parse_miss_handling("auto"), engine::MissHandling::automatic);
    EXPECT_EQ(engine::parse_miss_handling("copy"), engine::MissHandling::copy);
    EXPECT_EQ(engine::parse_miss_handling("cpu"), engine::MissHandling::cpu);
    EXPECT_NE(test::error_of([] { engine::parse_miss_handling("gpu"); }).find("expected auto, copy or cpu"), std::string::npos);
}

TEST(EngineInput, DamagedMissingAndFuturePacksAreRefused) {
    test::ScratchDir dir("engine_pack_bad");
    const auto pack = test::convert_fixture("olmoe", dir.path() / "p", 4);
    const auto ref = test::load_reference("olmoe");
    {   // a flipped byte in an expert: caught by --verify-experts, naming layer and expert,
        // whether the reads go through the page cache or run in the background (O_DIRECT)
        const fs::path copy = dir.path() / "damaged";
        fs::copy(pack, copy, fs::copy_options::recursive);
        const auto p = Pack::open(copy.string());
        flip_byte(copy / p->expert_layers()[1].file, p->expert_layers()[1].experts[5].offset + 100);
        for (const bool direct : {false, true}) {
            auto o = options();
            o.verify_experts = true;
            o.direct_io = direct;
            auto e = Engine::open(copy.string(), o);
            const std::string err = test::error_of([&] {
                for (int32_t t : ref.sequence()) e->eval_token(t);
            });
            EXPECT_NE(err.find("layer-001.bin: layer 1 expert 5: checksum mismatch"), std::string::npos)
                << (direct ? "O_DIRECT: " : "") << err;
        }
    }
    {   // a missing expert file
        const fs::path copy = dir.path() / "missing";
        fs::copy(pack, copy, fs::copy_options::recursive);
        fs::remove(copy / "experts" / "layer-000.bin");
        const std::string err = test::error_of([&] { Engine::open(copy.string(), options()); });
        EXPECT_NE(err.find("layer-000.bin"), std::string::npos) << err;
    }
    {   // a truncated expert file
        const fs::path copy = dir.path() / "short";
        fs::copy(pack, copy, fs::copy_options::recursive);
        fs::resize_file(copy / "experts" / "layer-001.bin", 8192);
        const std::string err = test::error_of([&] { Engine::open(copy.string(), options()); });
        EXPECT_NE(err.find("layer-001.bin: size: expected"), std::string::npos) << err;
    }
    {   // a pack of a future format version
        const fs::path copy = dir.path() / "future";
        fs::copy(pack, copy, fs::copy_options::recursive);
        std::ifstream in(copy / "manifest.json");
        auto m = nlohmann::json::parse(in);
        in.close();
        m["format_version"] = 2;
        std::ofstream(copy / "manifest.json") << m.dump(2);
        const std::string err = test::error_of([&] { Engine::open(copy.string(), options()); });
        EXPECT_NE(err.find("version 2"), std::string::npos) << err;
    }
    {   // a model the engine does not run yet
        const auto next = test::convert_fixture("deepseek_v3", dir.path() / "ds", 4);
        const std::string err = test::error_of([&] { Engine::open(next, options()); });
        EXPECT_NE(err.find("does not run deepseek_v3 models yet"), std::string::npos) << err;
    }
}

}  // namespace
}  // namespace moepack
