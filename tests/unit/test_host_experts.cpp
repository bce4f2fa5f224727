// The CUDA backend's CPU side of expert streaming, testable without a GPU: HostExperts (a
// token's routed experts computed on the CPU from their blocks in the RAM cache) against a
// float64 reference from the decoded weights: at 4 and 16 bits with the portable kernels
// (float inputs) within float rounding, and with the best kernels (int8-quantised inputs at
// 4 bits) within their noise; and the expert store's peek()
// and holds_every_expert() that copies ahead rely on.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cpu/matmul.hpp"
#include "cuda/host_experts.hpp"
#include "engine_test_support.hpp"
#include "expert_store.hpp"
#include "pack_reader.hpp"
#include "test_helpers.hpp"
#include "thread_pool.hpp"

namespace moepack {
namespace {

using engine::WeightMatrix;

// w . x in float64 from w's decoded rows; y has w.rows values.
std::vector<double> reference_product(const WeightMatrix& w, const std::vector<double>& x) {
    std::vector<float> row(static_cast<size_t>(w.cols));
    std::vector<double> y(static_cast<size_t>(w.rows));
    for (int64_t r = 0; r < w.rows; ++r) {
        engine::decode_row(w, r, row.data());
        double s = 0;
        for (int64_t c = 0; c < w.cols; ++c) s += static_cast<double>(row[static_cast<size_t>(c)]) * x[static_cast<size_t>(c)];
        y[static_cast<size_t>(r)] = s;
    }
    return y;
}

TEST(HostExperts, MatchTheFloat64ReferenceOfTheDecodedWeights) {
    for (int bits : {4, 16}) {
        test::ScratchDir dir("host_experts");
        const auto pack_dir = test::convert_fixture("qwen3_moe", dir.path() / "p", bits);
        const auto pack = Pack::open(pack_dir);
        engine::ExpertStoreOptions o;
        o.cache_bytes = 1ull << 30;
        engine::ExpertStore store(*pack, o);
        ASSERT_TRUE(store.holds_every_expert());
        const auto& layout = store.layout();
        const int64_t layer = pack->expert_layers().front().layer, H = static_cast<int64_t>(layout.hidden);
        const std::vector<int32_t> ids = {3, 0, 5};
        std::vector<const std::byte*> blocks(ids.size());
        store.acquire(layer, ids, blocks);
        std::mt19937 rng(5);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        std::vector<float> h(static_cast<size_t>(H)), y(static_cast<size_t>(H));
        for (float& v : h) v = normal(rng);
        const std::vector<float> weights = {0.5f, 0.3f, 0.2f};
        engine::ThreadPool pool(2);
        cuda::HostExperts experts(layout, pool);
        const engine::MatmulIsa best = engine::matmul_isa();
        engine::set_matmul_isa(engine::MatmulIsa::portable);
        std::vector<float> y_portable(y.size());
        experts.run(h.data(), blocks, weights, y_portable.data());
        engine::set_matmul_isa(best);
        experts.run(h.data(), blocks, weights, y.data());

        const std::vector<double> hd(h.begin(), h.end());
        std::vector<double> want(static_cast<size_t>(H), 0.0);
        for (size_t j = 0; j < ids.size(); ++j) {
            const auto g = reference_product(WeightMatrix::from_record(blocks[j] + layout.gate_offset, layout.gate), hd);
            const auto u = reference_product(WeightMatrix::from_record(blocks[j] + layout.up_offset, layout.up), hd);
            std::vector<double> act(g.size());
            for (size_t i = 0; i < g.size(); ++i) act[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
            const auto d = reference_product(WeightMatrix::from_record(blocks[j] + layout.down_offset, layout.down), act);
            for (size_t c = 0; c < want.size(); ++c) want[c] += weights[j] * d[c];
        }
        auto relative_error = [&](const std::vector<float>& got) {
            double err = 0, norm = 0;
            for (size_t c = 0; c < want.size(); ++c) {
                err += (got[c] - want[c]) * (got[c] - want[c]);
                norm += want[c] * want[c];
            }
            return std::sqrt(err / norm);
        };
        EXPECT_LE(relative_error(y_portable), 1e-5) << bits << "-bit experts, float inputs";
        EXPECT_LE(relative_error(y), bits == 16 ? 1e-5 : 0.05) << bits << "-bit experts, " << engine::matmul_isa_name(best);

        // the blocks stay where acquire put them; experts never read are not there
        store.release_all();
        for (size_t j = 0; j < ids.size(); ++j) EXPECT_EQ(store.peek(layer, ids[j]), blocks[j]);
        EXPECT_EQ(store.peek(layer, 1), nullptr);
        EXPECT_EQ(store.peek(layer, -1), nullptr);
    }
}

TEST(HostExperts, ASmallRamCacheDoesNotHoldEveryExpert) {
    test::ScratchDir dir("host_experts_small");
    const auto pack = Pack::open(test::convert_fixture("olmoe", dir.path() / "p", 4));
    engine::ExpertStoreOptions o;
    o.cache_bytes = 0;
    o.min_slots = 2;
    EXPECT_FALSE(engine::ExpertStore(*pack, o).holds_every_expert());
}

}  // namespace
}  // namespace moepack
