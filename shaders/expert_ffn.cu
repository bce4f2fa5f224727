// The routed experts of one decode token, their ids (and cache slots) read on the GPU, or
// chosen by the gate+up launch itself from the router's logits: expert_gate_up computes
// each chosen expert's gate and up rows together (one warp per row of one expert, the two
// rows' loads in flight at once) and stores silu(gate) * up; expert_down_add gives each warp
// one output row and computes that row of every chosen expert's down matrix against its
// activations, up to 4 experts' loads in flight at once, then adds their weighted sum, in
// slot order, to the residual stream. Row decoding is row_dot.cuh's. CPU reference:
// moe_ffn (engine/models/decoder.cpp).
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "route.cuh"
#include "row_dot.cuh"

namespace moepack::cuda {
namespace {

using detail::InputView;
using detail::RowSource;

constexpr int kWarps = 8;
constexpr int kMaxDownBatch = 4;   // experts whose down rows one warp reads at once (8: more registers, no faster)

// A token whose experts the gate+up launch chooses itself: its router logits and rule, and
// where block (0, 0) leaves the choice for the down product.
struct SelfRouting {
    const float* logits;          // [num_experts]; null: ids are given
    detail::RouteRule rule;
    int32_t* ids;                 // [k]
    float* weights;               // [k]
};

// Expert ids[blockIdx.y]'s rows; with routing.logits, every block first routes the token
// (warp 0, the others waiting: a launch of the route kernel fewer on the token's path).
template <class Rows>
__global__ void __launch_bounds__(kWarps * 32, 6)   // <= 40 registers: a token's 8 experts' rows resident at once
    gate_up_rows(DeviceMatrix gate, int64_t up_offset, ExpertBlocks blocks, const int32_t* __restrict__ ids, InputView in,
                 float* __restrict__ act, SelfRouting routing) {
    detail::wait_for_inputs();
    const int lane = threadIdx.x % 32;
    int32_t expert;
    if (routing.logits) {
        extern __shared__ float scratch[];   // route_scratch_floats, the chosen ids [k], their weights [k]
        const int k = routing.rule.k;
        float* chosen_weights = scratch + detail::route_scratch_floats(routing.rule);
        auto* chosen_ids = reinterpret_cast<int32_t*>(chosen_weights + k);
        if (threadIdx.x < 32) detail::route_in_warp(routing.logits, routing.rule, scratch, lane, chosen_ids, chosen_weights);
        __syncthreads();
        if (blockIdx.x == 0 && blockIdx.y == 0)
            for (int j = static_cast<int>(threadIdx.x); j < k; j += static_cast<int>(blockDim.x)) {
                routing.ids[j] = chosen_ids[j];
                routing.weights[j] = chosen_weights[j];
            }
        expert = chosen_ids[blockIdx.y];
    } else {
        expert = ids[blockIdx.y];
    }
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    if (r >= gate.rows) return;
    const int64_t base = detail::block_offset(blocks, expert);
    const RowSource src[2] = {detail::moved(gate, base), detail::moved(gate, base + up_offset)};
    float acc[2][1] = {};
    Rows::template dot<2, 1>(gate, src, r, in, 0, lane, acc);
    const float g = detail::warp_sum(acc[0][0]), u = detail::warp_sum(acc[1][0]);
    if (lane == 0) act[blockIdx.y * gate.rows + r] = g / (1.0f + expf(-g)) * u;
}

// x[r] += sum over j < k of weights[j] * (down_j row r . act_j), experts taken Batch at a time.
template <class Rows, int Batch>
__global__ void __launch_bounds__(kWarps * 32, 2)   // <= 128 registers: every row's warp resident at once
    down_add_rows(DeviceMatrix down, ExpertBlocks blocks, const int32_t* __restrict__ ids, const float* __restrict__ weights,
                  int k, InputView in, float* __restrict__ x) {
    detail::wait_for_inputs();
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    if (r >= down.rows) return;
    const int lane = threadIdx.x % 32;
    float sum = 0.0f;
    for (int j0 = 0; j0 < k; j0 += Batch) {
        RowSource src[Batch];
#pragma unroll
        for (int m = 0; m < Batch; ++m) src[m] = detail::moved(down, detail::block_offset(blocks, ids[j0 + m]));
        float acc[Batch][1] = {};
        Rows::template dot<Batch, 1, true>(down, src, r, in, j0, lane, acc);
#pragma unroll
        for (int m = 0; m < Batch; ++m) sum = fmaf(weights[j0 + m], detail::warp_sum(acc[m][0]), sum);
    }
    if (lane == 0) x[r] += sum;
}

// expert_gate_up's launch, the experts given (routing.logits null) or chosen in it.
void launch_gate_up(const DeviceMatrix& gate, const DeviceMatrix& up, const ExpertBlocks& blocks, const int32_t* ids, int64_t k,
                    const ProductInput& x, float* act, const SelfRouting& routing, cudaStream_t stream) {
    if (k <= 0 || gate.rows <= 0) return;
    if (k > 65535) fail("expert_gate_up: ", k, " experts in one launch");
    const auto* g = static_cast<const char*>(gate.data);
    const auto* u = static_cast<const char*>(up.data);
    const auto same_offset = [&](const void* a, const void* b) {
        return (a == nullptr) == (b == nullptr) && (a == nullptr || static_cast<const char*>(b) - u == static_cast<const char*>(a) - g);
    };
    if (up.format != gate.format || up.rows != gate.rows || up.cols != gate.cols || up.bits != gate.bits ||
        up.group_size != gate.group_size || !same_offset(gate.scales, up.scales) || !same_offset(gate.biases, up.biases))
        fail("expert_gate_up: the gate and up records are laid out differently");
    const int64_t up_offset = u - g;
    const size_t shared = routing.logits ? static_cast<size_t>(detail::route_scratch_floats(routing.rule) + 2 * k) * 4 : 0;
    if (shared > 48 * 1024) fail("expert_gate_up: routing ", routing.rule.num_experts, " experts exceeds the kernel's shared memory");
    const InputView in = detail::input_view(x, gate.cols);
    detail::with_rows(gate, blocks.stride | up_offset, x, [&](auto rows_reader) {
        using Rows = decltype(rows_reader);
        const dim3 grid(static_cast<unsigned>((gate.rows + kWarps - 1) / kWarps), static_cast<unsigned>(k));
        detail::launch(gate_up_rows<Rows>, grid, kWarps * 32, shared, stream, gate, up_offset, blocks, ids, in, act, routing);
    });
    check_launch("expert_gate_up");
}

}  // namespace

void expert_gate_up(const DeviceMatrix& gate, const DeviceMatrix& up, const ExpertBlocks& blocks, const int32_t* ids,
                    int64_t k, const ProductInput& x, float* act, cudaStream_t stream) {
    launch_gate_up(gate, up, blocks, ids, k, x, act, SelfRouting{}, stream);
}

void expert_gate_up_routed(const float* logits, int64_t num_experts, RouteFunction function, bool normalize_topk,
                           float scaling_factor, const DeviceMatrix& gate, const DeviceMatrix& up, const ExpertBlocks& blocks,
                           int64_t k, const ProductInput& x, float* act, int32_t* ids, float* weights, cudaStream_t stream) {
    const SelfRouting routing{logits, detail::route_rule(num_experts, k, function, normalize_topk, scaling_factor), ids, weights};
    launch_gate_up(gate, up, blocks, nullptr, k, x, act, routing, stream);
}

void expert_down_add(const DeviceMatrix& down, const ExpertBlocks& blocks, const int32_t* ids, const float* weights,
                     int64_t k, const ProductInput& act, float* x, cudaStream_t stream) {
    if (k <= 0 || down.rows <= 0) return;
    if (k > 65535) fail("expert_down_add: ", k, " experts in one launch");
    if (act.quantized && act.quantized->n < k) fail("expert_down_add: ", k, " experts, ", act.quantized->n, " inputs quantised");
    int batch = kMaxDownBatch;   // the largest power of two up to kMaxDownBatch dividing k
    while (k % batch) batch /= 2;
    const InputView in = detail::input_view(act, down.cols);
    detail::with_rows(down, blocks.stride, act, [&](auto rows_reader) {
        using Rows = decltype(rows_reader);
        const auto grid = static_cast<unsigned>((down.rows + kWarps - 1) / kWarps);
        const auto run = [&](auto kernel) {
            detail::launch(kernel, grid, kWarps * 32, 0, stream, down, blocks, ids, weights, static_cast<int>(k), in, x);
        };
        switch (batch) {
            case 4: run(down_add_rows<Rows, 4>); break;
            case 2: run(down_add_rows<Rows, 2>); break;
            default: run(down_add_rows<Rows, 1>); break;
        }
    });
    check_launch("expert_down_add");
}

}  // namespace moepack::cuda
