// Prompt products on the tensor cores: Y = X . W^T for affine weights (2/4/8-bit codes)
// against inputs quantised to int8 per group (QuantizedInput), by mma.sync m16n8k32
// (unsigned codes x signed inputs, int32 sums), each 32-code step folded into float32 as
// scale_w * scale_x * sum(q * xq), plus bias_w * sum(x) once per group — the integer sums the
// decode kernels and the CPU's int8 kernels compute. The product is grouped: problem e
// (an expert) reads expert e's matrix (ExpertBlocks) and the rows of X its row list names
// (RowGroups); a block takes one tile of one problem's rows, so a layer's routed experts are
// one launch whatever the routing, its grid as large as the rows need.
// Block tile 64 weight rows x 32 input rows, 4 warps of 32 x 16; tiles staged in shared
// memory. Modes: store, add to Y, or SwiGLU of a gate/up pair (two matrices, one tile each).
// CPU reference: the int8 kernels of engine/cpu/matmul*.cpp (the same integer sums).
#include <algorithm>

#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "row_dot.cuh"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTileRows = 64, kTileInputs = 32, kTileCodes = 64;   // codes per stage: two mma steps

struct InputRows {
    const int8_t* values;
    const float* scales;
    const float* sums;
    int64_t padded, groups;
};

__device__ inline void mma_u8s8(const uint32_t (&a)[4], const int (&b)[2], int (&c)[4]) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <int Bits, int Mats>
__global__ void __launch_bounds__(kThreads)
    gemm_tiles(DeviceMatrix w, ExpertBlocks blocks, int64_t pair_offset, InputRows x, RowGroups groups, float* __restrict__ y,
               int mode) {
    detail::wait_for_inputs();
    constexpr int kPlanes = 8 / Bits, kWords = kTileCodes * Bits / 32;   // code words per row per stage
    constexpr uint32_t kMask = Bits == 8 ? 0xffffffffu : Bits == 4 ? 0x0f0f0f0fu : 0x03030303u;
    __shared__ uint32_t ws[Mats][kTileRows][kWords + 1];
    __shared__ int xs[kTileInputs][kTileCodes / 4 + 1];
    __shared__ float w_scale[Mats][kTileRows][2], w_bias[Mats][kTileRows][2], x_scale[kTileInputs][2], x_sum[kTileInputs][2];
    __shared__ int64_t row_of[kTileInputs];

    // blockIdx.y: a tile of one problem's rows (tiles numbers them per problem)
    int64_t e = 0, begin = 0, count = groups.count, n0 = static_cast<int64_t>(blockIdx.y) * kTileInputs;
    if (groups.order) {
        const int t = static_cast<int>(blockIdx.y);
        int lo = 0, hi = static_cast<int>(groups.problems);   // tiles[lo] <= t < tiles[hi]
        if (t >= groups.tiles[hi]) return;
        while (hi - lo > 1) {
            const int mid = (lo + hi) / 2;
            (groups.tiles[mid] <= t ? lo : hi) = mid;
        }
        e = lo;
        begin = groups.offsets[e];
        count = groups.offsets[e + 1] - begin;
        n0 = static_cast<int64_t>(t - groups.tiles[e]) * kTileInputs;
    }
    const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
    if (n0 >= count) return;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, gid = lane / 4, tig = lane % 4;
    detail::RowSource src[Mats];
    const int64_t base = detail::block_offset(blocks, e);
    src[0] = detail::moved(w, base);
    if constexpr (Mats == 2) src[1] = detail::moved(w, base + pair_offset);
    for (int i = tid; i < kTileInputs; i += kThreads) {
        const int64_t idx = n0 + i;
        row_of[i] = idx < count ? (groups.order ? groups.order[begin + idx] : idx) : -1;
    }
    float acc[Mats][2][2][4] = {};   // [matrix][m16 tile][n8 tile][fragment]
    const int64_t codes = w.row_words * (32 / Bits);
    for (int64_t k0 = 0; k0 < codes; k0 += kTileCodes) {
        __syncthreads();
        for (int i = tid; i < Mats * kTileRows * kWords; i += kThreads) {
            const int mat = i / (kTileRows * kWords), r = i / kWords % kTileRows, wd = i % kWords;
            const int64_t row = m0 + r, word = k0 * Bits / 32 + wd;
            ws[mat][r][wd] = row < w.rows && word < w.row_words
                                 ? __ldg(reinterpret_cast<const uint32_t*>(src[mat].data) + row * w.row_words + word)
                                 : 0u;
        }
        for (int i = tid; i < Mats * kTileRows * 2; i += kThreads) {
            const int mat = i / (kTileRows * 2), r = i / 2 % kTileRows, step = i % 2;
            const int64_t row = m0 + r, c = k0 + 32 * step, g = c / w.group_size;
            const bool live = row < w.rows && c < codes;
            w_scale[mat][r][step] = live ? detail::bf16_to_float(__ldg(src[mat].scales + row * w.groups + g)) : 0.0f;
            w_bias[mat][r][step] = live && c % w.group_size == 0 ? detail::bf16_to_float(__ldg(src[mat].biases + row * w.groups + g)) : 0.0f;
        }
        __syncthreads();   // row_of ready (first stage)
        for (int i = tid; i < kTileInputs * (kTileCodes / 4); i += kThreads) {
            const int n = i / (kTileCodes / 4), q = i % (kTileCodes / 4);
            const int64_t p = row_of[n];
            xs[n][q] = p >= 0 && k0 + 4 * q < x.padded
                           ? __ldg(reinterpret_cast<const int*>(x.values + (p / groups.input_div) * x.padded + k0) + q)
                           : 0;
        }
        for (int i = tid; i < kTileInputs * 2; i += kThreads) {
            const int n = i / 2, step = i % 2;
            const int64_t p = row_of[n], c = k0 + 32 * step, g = c / w.group_size;
            const bool live = p >= 0 && c < codes;
            const int64_t at = (p / groups.input_div) * x.groups + g;
            x_scale[n][step] = live ? __ldg(x.scales + at) : 0.0f;
            x_sum[n][step] = live && c % w.group_size == 0 ? __ldg(x.sums + at) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int step = 0; step < 2; ++step) {
            int b[2][2];
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
                const int n = (warp / 2) * 16 + nt * 8 + gid;
                b[nt][0] = xs[n][step * 8 + tig];
                b[nt][1] = xs[n][step * 8 + 4 + tig];
            }
#pragma unroll
            for (int mat = 0; mat < Mats; ++mat)
#pragma unroll
                for (int mt = 0; mt < 2; ++mt) {
                    const int r = (warp % 2) * 32 + mt * 16 + gid;
                    uint32_t a[4];
#pragma unroll
                    for (int half = 0; half < 2; ++half) {
                        const int quad = half * 4 + tig, word = step * Bits + quad / kPlanes;
                        const int shift = Bits * (quad % kPlanes);
                        a[2 * half] = (ws[mat][r][word] >> shift) & kMask;
                        a[2 * half + 1] = (ws[mat][r + 8][word] >> shift) & kMask;
                    }
#pragma unroll
                    for (int nt = 0; nt < 2; ++nt) {
                        int c[4] = {0, 0, 0, 0};
                        mma_u8s8(a, b[nt], c);
                        const int n = (warp / 2) * 16 + nt * 8 + tig * 2;
#pragma unroll
                        for (int f = 0; f < 4; ++f) {
                            const int rr = r + (f / 2) * 8, nn = n + f % 2;
                            acc[mat][mt][nt][f] = fmaf(w_scale[mat][rr][step] * x_scale[nn][step], static_cast<float>(c[f]),
                                                       fmaf(w_bias[mat][rr][step], x_sum[nn][step], acc[mat][mt][nt][f]));
                        }
                    }
                }
        }
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
            for (int f = 0; f < 4; ++f) {
                const int64_t r = m0 + (warp % 2) * 32 + mt * 16 + gid + (f / 2) * 8;
                const int n = (warp / 2) * 16 + nt * 8 + tig * 2 + f % 2;
                const int64_t p = row_of[n];
                if (p < 0 || r >= w.rows) continue;
                float* out = y + p * w.rows + r;
                const float v = acc[0][mt][nt][f];
                if constexpr (Mats == 2) {
                    *out = v / (1.0f + expf(-v)) * acc[Mats - 1][mt][nt][f];
                } else {
                    *out = mode == 1 ? *out + v : v;
                }
            }
}

template <int Mats>
void launch(const DeviceMatrix& w, const ExpertBlocks& blocks, int64_t pair_offset, const QuantizedInput& x,
            const RowGroups& groups, float* y, int mode, cudaStream_t stream) {
    const InputRows in{x.values, x.scales, x.sums, x.padded(), x.groups};
    // grouped: at most ceil(count / tile) tiles plus one partial tile per non-empty problem
    const int64_t tiles = (groups.count + kTileInputs - 1) / kTileInputs +
                          (groups.order ? std::min(groups.problems, groups.count) : 0);
    const dim3 grid(static_cast<unsigned>((w.rows + kTileRows - 1) / kTileRows), static_cast<unsigned>(tiles));
    switch (w.bits) {
        case 2: detail::launch(gemm_tiles<2, Mats>, grid, kThreads, 0, stream, w, blocks, pair_offset, in, groups, y, mode); break;
        case 4: detail::launch(gemm_tiles<4, Mats>, grid, kThreads, 0, stream, w, blocks, pair_offset, in, groups, y, mode); break;
        case 8: detail::launch(gemm_tiles<8, Mats>, grid, kThreads, 0, stream, w, blocks, pair_offset, in, groups, y, mode); break;
        default: fail("gemm: affine weights of ", w.bits, " bits");
    }
    check_launch("gemm");
}

constexpr int kGroupThreads = 1024;

// offsets [E + 1] and order [n * k] of the (token, slot) pairs p = t * k + j grouped by
// expert, and tiles [E + 1], the prefix sums of each expert's gemm row tiles.
__global__ void __launch_bounds__(kGroupThreads)
    group_pairs(const int32_t* __restrict__ experts, int64_t pairs, int num_experts, int32_t* __restrict__ offsets,
                int32_t* __restrict__ order, int32_t* __restrict__ tiles) {
    detail::wait_for_inputs();
    extern __shared__ int counts[];   // [num_experts], then cursors [num_experts]
    int* cursor = counts + num_experts;
    for (int e = threadIdx.x; e < num_experts; e += kGroupThreads) counts[e] = 0;
    __syncthreads();
    for (int64_t p = threadIdx.x; p < pairs; p += kGroupThreads) atomicAdd(&counts[experts[p]], 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        int total = 0, tile = 0;
        for (int e = 0; e < num_experts; ++e) {
            offsets[e] = total;
            tiles[e] = tile;
            cursor[e] = total;
            total += counts[e];
            tile += (counts[e] + kTileInputs - 1) / kTileInputs;
        }
        offsets[num_experts] = total;
        tiles[num_experts] = tile;
    }
    __syncthreads();
    for (int64_t p = threadIdx.x; p < pairs; p += kGroupThreads) order[atomicAdd(&cursor[experts[p]], 1)] = static_cast<int32_t>(p);
}

constexpr int kCombineThreads = 256;

__global__ void combine_pairs(float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ weights, int64_t n,
                              int64_t k, int64_t hidden) {
    detail::wait_for_inputs();
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kCombineThreads + threadIdx.x;
    if (i >= n * hidden) return;
    const int64_t t = i / hidden, c = i % hidden;
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) sum = fmaf(weights[t * k + j], y[(t * k + j) * hidden + c], sum);
    x[i] += sum;
}

void check_groups(const RowGroups& groups, const char* what) {
    if (groups.order && (!groups.offsets || !groups.tiles)) fail(what, ": grouped rows need offsets and tiles (group_by_expert)");
    if (groups.count > 65535 * int64_t{kTileInputs} - groups.problems || groups.problems > 65535)
        fail(what, ": ", groups.count, " rows of ", groups.problems, " problems in one launch");
}

}  // namespace

void gemm(const DeviceMatrix& w, const ExpertBlocks& blocks, const QuantizedInput& x, const RowGroups& groups, float* y,
          GemvOutput output, cudaStream_t stream) {
    if (w.rows <= 0 || groups.count <= 0) return;
    if (w.format != DeviceFormat::affine) fail("gemm: the tensor-core product takes affine weights");
    if (x.bits != w.bits || x.group_size != w.group_size || x.cols != w.cols)
        fail("gemm: ", w.bits, "-bit weights (group ", w.group_size, ", ", w.cols, " columns) need their input quantised for them");
    check_groups(groups, "gemm");
    launch<1>(w, blocks, 0, x, groups, y, output == GemvOutput::add ? 1 : 0, stream);
}

void gemm_swiglu(const DeviceMatrix& gate, const DeviceMatrix& up, const ExpertBlocks& blocks, const QuantizedInput& x,
                 const RowGroups& groups, float* act, cudaStream_t stream) {
    if (gate.rows <= 0 || groups.count <= 0) return;
    if (gate.format != DeviceFormat::affine || up.format != DeviceFormat::affine || up.rows != gate.rows ||
        up.cols != gate.cols || up.bits != gate.bits || up.group_size != gate.group_size ||
        reinterpret_cast<const char*>(up.scales) - static_cast<const char*>(up.data) !=
            reinterpret_cast<const char*>(gate.scales) - static_cast<const char*>(gate.data))
        fail("gemm_swiglu: the gate and up records are laid out differently");
    if (x.bits != gate.bits || x.group_size != gate.group_size || x.cols != gate.cols)
        fail("gemm_swiglu: the input is not quantised for the weights");
    check_groups(groups, "gemm_swiglu");
    const int64_t pair_offset = static_cast<const char*>(up.data) - static_cast<const char*>(gate.data);
    launch<2>(gate, blocks, pair_offset, x, groups, act, 0, stream);
}

void group_by_expert(const int32_t* experts, int64_t n, int64_t k, int64_t num_experts, int32_t* offsets, int32_t* order,
                     int32_t* tiles, cudaStream_t stream) {
    if (n <= 0) return;
    const auto shared = static_cast<size_t>(2 * num_experts) * sizeof(int);
    if (shared > 48 * 1024) fail("group_by_expert: ", num_experts, " experts");
    detail::launch(group_pairs, 1, kGroupThreads, shared, stream, experts, n * k, static_cast<int>(num_experts), offsets, order, tiles);
    check_launch("group_by_expert");
}

void combine_experts(float* x, const float* y, const float* weights, int64_t n, int64_t k, int64_t hidden, cudaStream_t stream) {
    if (n <= 0 || hidden <= 0) return;
    detail::launch(combine_pairs, static_cast<unsigned>((n * hidden + kCombineThreads - 1) / kCombineThreads), kCombineThreads, 0, stream,
        x, y, weights, n, k, hidden);
    check_launch("combine_experts");
}

}  // namespace moepack::cuda
