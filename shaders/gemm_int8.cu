// Prompt products on the tensor cores: Y = X . W^T for affine weights (2/4/8-bit codes)
// against inputs quantised to int8 per group (QuantizedInput), by mma.sync m16n8k32
// (unsigned codes x signed inputs, int32 sums); the integer sums of each weight group are
// folded into float32 once, as scale_w * scale_x * sum(q * xq) + bias_w * sum(x) — the
// integer sums the decode kernels and the CPU's int8 kernels compute. The product is
// grouped: problem e (an expert) reads expert e's matrix (ExpertBlocks) and the rows of X
// its row list names (RowGroups); a block takes one tile of one problem's rows, so a layer's
// routed experts are one launch whatever the routing, its grid as large as the rows need.
// Block tile 64 weight rows x 32 input rows, 4 warps of 32 x 16. The codes and inputs of
// 128 columns at a time go through a ring of kStages shared-memory stages filled by cp.async,
// so that the loads of later stages are in flight while a stage is multiplied; the scales,
// biases and group sums of 16 groups at a time (each row's run read whole) go through two
// windows, loaded with the stage where they start.
// Modes: store, add to Y, or SwiGLU of a gate/up pair (two matrices, one tile each).
// CPU reference: the int8 kernels of engine/cpu/matmul*.cpp (the same integer sums).
#include <algorithm>

#include "async_copy.cuh"
#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "row_dot.cuh"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTileRows = 64, kTileInputs = 32, kTileCodes = 128;   // codes per stage
constexpr int kSteps = kTileCodes / 32;                              // mma steps per stage
constexpr int kStages = 3;
// blocks resident per SM: registers capped at 168 for a gate/up pair, 128 for one matrix (no spills)
constexpr int blocks_per_sm(int mats) { return mats == 2 ? 3 : 4; }
constexpr int kInputWords = kTileCodes / 4 + 4;   // a stage's int8 inputs per row, padded 16 bytes (banks)

struct InputRows {
    const int8_t* values;
    const float* scales;
    const float* sums;
    int64_t padded, groups;
};

// How the weight codes can be copied: 16 bytes at a time when rows, blocks and base allow.
struct CopyShape {
    bool wide;
    int fold_steps;   // mma steps of 32 codes per weight group (1, 2 or 4: groups of 32, 64, 128)
};

__device__ inline void mma_u8s8(const uint32_t (&a)[4], const int (&b)[2], int (&c)[4]) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// One stage of the ring in shared memory.
template <int Bits, int Mats>
struct alignas(16) Stage {
    static constexpr int kWords = kTileCodes * Bits / 32;   // code words per row
    static constexpr int kRowWords = kWords + 4;             // padded 16 bytes (banks)
    uint32_t w[Mats][kTileRows][kRowWords];
    int x[kTileInputs][kInputWords];
};

// The scales of kWindowGroups groups from group window * kWindowGroups on. Weights: each
// row's bf16 scales (biases) as the aligned 32-bit words covering them, the first value in
// the high half of word 0 when the row's first index is odd.
constexpr int kWindowGroups = 16;
template <int Mats>
struct alignas(16) ScaleWindow {
    static constexpr int kWords = kWindowGroups / 2 + 1;
    uint32_t w_scale[Mats][kTileRows][kWords], w_bias[Mats][kTileRows][kWords];
    float x_scale[kTileInputs][kWindowGroups + 1], x_sum[kTileInputs][kWindowGroups + 1];   // padded (banks)
};

// The bf16 value of an array starting 4-byte aligned, from its aligned word: the high half
// at an odd index.
__device__ inline float bf16_in_word(uint32_t word, bool odd) {
    return detail::bf16_to_float(static_cast<uint16_t>(odd ? word >> 16 : word & 0xffffu));
}

template <int Bits, int Mats>
__global__ void __launch_bounds__(kThreads, blocks_per_sm(Mats))
    gemm_tiles(DeviceMatrix w, ExpertBlocks blocks, int64_t pair_offset, InputRows x, RowGroups groups, float* __restrict__ y,
               int mode, CopyShape shape) {
    detail::wait_for_inputs();
    using StageT = Stage<Bits, Mats>;
    using Window = ScaleWindow<Mats>;
    constexpr int kPlanes = 8 / Bits, kWords = StageT::kWords;
    constexpr uint32_t kMask = Bits == 8 ? 0xffffffffu : Bits == 4 ? 0x0f0f0f0fu : 0x03030303u;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    auto* ring = reinterpret_cast<StageT*>(shared_bytes);
    auto* windows = reinterpret_cast<Window*>(shared_bytes + kStages * sizeof(StageT));   // [2]
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
    __syncthreads();

    // this thread's share of each stage's input copies: 16 bytes at part of row n, for i = tid + j * kThreads
    constexpr int kInputParts = kTileCodes / 16, kInputCopies = kTileInputs * kInputParts / kThreads;
    static_assert(kTileInputs * kInputParts % kThreads == 0, "input copies spread evenly over the threads");
    const int8_t* x_src[kInputCopies];
#pragma unroll
    for (int j = 0; j < kInputCopies; ++j) {
        const int i = tid + j * kThreads, n = i / kInputParts;
        x_src[j] = row_of[n] >= 0 ? x.values + (row_of[n] / groups.input_div) * x.padded + 16 * (i % kInputParts) : nullptr;
    }
    const int64_t codes = w.row_words * (32 / Bits), stages = (codes + kTileCodes - 1) / kTileCodes;

    // the scales of window wi into windows[wi % 2]
    const int64_t scale_count = w.rows * w.groups;   // values per scale (bias) array
    const auto load_window = [&](int64_t wi) {
        Window& win = windows[wi % 2];
        const int64_t g0 = wi * kWindowGroups, count = min(int64_t{kWindowGroups}, w.groups - g0);
        for (int i = tid; i < Mats * kTileRows * Window::kWords; i += kThreads) {
            const int mat = i / (kTileRows * Window::kWords), r = i / Window::kWords % kTileRows, wd = i % Window::kWords;
            const int64_t row = m0 + r, first = row * w.groups + g0, at = first / 2 * 2 + 2 * wd;   // the word's first value
            // values of the word within the row's run and the array: 2 copied, none zero-filled,
            // 1 read plainly (a 4-byte copy of the array's last value would read past its end)
            const int64_t end = min(first + count, scale_count);
            const int64_t values = row < w.rows && at < end ? min(int64_t{2}, end - at) : 0;
            if (values == 1) {
                win.w_scale[mat][r][wd] = src[mat].scales[at];
                win.w_bias[mat][r][wd] = src[mat].biases[at];
            } else {
                detail::copy4(&win.w_scale[mat][r][wd], values ? src[mat].scales + at : w.scales, values ? 4 : 0);
                detail::copy4(&win.w_bias[mat][r][wd], values ? src[mat].biases + at : w.biases, values ? 4 : 0);
            }
        }
        for (int i = tid; i < kTileInputs * kWindowGroups; i += kThreads) {
            const int n = i / kWindowGroups, j = i % kWindowGroups;
            const int64_t p = row_of[n], at = (p / groups.input_div) * x.groups + g0 + j;
            const bool in = p >= 0 && j < count;
            detail::copy4(&win.x_scale[n][j], in ? x.scales + at : x.scales, in ? 4 : 0);
            detail::copy4(&win.x_sum[n][j], in ? x.sums + at : x.sums, in ? 4 : 0);
        }
    };
    const auto load_stage = [&](int64_t s, StageT& st) {
        const int64_t k0 = s * kTileCodes, word0 = k0 * Bits / 32;
        if (shape.wide) {
            constexpr int kChunks = kWords / 4;   // 16-byte chunks per row
            for (int i = tid; i < Mats * kTileRows * kChunks; i += kThreads) {
                const int mat = i / (kTileRows * kChunks), r = i / kChunks % kTileRows, c = i % kChunks;
                const int64_t row = m0 + r, word = word0 + 4 * c;
                const bool live = row < w.rows && word < w.row_words;
                detail::copy16(&st.w[mat][r][4 * c],
                       live ? reinterpret_cast<const uint32_t*>(src[mat].data) + row * w.row_words + word : w.data, live ? 16 : 0);
            }
        } else {
            for (int i = tid; i < Mats * kTileRows * kWords; i += kThreads) {
                const int mat = i / (kTileRows * kWords), r = i / kWords % kTileRows, wd = i % kWords;
                const int64_t row = m0 + r, word = word0 + wd;
                const bool live = row < w.rows && word < w.row_words;
                detail::copy4(&st.w[mat][r][wd],
                      live ? reinterpret_cast<const uint32_t*>(src[mat].data) + row * w.row_words + word : w.data, live ? 4 : 0);
            }
        }
#pragma unroll
        for (int j = 0; j < kInputCopies; ++j) {
            const int i = tid + j * kThreads, part = i % kInputParts;
            const bool live = x_src[j] && k0 + 16 * part < x.padded;
            detail::copy16(&st.x[i / kInputParts][4 * part], live ? x_src[j] + k0 : x.values, live ? 16 : 0);
        }
        if (k0 % (kWindowGroups * w.group_size) == 0) load_window(k0 / (kWindowGroups * w.group_size));
    };

    // prologue: the first kStages - 1 stages in flight
    for (int s = 0; s < kStages - 1; ++s) {
        if (s < stages) load_stage(s, ring[s]);
        detail::commit_copies();
    }

    // the parity of this thread's weight rows' first scale index (row * groups): a window's
    // values start in the high half of its first word when odd (windows start at even groups)
    int row_odd[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) row_odd[mt][h] = static_cast<int>((m0 + (warp % 2) * 32 + mt * 16 + gid + h * 8) & w.groups & 1);
    float acc[Mats][2][2][4] = {};   // [matrix][m16 tile][n8 tile][fragment]
    int sums[Mats][2][2][4] = {};    // integer sums of the current group
    // the integer sums of group g into acc: scale_w * scale_x * sum + bias_w * sum(x)
    const auto fold = [&](int64_t g) {
        const Window& win = windows[g / kWindowGroups % 2];
        const int j = static_cast<int>(g % kWindowGroups);
        float xs[2][2], xb[2][2];
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
            for (int f = 0; f < 2; ++f) {
                const int n = (warp / 2) * 16 + nt * 8 + tig * 2 + f;
                xs[nt][f] = win.x_scale[n][j];
                xb[nt][f] = win.x_sum[n][j];
            }
#pragma unroll
        for (int mat = 0; mat < Mats; ++mat)
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int r = (warp % 2) * 32 + mt * 16 + gid + h * 8;
                    const int at = row_odd[mt][h] + j;   // the value's half-word in the row's run
                    const float ws = bf16_in_word(win.w_scale[mat][r][at / 2], at % 2 != 0);
                    const float wb = bf16_in_word(win.w_bias[mat][r][at / 2], at % 2 != 0);
#pragma unroll
                    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                        for (int f = 0; f < 2; ++f) {
                            float& a = acc[mat][mt][nt][2 * h + f];
                            a = fmaf(ws * xs[nt][f], static_cast<float>(sums[mat][mt][nt][2 * h + f]), fmaf(wb, xb[nt][f], a));
                            sums[mat][mt][nt][2 * h + f] = 0;
                        }
                }
    };

    for (int64_t s = 0; s < stages; ++s) {
        detail::wait_copies<kStages - 2>();
        __syncthreads();   // stage s is in shared memory; every thread is done with stage s - 1
        const int64_t ahead = s + kStages - 1;
        if (ahead < stages) load_stage(ahead, ring[ahead % kStages]);
        detail::commit_copies();
        const StageT& st = ring[s % kStages];
#pragma unroll
        for (int step = 0; step < kSteps; ++step) {
            int b[2][2];
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
                const int n = (warp / 2) * 16 + nt * 8 + gid;
                b[nt][0] = st.x[n][step * 8 + tig];
                b[nt][1] = st.x[n][step * 8 + 4 + tig];
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
                        a[2 * half] = (st.w[mat][r][word] >> shift) & kMask;
                        a[2 * half + 1] = (st.w[mat][r + 8][word] >> shift) & kMask;
                    }
#pragma unroll
                    for (int nt = 0; nt < 2; ++nt) mma_u8s8(a, b[nt], sums[mat][mt][nt]);
                }
            if ((step + 1) % shape.fold_steps == 0) fold((s * kTileCodes + 32 * step) / w.group_size);
        }
    }
    detail::wait_copies<0>();
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

template <int Bits, int Mats>
void launch_tiles(dim3 grid, cudaStream_t stream, const DeviceMatrix& w, const ExpertBlocks& blocks, int64_t pair_offset,
                  const InputRows& in, const RowGroups& groups, float* y, int mode, CopyShape shape) {
    constexpr size_t kShared = kStages * sizeof(Stage<Bits, Mats>) + 2 * sizeof(ScaleWindow<Mats>);
    if constexpr (kShared > 48 * 1024) {
        static const cudaError_t allowed =
            cudaFuncSetAttribute(gemm_tiles<Bits, Mats>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kShared));
        check_cuda(allowed, "gemm: shared memory");
    }
    detail::launch(gemm_tiles<Bits, Mats>, grid, kThreads, kShared, stream, w, blocks, pair_offset, in, groups, y, mode, shape);
}

template <int Mats>
void launch(const DeviceMatrix& w, const ExpertBlocks& blocks, int64_t pair_offset, const QuantizedInput& x,
            const RowGroups& groups, float* y, int mode, cudaStream_t stream) {
    const InputRows in{x.values, x.scales, x.sums, x.padded(), x.groups};
    // grouped: at most ceil(count / tile) tiles plus one partial tile per non-empty problem
    const int64_t tiles = (groups.count + kTileInputs - 1) / kTileInputs +
                          (groups.order ? std::min(groups.problems, groups.count) : 0);
    const dim3 grid(static_cast<unsigned>((w.rows + kTileRows - 1) / kTileRows), static_cast<unsigned>(tiles));
    const bool wide = reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && w.row_words % 4 == 0 && pair_offset % 16 == 0 &&
                      blocks.stride % 16 == 0;
    const CopyShape shape{wide, std::min(w.group_size, kTileCodes) / 32};
    if (reinterpret_cast<uintptr_t>(w.scales) % 4 || reinterpret_cast<uintptr_t>(w.biases) % 4 || pair_offset % 4 ||
        blocks.stride % 4)
        fail("gemm: scales and biases not 4-byte aligned");
    switch (w.bits) {
        case 2: launch_tiles<2, Mats>(grid, stream, w, blocks, pair_offset, in, groups, y, mode, shape); break;
        case 4: launch_tiles<4, Mats>(grid, stream, w, blocks, pair_offset, in, groups, y, mode, shape); break;
        case 8: launch_tiles<8, Mats>(grid, stream, w, blocks, pair_offset, in, groups, y, mode, shape); break;
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

// An mma step takes 32 codes of one group; a stage's steps fold whole groups.
void check_group_size(const DeviceMatrix& w, const char* what) {
    if (w.group_size <= 0 || w.group_size % 32 != 0 || (kTileCodes % w.group_size != 0 && w.group_size % kTileCodes != 0))
        fail(what, ": groups of ", w.group_size, " codes (expected 32, 64 or a multiple of ", kTileCodes, ")");
}

}  // namespace

void gemm(const DeviceMatrix& w, const ExpertBlocks& blocks, const QuantizedInput& x, const RowGroups& groups, float* y,
          GemvOutput output, cudaStream_t stream) {
    if (w.rows <= 0 || groups.count <= 0) return;
    if (w.format != DeviceFormat::affine) fail("gemm: the tensor-core product takes affine weights");
    if (x.bits != w.bits || x.group_size != w.group_size || x.cols != w.cols)
        fail("gemm: ", w.bits, "-bit weights (group ", w.group_size, ", ", w.cols, " columns) need their input quantised for them");
    check_groups(groups, "gemm");
    check_group_size(w, "gemm");
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
    check_group_size(gate, "gemm_swiglu");
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
