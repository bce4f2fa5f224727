// The CUDA backend against the CPU engine on the reference fixtures it runs: every
// position's logits (relative L2 <= 1e-3; the kernels sum in another order) and the greedy
// continuation decoded token by token (identical at 16-bit experts); a state saved on the
// GPU and loaded back continues exactly. Needs a GPU (ctest label "gpu").
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "cuda/gpu_decoder.hpp"
#include "engine.hpp"
#include "engine_test_support.hpp"

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
                                           "mixtral_wide", "olmoe_wide", "qwen3_moe_chat"),
                         [](const auto& param_info) { return std::string(param_info.param); });

TEST(CudaEngineState, SaveLoadContinueGivesIdenticalLogits) {
    cuda::register_cuda_backend();
    test::ScratchDir dir("cuda_state");
    const auto ref = test::load_reference("mixtral_wide");
    const auto pack = test::convert_fixture("mixtral_wide", dir.path() / "p", 16);
    auto a = Engine::open(pack, gpu_options());
    a->eval_prompt(ref.prompt);
    const auto state = (dir.path() / "s.state").string();
    a->state_save(state);
    const auto continued = test::logits_token_by_token(*a, ref.greedy);
    auto b = Engine::open(pack, gpu_options());
    b->state_load(state);
    EXPECT_EQ(test::logits_token_by_token(*b, ref.greedy), continued);
}

}  // namespace
}  // namespace moepack
