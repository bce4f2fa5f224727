// Routed experts of one token computed on the CPU, from their blocks in host memory (the
// expert store's RAM cache): what the CUDA backend does with experts missing from GPU
// memory instead of copying them over, while the GPU computes the resident ones.
//   y [H] = sum_j weights[j] * down_j(silu(gate_j . h) * (up_j . h))
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "cpu/matmul.hpp"
#include "pack_format.hpp"

namespace moepack::engine {
class ThreadPool;
}

namespace moepack::cuda {

class HostExperts {
public:
    HostExperts(const pack::ExpertBlockLayout& layout, engine::ThreadPool& pool);
    // h [H]; blocks[j] the block of the expert weighted weights[j]; y [H] is overwritten.
    void run(const float* h, std::span<const std::byte* const> blocks, std::span<const float> weights, float* y);

private:
    const pack::ExpertBlockLayout& layout_;
    engine::ThreadPool& pool_;
    std::vector<float> gate_, up_, down_;   // [k, I], [k, I], [k, H]
    std::vector<engine::WeightMatrix> gate_w_, up_w_, down_w_;   // the experts' records
    engine::MatmulInput h_in_;
    std::vector<engine::MatmulInput> act_in_;
};

}  // namespace moepack::cuda
