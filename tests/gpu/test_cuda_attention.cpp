// The CUDA attention kernels (shaders/: attention_prologue, attention, prompt_attention,
// gated attention's split and gate) against their CPU twins on random data: head sizes from
// 16 to 256, grouped and plain heads, windows, rows that cross chunk edges, caches poisoned
// (NaN) past the rows' positions. Needs a GPU (ctest label "gpu").
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <utility>
#include <vector>

#include "blocks.hpp"
#include "error.hpp"
#include "gpu_test_support.hpp"
#include "kernels.hpp"
#include "model_config.hpp"
#include "thread_pool.hpp"

namespace moepack::cuda {
namespace {

// Positions of n rows from position0 on, in device memory.
DeviceBuffer positions_from(int64_t position0, int64_t n) {
    std::vector<int32_t> p(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) p[static_cast<size_t>(t)] = static_cast<int32_t>(position0 + t);
    return DeviceBuffer(p);
}

TEST(CudaBlocks, AttentionPrologueRotatesLikeTheCpuTable) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(13);
    for (auto style : {RopeStyle::half, RopeStyle::interleaved})
        for (int64_t rotary : {32, 128}) {
            ModelConfig c;
            c.head_dim = 128;
            c.rope.theta = 1e6;
            c.rope.style = style;
            c.rope.rotary_dim = rotary;
            const engine::Rope cpu(c);
            const int64_t n = 5, heads = 6, kv_heads = 2, position0 = 4093;
            auto q = random_floats(rng, static_cast<size_t>(n * heads * c.head_dim), 2.0f);
            auto k = random_floats(rng, static_cast<size_t>(n * kv_heads * c.head_dim), 2.0f);
            const auto v = random_floats(rng, k.size(), 2.0f);
            DeviceBuffer q_dev(q), k_dev(k), v_dev(v), freq(cpu.inv_freq());
            const DeviceBuffer pos = positions_from(position0, n);
            attention_prologue(q_dev.as<float>(), k_dev.as<float>(), v_dev.as<float>(), n, heads, kv_heads, c.head_dim, nullptr,
                               nullptr, 1e-6f, RopeTable{rotary, style == RopeStyle::interleaved, freq.as<float>()},
                               pos.as<int32_t>(), nullptr, nullptr, nullptr);
            cpu.apply(q.data(), n, heads, c.head_dim, position0);
            cpu.apply(k.data(), n, kv_heads, c.head_dim, position0);
            EXPECT_LE(relative_max_error(q_dev.read<float>(), q), 2e-6) << "rotary " << rotary;
            EXPECT_LE(relative_max_error(k_dev.read<float>(), k), 2e-6) << "rotary " << rotary;
        }
}

TEST(CudaBlocks, AttentionPrologueNormsHeadsAndStoresTheCache) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(37);
    ModelConfig c;
    c.head_dim = 96;
    c.rope.theta = 1e4;
    c.rope.style = RopeStyle::half;
    c.rope.rotary_dim = 64;
    const engine::Rope cpu(c);
    const int64_t n = 3, heads = 4, kv_heads = 2, D = c.head_dim, kv_dim = kv_heads * D, ctx = 10, position0 = 6;
    auto q = random_floats(rng, static_cast<size_t>(n * heads * D), 2.0f);
    auto k = random_floats(rng, static_cast<size_t>(n * kv_dim), 2.0f);
    const auto v = random_floats(rng, k.size(), 2.0f);
    const auto qn = random_floats(rng, static_cast<size_t>(D), 1.5f), kn = random_floats(rng, static_cast<size_t>(D), 1.5f);
    DeviceBuffer q_dev(q), k_dev(k), v_dev(v), qn_dev(qn), kn_dev(kn), freq(cpu.inv_freq());
    DeviceBuffer kc(static_cast<size_t>(ctx * kv_dim) * 4), vc(static_cast<size_t>(ctx * kv_dim) * 4);
    const DeviceBuffer pos = positions_from(position0, n);
    attention_prologue(q_dev.as<float>(), k_dev.as<float>(), v_dev.as<float>(), n, heads, kv_heads, D, qn_dev.as<float>(),
                       kn_dev.as<float>(), 1e-6f, RopeTable{64, false, freq.as<float>()}, pos.as<int32_t>(), kc.as<float>(),
                       vc.as<float>(), nullptr);
    engine::rms_norm(q.data(), n * heads, D, qn.data(), 1e-6f);
    engine::rms_norm(k.data(), n * kv_heads, D, kn.data(), 1e-6f);
    cpu.apply(q.data(), n, heads, D, position0);
    cpu.apply(k.data(), n, kv_heads, D, position0);
    EXPECT_LE(relative_max_error(q_dev.read<float>(), q), 4e-6);
    EXPECT_LE(relative_max_error(k_dev.read<float>(), k), 4e-6);
    const auto keys = kc.read<float>(), values = vc.read<float>();
    for (int64_t p = 0; p < ctx; ++p)
        for (int64_t i = 0; i < kv_dim; ++i) {
            const auto at = static_cast<size_t>(p * kv_dim + i);
            if (p < position0 || p >= position0 + n) {   // rows the launch must not touch keep their poison
                ASSERT_TRUE(std::isnan(keys[at]) && std::isnan(values[at])) << "cache row " << p;
                continue;
            }
            const auto src = static_cast<size_t>((p - position0) * kv_dim + i);
            ASSERT_NEAR(keys[at], k[src], 4e-6 * (std::abs(k[src]) + 1)) << "key row " << p;
            ASSERT_EQ(values[at], v[src]) << "value row " << p;
        }
}

// Random queries of n rows at positions position0.., keys and values of every position up to
// theirs, the CPU's attention of them, and the caches extended by 70 positions of NaN (which
// the kernels must not read).
struct AttentionCase {
    int64_t position0, context;
    std::vector<float> q, k_cache, v_cache, want;
};

AttentionCase attention_case(std::mt19937& rng, engine::ThreadPool& pool, int64_t n, int64_t heads, int64_t kv_heads,
                             int64_t head_dim, int64_t window) {
    AttentionCase c;
    c.position0 = 37 + 29 * n;
    const int64_t positions = c.position0 + n;
    c.context = positions + 70;
    c.q = random_floats(rng, static_cast<size_t>(n * heads * head_dim), 1.0f);
    c.k_cache = random_floats(rng, static_cast<size_t>(positions * kv_heads * head_dim), 1.0f);
    c.v_cache = random_floats(rng, static_cast<size_t>(positions * kv_heads * head_dim), 1.0f);
    c.want.resize(c.q.size());
    engine::attention(pool, c.q.data(), c.k_cache.data(), c.v_cache.data(), c.want.data(), n, c.position0, heads, kv_heads,
                      head_dim, window);
    c.k_cache.resize(static_cast<size_t>(c.context * kv_heads * head_dim), std::nanf(""));
    c.v_cache.resize(c.k_cache.size(), std::nanf(""));
    return c;
}

TEST(CudaBlocks, AttentionMatchesTheCpu) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(17);
    engine::ThreadPool pool(2);
    for (int64_t head_dim : {16, 20, 24, 64, 128, 256})
        for (int64_t window : {0, 7, 40})
            for (int64_t n : {1, 4, 11, 40})
            for (const auto& [heads, kv_heads] : {std::pair<int64_t, int64_t>{8, 2}, {32, 4}, {12, 1}, {5, 5}}) {
                // the context reaches past the rows' positions: the chunks there must add nothing
                const AttentionCase c = attention_case(rng, pool, n, heads, kv_heads, head_dim, window);
                const auto& q = c.q;
                const auto& want = c.want;
                const int64_t context = c.context;
                DeviceBuffer q_dev(q), k_dev(c.k_cache), v_dev(c.v_cache);
                DeviceBuffer workspace(attention_workspace_bytes(n, heads, head_dim, context));
                const DeviceBuffer pos = positions_from(c.position0, n);
                // run 1 also quantises its output for a 4-bit product (with the merge when heads hold
                // whole groups): the same bytes as quantize_input
                const int group = head_dim % 64 == 0 ? 64 : 32;
                const size_t q_bytes = quantized_input_bytes(n, heads * head_dim, group);
                for (int run = 0; run < 2; ++run) {
                    DeviceBuffer out(q.size() * sizeof(float)), made(q_bytes), reference(q_bytes);
                    const QuantizedInput quantized = quantized_input_in(made.as<void>(), n, heads * head_dim, group, 4);
                    attention(q_dev.as<float>(), k_dev.as<float>(), v_dev.as<float>(), out.as<float>(), n, pos.as<int32_t>(),
                              heads, kv_heads, head_dim, window, context, workspace.as<float>(), run == 1 ? &quantized : nullptr,
                              nullptr);
                    EXPECT_LE(relative_max_error(out.read<float>(), want), 1e-5) << "head_dim " << head_dim << " heads " << heads
                        << "/" << kv_heads << " window " << window << " n " << n << " run " << run;
                    if (run == 0) continue;
                    quantize_input(out.as<float>(), quantized_input_in(reference.as<void>(), n, heads * head_dim, group, 4), nullptr);
                    EXPECT_EQ(made.read<uint8_t>(), reference.read<uint8_t>())
                        << "quantised output, head_dim " << head_dim << " heads " << heads << " n " << n;
                }
            }
}

TEST(CudaBlocks, PromptAttentionOnTensorCoresMatchesTheCpu) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(19);
    engine::ThreadPool pool(2);
    double worst = 0;
    for (int64_t head_dim : {32, 64, 128})
        for (int64_t window : {0, 7, 40})
            for (int64_t n : {1, 11, 40, 130})
                for (const auto& [heads, kv_heads] : {std::pair<int64_t, int64_t>{8, 2}, {32, 4}, {12, 1}, {5, 5}, {64, 1}}) {
                    ASSERT_TRUE(prompt_attention_supports(heads, kv_heads, head_dim));
                    const AttentionCase c = attention_case(rng, pool, n, heads, kv_heads, head_dim, window);
                    const auto& want = c.want;
                    DeviceBuffer q_dev(c.q), k_dev(c.k_cache), v_dev(c.v_cache), out(c.q.size() * sizeof(float));
                    const DeviceBuffer pos = positions_from(c.position0, n);
                    prompt_attention(q_dev.as<float>(), k_dev.as<float>(), v_dev.as<float>(), out.as<float>(), n,
                                     pos.as<int32_t>(), heads, kv_heads, head_dim, window, nullptr);
                    const double err = relative_max_error(out.read<float>(), want);
                    worst = std::max(worst, err);
                    EXPECT_LE(err, 2e-3) << "head_dim " << head_dim << " heads " << heads << "/" << kv_heads << " window "
                                         << window << " n " << n;
                }
    std::printf("prompt attention (fp16 tensor cores): worst relative error %.2e\n", worst);
}

TEST(CudaBlocks, PromptAttentionRefusesShapesItDoesNotTake) {
    ASSERT_TRUE(have_gpu());
    EXPECT_FALSE(prompt_attention_supports(8, 2, 256));
    EXPECT_FALSE(prompt_attention_supports(8, 2, 20));
    EXPECT_FALSE(prompt_attention_supports(128, 1, 64));   // 128 heads per kv head: more than a block's rows
    EXPECT_FALSE(prompt_attention_supports(8, 3, 64));
    DeviceBuffer q(sizeof(float) * 8 * 256), kv(sizeof(float) * 8 * 256), out(sizeof(float) * 8 * 256);
    const DeviceBuffer pos = positions_from(0, 1);
    EXPECT_THROW(prompt_attention(q.as<float>(), kv.as<float>(), kv.as<float>(), out.as<float>(), 1, pos.as<int32_t>(), 8, 2,
                                  256, 0, nullptr),
                 moepack::Error);
}

TEST(CudaBlocks, GatedAttentionSplitAndGateMatchTheCpu) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(43);
    const int64_t n = 3, heads = 5, D = 24, width = heads * D;
    const auto q_gate = random_floats(rng, static_cast<size_t>(n * 2 * width), 3.0f);
    std::vector<float> q(static_cast<size_t>(n * width)), gate(q.size());
    engine::split_gated_q(q_gate.data(), q.data(), gate.data(), n, heads, D);
    DeviceBuffer q_gate_dev(q_gate), q_dev(q.size() * sizeof(float)), gate_dev(q.size() * sizeof(float));
    split_gated_q(q_gate_dev.as<float>(), q_dev.as<float>(), gate_dev.as<float>(), n, heads, D, nullptr);
    EXPECT_EQ(q_dev.read<float>(), q);
    EXPECT_EQ(gate_dev.read<float>(), gate);
    EXPECT_EQ(q[static_cast<size_t>(width + D)], q_gate[static_cast<size_t>(2 * width + 2 * D)]);   // row 1, head 1's q
    auto out = random_floats(rng, q.size(), 2.0f);
    DeviceBuffer out_dev(out);
    engine::apply_output_gate(out.data(), gate.data(), static_cast<int64_t>(out.size()));
    apply_output_gate(out_dev.as<float>(), gate_dev.as<float>(), static_cast<int64_t>(out.size()), nullptr);
    EXPECT_LE(relative_max_error(out_dev.read<float>(), out), 1e-6);
}

}  // namespace
}  // namespace moepack::cuda
