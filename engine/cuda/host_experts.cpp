// Routed experts of one token on the CPU: see host_experts.hpp. The rows of all the experts'
// gate and up matrices are one parallel loop, the down rows another, in blocks of 64 rows.
#include "cuda/host_experts.hpp"

#include <algorithm>

#include "blocks.hpp"
#include "thread_pool.hpp"

namespace moepack::cuda {

using engine::WeightMatrix;

namespace {
constexpr int64_t kRowsPerTask = 64;
}  // namespace

HostExperts::HostExperts(const pack::ExpertBlockLayout& layout, engine::ThreadPool& pool) : layout_(layout), pool_(pool) {}

void HostExperts::run(const float* h, std::span<const std::byte* const> blocks, std::span<const float> weights, float* y) {
    const auto k = static_cast<int64_t>(blocks.size());
    const auto H = static_cast<int64_t>(layout_.hidden), I = static_cast<int64_t>(layout_.intermediate);
    gate_.resize(static_cast<size_t>(k * I));
    up_.resize(static_cast<size_t>(k * I));
    down_.resize(static_cast<size_t>(k * H));
    gate_w_.clear(), up_w_.clear(), down_w_.clear();
    for (const std::byte* b : blocks) {
        gate_w_.push_back(WeightMatrix::from_record(b + layout_.gate_offset, layout_.gate));
        up_w_.push_back(WeightMatrix::from_record(b + layout_.up_offset, layout_.up));
        down_w_.push_back(WeightMatrix::from_record(b + layout_.down_offset, layout_.down));
    }
    const auto& gate = gate_w_;
    const auto& up = up_w_;
    const auto& down = down_w_;
    h_in_.reset(h, 1, H);
    if (k > 0) h_in_.prepare(gate[0]);
    // gate and up: task t covers rows of expert t / (2 * tiles), gate or up by parity
    const int64_t up_tiles = (I + kRowsPerTask - 1) / kRowsPerTask;
    pool_.parallel_for(k * 2 * up_tiles, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t j = t / (2 * up_tiles), which = t / up_tiles % 2, r0 = t % up_tiles * kRowsPerTask;
            const WeightMatrix& w = which == 0 ? gate[static_cast<size_t>(j)] : up[static_cast<size_t>(j)];
            float* out = (which == 0 ? gate_.data() : up_.data()) + j * I;
            engine::matmul_rows(w, h_in_, out, I, r0, std::min(I, r0 + kRowsPerTask));
        }
    });
    engine::swiglu(gate_.data(), up_.data(), gate_.data(), k * I);
    act_in_.resize(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) {
        act_in_[static_cast<size_t>(j)].reset(gate_.data() + j * I, 1, I);
        act_in_[static_cast<size_t>(j)].prepare(down[static_cast<size_t>(j)]);
    }
    const int64_t down_tiles = (H + kRowsPerTask - 1) / kRowsPerTask;
    pool_.parallel_for(k * down_tiles, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t j = t / down_tiles, r0 = t % down_tiles * kRowsPerTask;
            engine::matmul_rows(down[static_cast<size_t>(j)], act_in_[static_cast<size_t>(j)], down_.data() + j * H, H, r0,
                                std::min(H, r0 + kRowsPerTask));
        }
    });
    for (int64_t c = 0; c < H; ++c) {
        float sum = 0.0f;
        for (int64_t j = 0; j < k; ++j) sum += weights[static_cast<size_t>(j)] * down_[static_cast<size_t>(j * H + c)];
        y[c] = sum;
    }
}

}  // namespace moepack::cuda
