// The Gated DeltaNet kernels (shaders/gated_deltanet.cu) against the CPU's functions they
// follow (engine/models/gated_deltanet.hpp), on random data: the convolution and its carried
// state (batches shorter and longer than the kernel), the delta rule's outputs and state
// over several tokens, heads sharing a key head, value heads wider than a block's threads,
// and a batch split in two giving what one batch gives. Outputs are poisoned (NaN) before
// each run. Needs a GPU (ctest label "gpu").
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "error.hpp"
#include "gpu_test_support.hpp"
#include "kernels.hpp"
#include "models/gated_deltanet.hpp"
#include "thread_pool.hpp"

namespace moepack::cuda {
namespace {

TEST(CudaDeltaNet, ConvolutionAndItsStateMatchTheCpu) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(61);
    engine::ThreadPool pool(2);
    for (int64_t kernel : {1, 4})
        for (int64_t n : {1, 2, 9})
            for (int64_t channels : {5, 300}) {
                const auto mixed = random_floats(rng, static_cast<size_t>(n * channels), 1.0f);
                const auto weight = random_floats(rng, static_cast<size_t>(channels * kernel), 0.5f);
                auto state = random_floats(rng, static_cast<size_t>((kernel - 1) * channels), 1.0f);
                DeviceBuffer mixed_dev(mixed), weight_dev(weight), state_dev(state), out_dev(mixed.size() * sizeof(float));
                std::vector<float> want(mixed.size());
                engine::gated_deltanet_convolve(pool, mixed.data(), n, channels, kernel, weight.data(), state.data(), want.data());
                gated_deltanet_convolve(mixed_dev.as<float>(), n, channels, kernel, weight_dev.as<float>(), state_dev.as<float>(),
                                        out_dev.as<float>(), nullptr);
                EXPECT_LE(relative_max_error(out_dev.read<float>(), want), 1e-6) << "kernel " << kernel << " n " << n;
                if (kernel > 1) {
                    EXPECT_EQ(state_dev.read<float>(), state) << "kernel " << kernel << " n " << n;
                }
            }
}

struct DeltaCase {
    engine::DeltaRuleShape shape;
    int64_t n;
};

TEST(CudaDeltaNet, DeltaRuleMatchesTheCpu) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(67);
    engine::ThreadPool pool(2);
    const DeltaCase cases[] = {{{1, 1, 16, 16, 1e-6f}, 1},
                               {{2, 4, 64, 48, 1e-6f}, 7},       // two value heads per key head
                               {{2, 2, 128, 128, 1e-6f}, 3},     // the released models' head sizes
                               {{1, 3, 32, 200, 1e-5f}, 2}};     // value columns past one per thread
    for (const DeltaCase& c : cases)
        for (bool split : {false, true}) {   // split: the batch in two launches, the state carried
            const engine::DeltaRuleShape& s = c.shape;
            const int64_t C = s.channels(), V = s.width(), n = c.n;
            auto x = random_floats(rng, static_cast<size_t>(n * C), 1.0f);
            const auto b = random_floats(rng, static_cast<size_t>(n * s.nv), 2.0f);
            const auto a = random_floats(rng, static_cast<size_t>(n * s.nv), 2.0f);
            const auto a_log = random_floats(rng, static_cast<size_t>(s.nv), 1.0f);
            const auto dt_bias = random_floats(rng, static_cast<size_t>(s.nv), 1.0f);
            const auto z = random_floats(rng, static_cast<size_t>(n * V), 2.0f);
            const auto norm = random_floats(rng, static_cast<size_t>(s.dv), 1.0f);
            auto state = random_floats(rng, static_cast<size_t>(s.nv * s.dk * s.dv), 0.5f);
            DeviceBuffer x_dev(x), b_dev(b), a_dev(a), a_log_dev(a_log), dt_dev(dt_bias), z_dev(z), norm_dev(norm),
                state_dev(state), o_dev(static_cast<size_t>(n * V) * sizeof(float));
            std::vector<float> want(static_cast<size_t>(n * V)), scratch(static_cast<size_t>(V));
            engine::gated_deltanet_recur(pool, s, x.data(), n, b.data(), a.data(), a_log.data(), dt_bias.data(), z.data(),
                                         norm.data(), state.data(), want.data(), scratch.data());
            ASSERT_TRUE(gated_deltanet_recur_supports(s));
            const int64_t first = split ? n / 2 : n;
            for (const auto& [t0, count] : {std::pair<int64_t, int64_t>{0, first}, {first, n - first}})
                gated_deltanet_recur(s, x_dev.as<float>() + t0 * C, count, b_dev.as<float>() + t0 * s.nv,
                                     a_dev.as<float>() + t0 * s.nv, a_log_dev.as<float>(), dt_dev.as<float>(),
                                     z_dev.as<float>() + t0 * V, norm_dev.as<float>(), state_dev.as<float>(),
                                     o_dev.as<float>() + t0 * V, nullptr);
            EXPECT_LE(relative_max_error(o_dev.read<float>(), want), 1e-4)
                << s.nk << "/" << s.nv << " heads of " << s.dk << "/" << s.dv << ", n " << n << " split " << split;
            EXPECT_LE(relative_max_error(state_dev.read<float>(), state), 1e-4)
                << "state, " << s.nk << "/" << s.nv << " heads of " << s.dk << "/" << s.dv << ", n " << n << " split " << split;
        }
}

TEST(CudaDeltaNet, ShapesTheKernelCannotHoldAreRefused) {
    ASSERT_TRUE(have_gpu());
    EXPECT_FALSE(gated_deltanet_recur_supports(DeltaRuleShape{2, 3, 64, 64, 1e-6f}));    // value heads not a multiple
    EXPECT_FALSE(gated_deltanet_recur_supports(DeltaRuleShape{1, 1, 64, 300, 1e-6f}));   // dv past 256
    EXPECT_FALSE(gated_deltanet_recur_supports(DeltaRuleShape{1, 1, 256, 256, 1e-6f}));  // S past shared memory
    DeviceBuffer any(1024);
    EXPECT_THROW(gated_deltanet_recur(DeltaRuleShape{1, 1, 256, 256, 1e-6f}, any.as<float>(), 1, any.as<float>(), any.as<float>(),
                                      any.as<float>(), any.as<float>(), any.as<float>(), any.as<float>(), any.as<float>(),
                                      any.as<float>(), nullptr),
                 moepack::Error);
    EXPECT_THROW(gated_deltanet_convolve(any.as<float>(), 1, 4, 0, any.as<float>(), any.as<float>(), any.as<float>(), nullptr),
                 moepack::Error);
}

}  // namespace
}  // namespace moepack::cuda
