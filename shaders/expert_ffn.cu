// The routed experts of one decode token, their ids (and cache slots) read on the GPU: expert_gate_up computes
// each chosen expert's gate and up rows together (one warp per row of one expert, the two
// rows' loads in flight at once) and stores silu(gate) * up; expert_down_add computes the
// down rows of every chosen expert for a few output rows per block and adds their weighted
// sum, in slot order, to the residual stream. Row decoding is row_dot.cuh's. CPU reference:
// moe_ffn (engine/models/decoder.cpp).
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "row_dot.cuh"

namespace moepack::cuda {
namespace {

using detail::InputView;
using detail::RowSource;

constexpr int kWarps = 8;
// Down rows per block: enough (row, expert) products for every warp twice.
constexpr int kDownProducts = 2 * kWarps;
constexpr int64_t kMaxExperts = 64;

template <class Rows>
__global__ void __launch_bounds__(kWarps * 32)
    gate_up_rows(DeviceMatrix gate, int64_t up_offset, ExpertBlocks blocks, const int32_t* __restrict__ ids, InputView in,
                 float* __restrict__ act) {
    detail::wait_for_inputs();
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    if (r >= gate.rows) return;
    const int lane = threadIdx.x % 32;
    const int64_t base = detail::block_offset(blocks, ids[blockIdx.y]);
    const RowSource src[2] = {detail::moved(gate, base), detail::moved(gate, base + up_offset)};
    float acc[2][1] = {};
    Rows::template dot<2, 1>(gate, src, r, in, 0, lane, acc);
    const float g = detail::warp_sum(acc[0][0]), u = detail::warp_sum(acc[1][0]);
    if (lane == 0) act[blockIdx.y * gate.rows + r] = g / (1.0f + expf(-g)) * u;
}

template <class Rows>
__global__ void __launch_bounds__(kWarps * 32)
    down_add_rows(DeviceMatrix down, ExpertBlocks blocks, const int32_t* __restrict__ ids, const float* __restrict__ weights,
                  int k, int rows_per_block, InputView in, float* __restrict__ x) {
    detail::wait_for_inputs();
    __shared__ float dots[kDownProducts + kMaxExperts];
    const int64_t r0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
    const int lane = threadIdx.x % 32;
    for (int item = threadIdx.x / 32; item < rows_per_block * k; item += kWarps) {
        const int64_t r = r0 + item / k;
        const int j = item % k;
        if (r >= down.rows) continue;
        const RowSource src[1] = {detail::moved(down, detail::block_offset(blocks, ids[j]))};
        float acc[1][1] = {};
        Rows::template dot<1, 1>(down, src, r, in, j, lane, acc);
        const float s = detail::warp_sum(acc[0][0]);
        if (lane == 0) dots[item] = s;
    }
    __syncthreads();
    const int64_t r = r0 + threadIdx.x;
    if (threadIdx.x >= rows_per_block || r >= down.rows) return;
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum = fmaf(weights[j], dots[threadIdx.x * k + j], sum);
    x[r] += sum;
}

}  // namespace

void expert_gate_up(const DeviceMatrix& gate, const DeviceMatrix& up, const ExpertBlocks& blocks, const int32_t* ids,
                    int64_t k, const ProductInput& x, float* act, cudaStream_t stream) {
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
    const InputView in = detail::input_view(x, gate.cols);
    detail::with_rows(gate, blocks.stride | up_offset, x, [&](auto rows_reader) {
        using Rows = decltype(rows_reader);
        const dim3 grid(static_cast<unsigned>((gate.rows + kWarps - 1) / kWarps), static_cast<unsigned>(k));
        detail::launch(gate_up_rows<Rows>, grid, kWarps * 32, 0, stream, gate, up_offset, blocks, ids, in, act);
    });
    check_launch("expert_gate_up");
}

void expert_down_add(const DeviceMatrix& down, const ExpertBlocks& blocks, const int32_t* ids, const float* weights,
                     int64_t k, const ProductInput& act, float* x, cudaStream_t stream) {
    if (k <= 0 || down.rows <= 0) return;
    if (k > kMaxExperts) fail("expert_down_add: ", k, " experts per token, the kernel takes up to ", kMaxExperts);
    if (act.quantized && act.quantized->n < k) fail("expert_down_add: ", k, " experts, ", act.quantized->n, " inputs quantised");
    const int rows_per_block = static_cast<int>(std::max<int64_t>(1, kDownProducts / k));
    const InputView in = detail::input_view(act, down.cols);
    detail::with_rows(down, blocks.stride, act, [&](auto rows_reader) {
        using Rows = decltype(rows_reader);
        const auto grid = static_cast<unsigned>((down.rows + rows_per_block - 1) / rows_per_block);
        detail::launch(down_add_rows<Rows>, grid, kWarps * 32, 0, stream, down, blocks, ids, weights, static_cast<int>(k), rows_per_block,
                                                                in, x);
    });
    check_launch("expert_down_add");
}

}  // namespace moepack::cuda
