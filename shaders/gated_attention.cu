// Gated attention (qwen3_next, qwen3_5_moe): q_proj yields [q | gate] per head; the q halves
// go to attention and the output of each head is scaled by sigmoid(its gate). Two
// element-wise launches, a thread per value. CPU references: split_gated_q and
// apply_output_gate (engine/blocks.cpp).
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 256;

// q_gate [n, heads, 2, D] -> q and gate [n, heads, D]; i indexes q's values.
__global__ void split_halves(const float* __restrict__ q_gate, float* __restrict__ q, float* __restrict__ gate, int64_t count,
                             int64_t head_dim) {
    detail::wait_for_inputs();
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (i >= count) return;
    const int64_t head = i / head_dim, d = i - head * head_dim;
    q[i] = q_gate[2 * head * head_dim + d];
    gate[i] = q_gate[(2 * head + 1) * head_dim + d];
}

__global__ void gate_values(float* __restrict__ out, const float* __restrict__ gate, int64_t count) {
    detail::wait_for_inputs();
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (i < count) out[i] *= 1.0f / (1.0f + expf(-gate[i]));
}

unsigned blocks_for(int64_t count, const char* what) {
    const int64_t blocks = (count + kThreads - 1) / kThreads;
    if (blocks > 2147483647) fail(what, ": ", count, " values in one launch");
    return static_cast<unsigned>(blocks);
}

}  // namespace

void split_gated_q(const float* q_gate, float* q, float* gate, int64_t n, int64_t heads, int64_t head_dim, cudaStream_t stream) {
    const int64_t count = n * heads * head_dim;
    if (count <= 0) return;
    detail::launch(split_halves, blocks_for(count, "split_gated_q"), kThreads, 0, stream, q_gate, q, gate, count, head_dim);
    check_launch("split_gated_q");
}

void apply_output_gate(float* out, const float* gate, int64_t count, cudaStream_t stream) {
    if (count <= 0) return;
    detail::launch(gate_values, blocks_for(count, "apply_output_gate"), kThreads, 0, stream, out, gate, count);
    check_launch("apply_output_gate");
}

}  // namespace moepack::cuda
