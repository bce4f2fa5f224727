// The CUDA backend against the CPU engine on the reference fixtures it runs: every
// position's logits (relative L2 <= 1e-3; the kernels sum in another order) and the greedy
// continuation decoded token by token (identical at 16-bit experts); a state (KV cache and
// recurrent states) saved on the GPU and loaded back continues exactly. Needs a GPU (ctest label "gpu").
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "cuda/gpu_decoder.hpp"
#include "engine.hpp"
#include "engine_test_support.hpp"
#include "model.hpp"
#include "model_config.hpp"
#include "test_helpers.hpp"
#include "weight_view.hpp"

namespace moepack {
namespace {

using engine::Engine;

engine::EngineOptions gpu_options() {
    engine::EngineOptions o = test::small_engine_options();
    o.backend = engine::Backend::cuda;
    return o;
}

std::vector<int32_t> greedy(Engine& e, const std::vector<int32_t>& prompt, size_t steps) {
    auto logits = e.eval_prompt(prompt);
    std::vector<int32_t> out;
    for (size_t i = 0; i < steps; ++i) {
        out.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
        logits = e.eval_token(out.back());
    }
    return out;
}

// Which models the CUDA graph takes (runs(): `--backend auto` keeps the CPU for the others;
// asked for by name, the graph refuses them saying what it lacks). Needs no GPU.
TEST(CudaBackendScope, TakesTheFamiliesItHasKernelsForAndNoOthers) {
    cuda::register_cuda_backend();
    const engine::CudaBackend& cuda = engine::cuda_backend();
    const auto config = [](const char* name) {
        std::ifstream in(test::fixture_model(name) / "config.json");
        return read_model_config(nlohmann::json::parse(in), name);
    };
    for (const char* name : {"qwen3_moe", "mixtral", "olmoe", "qwen3_next", "qwen3_5_moe", "qwen3_5_moe_text"})
        EXPECT_TRUE(cuda.runs(config(name))) << name;
    EXPECT_FALSE(cuda.runs(config("deepseek_v3")));   // latent attention
    EXPECT_FALSE(cuda.runs(config("gpt_oss")));       // attention biases
    ModelConfig odd_heads = config("qwen3_moe");
    odd_heads.head_dim = 30;   // not a multiple of 4
    EXPECT_FALSE(cuda.runs(odd_heads));
    ModelConfig wide_values = config("qwen3_5_moe");
    wide_values.linear.value_head_dim = 512;   // past the delta-rule kernel's 256
    EXPECT_FALSE(cuda.runs(wide_values));
    ModelConfig plain_shared = config("qwen3_5_moe");
    plain_shared.shared_expert_gated = false;
    EXPECT_FALSE(cuda.runs(plain_shared));
}

// The spans a layer's L2 prefetch covers: every matrix's values, scales and biases, sorted,
// overlapping or touching runs merged, then the smallest gaps closed until kMaxL2Spans are
// left. Needs no GPU (the pointers are never read).
TEST(CudaWeightSpans, CoverTheMatricesInAtMostTheKernelsSpans) {
    const auto at = [](uintptr_t a) { return reinterpret_cast<const void*>(a); };
    cuda::DeviceMatrix affine;   // 4 rows of 8 code words, 2 groups: 128 bytes of codes, 16 of scales, 16 of biases
    affine.format = cuda::DeviceFormat::affine;
    affine.rows = 4, affine.cols = 64, affine.bits = 4, affine.group_size = 32, affine.row_words = 8, affine.groups = 2;
    affine.data = at(0x10000);
    affine.scales = static_cast<const uint16_t*>(at(0x10080));   // right after the codes
    affine.biases = static_cast<const uint16_t*>(at(0x20000));
    cuda::DeviceMatrix bf16;   // 3 x 5 values: 30 bytes, below the codes
    bf16.rows = 3, bf16.cols = 5, bf16.data = at(0x8000);
    const cuda::DeviceMatrix none;
    const auto spans = cuda::weight_spans({affine, none, bf16});
    ASSERT_EQ(spans.size(), 3u);
    EXPECT_EQ(spans[0].data, at(0x8000));
    EXPECT_EQ(spans[0].bytes, 30);
    EXPECT_EQ(spans[1].data, at(0x10000));
    EXPECT_EQ(spans[1].bytes, 144);
    EXPECT_EQ(spans[2].data, at(0x20000));
    EXPECT_EQ(spans[2].bytes, 16);

    std::vector<cuda::DeviceMatrix> many;   // 20 matrices of 256 bytes, gaps of 4096 but one of 16
    for (uintptr_t i = 0; i < 20; ++i) {
        cuda::DeviceMatrix m;
        m.rows = 1, m.cols = 128, m.data = at(0x100000 + i * (256 + 4096) - (i >= 8 ? 4080 : 0));
        many.push_back(m);
    }
    const auto merged = cuda::weight_spans(many);
    ASSERT_EQ(merged.size(), static_cast<size_t>(cuda::kMaxL2Spans));
    int64_t covered = 0;
    for (size_t i = 0; i < merged.size(); ++i) {
        covered += merged[i].bytes;
        if (i > 0) {
            EXPECT_LT(merged[i - 1].data, merged[i].data);
        }
    }
    EXPECT_EQ(merged[0].data, many[0].data);
    EXPECT_EQ(static_cast<const char*>(merged.back().data) + merged.back().bytes, static_cast<const char*>(many[19].data) + 256);
    EXPECT_EQ(covered, 20 * 256 + 16 + 3 * 4096);   // the gap of 16 and the three first gaps of 4096 closed
}

class CudaEngine : public ::testing::TestWithParam<const char*> {
protected:
    void SetUp() override { cuda::register_cuda_backend(); }
};

TEST_P(CudaEngine, LogitsAndGreedyTokensMatchTheCpu) {
    const char* name = GetParam();
    test::ScratchDir dir(std::string("cuda_") + name);
    const auto ref = test::load_reference(name);
    const auto pack = test::convert_fixture(name, dir.path() / "p", 16);
    auto cpu = Engine::open(pack, test::small_engine_options());
    auto gpu = Engine::open(pack, gpu_options());
    std::vector<float> want, got;
    cpu->eval_prompt(ref.sequence(), want);
    gpu->eval_prompt(ref.sequence(), got);
    EXPECT_LE(test::relative_l2(got, want), 1e-3) << name;
    cpu->reset();
    gpu->reset();
    EXPECT_EQ(greedy(*gpu, ref.prompt, ref.greedy.size()), greedy(*cpu, ref.prompt, ref.greedy.size())) << name;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaEngine,
                         ::testing::Values("qwen3_moe", "qwen3_moe_fused", "mixtral", "olmoe", "qwen3_moe_wide",
                                           "mixtral_wide", "olmoe_wide", "qwen3_moe_chat", "qwen3_next", "qwen3_next_wide",
                                           "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_5_moe_wide"),
                         [](const auto& param_info) { return std::string(param_info.param); });

// Quantised packs: affine products on int8-quantised inputs on both sides (the CPU run token
// by token, its decode kernels; the GPU's prompt in one batch through the tensor-core
// products, and token by token through the decode graph). Rounding to int8 is discontinuous,
// so the two sides' float differences (summation order) flip single codes and routing
// choices and the runs part by about the int8 noise itself (a few percent on these small
// fixtures, as the CPU's own int8 and float paths do): the check is that the GPU stays as close
// to the float32 reference as the CPU is.
class CudaQuantizedEngine : public ::testing::TestWithParam<std::tuple<const char*, int>> {
protected:
    void SetUp() override { cuda::register_cuda_backend(); }
};

TEST_P(CudaQuantizedEngine, PromptBatchesAndTokensAreAsCloseToTheReferenceAsTheCpu) {
    const auto [name, bits] = GetParam();
    test::ScratchDir dir(std::string("cudaq_") + name);
    const auto ref = test::load_reference(name);
    const auto pack = test::convert_fixture(name, dir.path() / "p", bits, 8);
    auto cpu = Engine::open(pack, test::small_engine_options());
    auto gpu = Engine::open(pack, gpu_options());
    const auto sequence = ref.sequence();
    const double cpu_error = test::relative_l2(test::logits_token_by_token(*cpu, sequence), ref.logits);
    std::vector<float> batched;
    gpu->eval_prompt(sequence, batched);
    const double batch_error = test::relative_l2(batched, ref.logits);
    gpu->reset();
    const double token_error = test::relative_l2(test::logits_token_by_token(*gpu, sequence), ref.logits);
    std::printf("%s, %d-bit experts, relative L2 to the float32 reference: CPU %.3e, CUDA prompt batch %.3e, token by token %.3e\n",
                name, bits, cpu_error, batch_error, token_error);
    EXPECT_LE(batch_error, 1.5 * cpu_error + 0.01);
    EXPECT_LE(token_error, 1.5 * cpu_error + 0.01);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaQuantizedEngine,
                         ::testing::Combine(::testing::Values("qwen3_moe", "mixtral_wide", "olmoe_wide", "qwen3_moe_wide",
                                                              "qwen3_5_moe_wide"),
                                            ::testing::Values(2, 4, 8)),
                         [](const auto& param_info) {
                             return std::string(std::get<0>(param_info.param)) + "_" +
                                    std::to_string(std::get<1>(param_info.param)) + "bit";
                         });

// The next layer's weights pulled into L2 beside a layer's experts (the default) writes
// nothing: decode logits are those of a run without it, bit for bit.
TEST(CudaL2Prefetch, ChangesNoLogits) {
    cuda::register_cuda_backend();
    for (const char* name : {"qwen3_moe_wide", "qwen3_5_moe_wide"}) {
        test::ScratchDir dir(std::string("cuda_l2_") + name);
        const auto ref = test::load_reference(name);
        const auto pack = test::convert_fixture(name, dir.path() / "p", 4, 8);
        auto with = Engine::open(pack, gpu_options());
        ::setenv("MOEPACK_CUDA_L2_PREFETCH", "0", 1);
        auto without = Engine::open(pack, gpu_options());
        ::unsetenv("MOEPACK_CUDA_L2_PREFETCH");
        EXPECT_EQ(test::logits_token_by_token(*with, ref.sequence()), test::logits_token_by_token(*without, ref.sequence())) << name;
    }
}

// A KV cache, and with qwen3_5_moe the linear layers' recurrent states too.
class CudaEngineState : public ::testing::TestWithParam<const char*> {
protected:
    void SetUp() override { cuda::register_cuda_backend(); }
};

TEST_P(CudaEngineState, SaveLoadContinueGivesIdenticalLogits) {
    const char* name = GetParam();
    test::ScratchDir dir(std::string("cuda_state_") + name);
    const auto ref = test::load_reference(name);
    const auto pack = test::convert_fixture(name, dir.path() / "p", 16);
    auto a = Engine::open(pack, gpu_options());
    a->eval_prompt(ref.prompt);
    const auto state = (dir.path() / "s.state").string();
    a->state_save(state);
    const auto continued = test::logits_token_by_token(*a, ref.greedy);
    auto b = Engine::open(pack, gpu_options());
    b->state_load(state);
    EXPECT_EQ(test::logits_token_by_token(*b, ref.greedy), continued);
    // and a fresh context after the loaded one starts from zero states again
    b->reset();
    a->reset();
    EXPECT_EQ(test::logits_token_by_token(*b, ref.prompt), test::logits_token_by_token(*a, ref.prompt));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaEngineState, ::testing::Values("mixtral_wide", "qwen3_5_moe"),
                         [](const auto& param_info) { return std::string(param_info.param); });

}  // namespace
}  // namespace moepack
