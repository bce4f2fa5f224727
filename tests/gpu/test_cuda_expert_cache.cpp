// The CUDA backend with GPU memory for only some experts (a cache of one layer's worth):
// misses copied over give exactly the logits of the run that holds every expert (the same
// kernels read the same bytes, only from other addresses), with the host's RAM cache large
// or at its least (every miss then read from the pack), or copied ahead on the next layer's
// prediction; misses computed on the CPU, or
// shared between the two, stay as close to the float32 reference as the CPU engine; the
// counters add up; too small a budget is refused by name. qwen3_5_moe_wide adds the shared
// expert and the linear layers around the streamed experts. Needs a GPU (ctest label "gpu").
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>

#include "cuda/gpu_decoder.hpp"
#include "engine.hpp"
#include "engine_test_support.hpp"
#include "pack_reader.hpp"
#include "test_helpers.hpp"

namespace moepack {
namespace {

using engine::Engine;
using engine::MissHandling;

engine::EngineOptions gpu_options() {
    engine::EngineOptions o = test::small_engine_options();
    o.backend = engine::Backend::cuda;
    return o;
}

// GPU memory for one layer's experts: the least the cache takes.
engine::EngineOptions one_layer_of_experts(const std::string& pack, MissHandling misses) {
    const auto p = Pack::open(pack);
    engine::EngineOptions o = gpu_options();
    o.gpu_cache_bytes = static_cast<int64_t>(p->num_experts() * p->expert_layout().stride);
    o.gpu_misses = misses;
    return o;
}

class CudaExpertCache : public ::testing::TestWithParam<std::tuple<const char*, int>> {
protected:
    void SetUp() override { cuda::register_cuda_backend(); }
};

TEST_P(CudaExpertCache, CopiedMissesGiveTheLogitsOfEveryExpertResident) {
    const auto [name, bits] = GetParam();
    test::ScratchDir dir(std::string("cuda_cache_") + name);
    const auto ref = test::load_reference(name);
    const auto pack = test::convert_fixture(name, dir.path() / "p", bits, 8);
    const auto sequence = ref.sequence();
    auto resident = Engine::open(pack, gpu_options());
    ASSERT_TRUE(resident->stats().device.all_resident);
    std::vector<float> want_batch;
    resident->eval_prompt(sequence, want_batch);
    resident->reset();
    const auto want_tokens = test::logits_token_by_token(*resident, sequence);
    for (int64_t host_cache : {int64_t{-1}, int64_t{0}}) {
        auto o = one_layer_of_experts(pack, MissHandling::copy);
        o.expert_cache_bytes = host_cache;
        auto cached = Engine::open(pack, o);
        const engine::DeviceCacheStats& opened = cached->stats().device;
        ASSERT_FALSE(opened.all_resident);
        ASSERT_EQ(opened.slots, cached->config().num_experts);
        std::vector<float> got_batch;
        cached->eval_prompt(sequence, got_batch);
        EXPECT_EQ(got_batch, want_batch) << name << " host cache " << host_cache;
        cached->reset();
        cached->reset_stats();
        EXPECT_EQ(test::logits_token_by_token(*cached, sequence), want_tokens) << name << " host cache " << host_cache;
        const engine::DeviceCacheStats s = cached->stats().device;
        const auto lookups = static_cast<uint64_t>(sequence.size()) * static_cast<uint64_t>(cached->config().num_moe_layers() *
                                                                                             cached->config().experts_per_token);
        EXPECT_EQ(s.hits + s.misses, lookups);
        EXPECT_GT(s.misses, 0u);
        EXPECT_EQ(s.bytes_copied, s.misses * cached->pack().expert_layout().bytes);
        EXPECT_GT(s.copy_ns, 0u);
        EXPECT_EQ(s.cpu_experts, 0u);
    }
}

// Experts copied ahead on the next layer's prediction change where blocks are, not what is
// computed: still the resident run's logits; every prediction is scored.
TEST_P(CudaExpertCache, CopiesAheadGiveTheSameLogits) {
    const auto [name, bits] = GetParam();
    test::ScratchDir dir(std::string("cuda_cache_ahead_") + name);
    const auto ref = test::load_reference(name);
    const auto pack = test::convert_fixture(name, dir.path() / "p", bits, 8);
    const auto sequence = ref.sequence();
    auto resident = Engine::open(pack, gpu_options());
    const auto want = test::logits_token_by_token(*resident, sequence);
    ::setenv("MOEPACK_CUDA_PREFETCH", "1", 1);
    auto cached = Engine::open(pack, one_layer_of_experts(pack, MissHandling::copy));
    ::unsetenv("MOEPACK_CUDA_PREFETCH");
    EXPECT_EQ(test::logits_token_by_token(*cached, sequence), want) << name;
    const engine::DeviceCacheStats s = cached->stats().device;
    const ModelConfig& c = cached->config();
    EXPECT_EQ(s.predicted, sequence.size() * static_cast<uint64_t>((c.num_moe_layers() - 1) * c.experts_per_token));
    EXPECT_LE(s.predicted_routed, s.predicted);
    EXPECT_GT(s.prefetched, 0u);
    EXPECT_LE(s.prefetch_used, s.prefetched);
    std::printf("%s, %d-bit experts: next-layer prediction %.1f %% right; %llu experts copied ahead, %llu used\n", name, bits,
                100.0 * static_cast<double>(s.predicted_routed) / static_cast<double>(s.predicted),
                static_cast<unsigned long long>(s.prefetched), static_cast<unsigned long long>(s.prefetch_used));
}

TEST_P(CudaExpertCache, MissesOnTheCpuStayAsCloseToTheReferenceAsTheCpuEngine) {
    const auto [name, bits] = GetParam();
    test::ScratchDir dir(std::string("cuda_cache_cpu_") + name);
    const auto ref = test::load_reference(name);
    const auto pack = test::convert_fixture(name, dir.path() / "p", bits, 8);
    const auto sequence = ref.sequence();
    auto cpu = Engine::open(pack, test::small_engine_options());
    const double cpu_error = test::relative_l2(test::logits_token_by_token(*cpu, sequence), ref.logits);
    for (MissHandling misses : {MissHandling::cpu, MissHandling::automatic}) {
        auto cached = Engine::open(pack, one_layer_of_experts(pack, misses));
        const double error = test::relative_l2(test::logits_token_by_token(*cached, sequence), ref.logits);
        const engine::DeviceCacheStats s = cached->stats().device;
        std::printf("%s, %d-bit experts, misses %s: relative L2 %.3e (CPU engine %.3e); %llu of %llu misses on the CPU\n",
                    name, bits, misses == MissHandling::cpu ? "cpu" : "auto", error, cpu_error,
                    static_cast<unsigned long long>(s.cpu_experts), static_cast<unsigned long long>(s.misses));
        EXPECT_LE(error, 1.5 * cpu_error + 0.01) << name;
        if (misses == MissHandling::cpu) {
            EXPECT_GT(s.cpu_experts, 0u);
            EXPECT_EQ(s.cpu_experts, s.misses);   // nothing copied for decode tokens
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaExpertCache,
                         ::testing::Combine(::testing::Values("qwen3_moe_wide", "mixtral_wide", "qwen3_5_moe_wide"),
                                            ::testing::Values(4, 16)),
                         [](const auto& param_info) {
                             return std::string(std::get<0>(param_info.param)) + "_" +
                                    std::to_string(std::get<1>(param_info.param)) + "bit";
                         });

TEST(CudaExpertCacheBudget, LessThanOneLayerOfExpertsIsRefused) {
    cuda::register_cuda_backend();
    test::ScratchDir dir("cuda_cache_small");
    const auto pack = test::convert_fixture("olmoe", dir.path() / "p", 4);
    auto o = one_layer_of_experts(pack, MissHandling::copy);
    o.gpu_cache_bytes /= 2;
    const std::string err = test::error_of([&] { Engine::open(pack, o); });
    EXPECT_NE(err.find("raise --gpu-cache-gb"), std::string::npos) << err;
}

}  // namespace
}  // namespace moepack
