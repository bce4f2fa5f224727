// Fused dequantize-GEMV for decode: y [n, rows] = x [n, cols] . W^T with W in any pack
// encoding, decoded in registers (no dequantised copy). One warp per output row, 4 rows per
// block; the lanes walk the row's codes (or values) in 16-byte loads when the row allows it,
// each load decoded and multiplied against all n inputs, then a warp reduction. For affine
// records each word of codes lies in one group, so a word contributes
// scale * sum(q * x) + bias * sum(x). CPU reference: engine/cpu/matmul.cpp.
#include <cuda_fp16.h>

#include "cuda_check.hpp"
#include "kernels.hpp"

namespace moepack::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

__device__ inline float bf16_to_float(uint16_t v) { return __uint_as_float(static_cast<uint32_t>(v) << 16); }

__device__ inline float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

struct AffineRow {
    const uint32_t* codes;     // this row's words
    const uint16_t* scales;    // this row's groups
    const uint16_t* biases;
};

// The contribution of word `w` of an affine row to each input's dot product.
template <int N, int Bits>
__device__ inline void affine_word(uint32_t word, int64_t w, const AffineRow& row, const float* __restrict__ x,
                                   int64_t cols, int group_size, float (&acc)[N]) {
    constexpr int kCodes = 32 / Bits;
    constexpr uint32_t kMask = (1u << Bits) - 1u;
    const int64_t c0 = w * kCodes;
    const int64_t g = c0 / group_size;
    const float scale = bf16_to_float(row.scales[g]), bias = bf16_to_float(row.biases[g]);
    const int codes = cols - c0 < kCodes ? static_cast<int>(cols - c0) : kCodes;
#pragma unroll
    for (int t = 0; t < N; ++t) {
        const float* xt = x + t * cols + c0;
        float dot = 0.0f, sum = 0.0f;
        if (codes == kCodes) {
#pragma unroll
            for (int k = 0; k < kCodes; ++k) {
                const float xv = __ldg(xt + k);
                dot = fmaf(static_cast<float>((word >> (k * Bits)) & kMask), xv, dot);
                sum += xv;
            }
        } else {
            for (int k = 0; k < codes; ++k) {
                const float xv = __ldg(xt + k);
                dot = fmaf(static_cast<float>((word >> (k * Bits)) & kMask), xv, dot);
                sum += xv;
            }
        }
        acc[t] = fmaf(scale, dot, fmaf(bias, sum, acc[t]));
    }
}

template <int N, int Bits, bool Wide>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) affine_gemv(const uint32_t* __restrict__ codes,
                                                                    const uint16_t* __restrict__ scales,
                                                                    const uint16_t* __restrict__ biases, int64_t rows,
                                                                    int64_t cols, int64_t row_words, int64_t groups,
                                                                    int group_size, const float* __restrict__ x,
                                                                    float* __restrict__ y) {
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
    if (r >= rows) return;
    const int lane = threadIdx.x % 32;
    const AffineRow row{codes + r * row_words, scales + r * groups, biases + r * groups};
    float acc[N] = {};
    if (Wide) {   // row_words % 4 == 0: four words per 16-byte load
        const uint4* words = reinterpret_cast<const uint4*>(row.codes);
        for (int64_t v = lane; v < row_words / 4; v += 32) {
            const uint4 q = __ldg(words + v);
            affine_word<N, Bits>(q.x, 4 * v, row, x, cols, group_size, acc);
            affine_word<N, Bits>(q.y, 4 * v + 1, row, x, cols, group_size, acc);
            affine_word<N, Bits>(q.z, 4 * v + 2, row, x, cols, group_size, acc);
            affine_word<N, Bits>(q.w, 4 * v + 3, row, x, cols, group_size, acc);
        }
    } else {
        for (int64_t w = lane; w < row_words; w += 32) affine_word<N, Bits>(__ldg(row.codes + w), w, row, x, cols, group_size, acc);
    }
#pragma unroll
    for (int t = 0; t < N; ++t) {
        const float s = warp_sum(acc[t]);
        if (lane == 0) y[t * rows + r] = s;
    }
}

template <typename T>
__device__ inline float to_float(T v);
template <>
__device__ inline float to_float<float>(float v) { return v; }
template <>
__device__ inline float to_float<uint16_t>(uint16_t v) { return bf16_to_float(v); }
template <>
__device__ inline float to_float<__half>(__half v) { return __half2float(v); }

// Float rows (f32, bf16 as uint16_t, f16): 16-byte loads when a row is a whole number of them.
template <int N, typename T, bool Wide>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) float_gemv(const T* __restrict__ w, int64_t rows, int64_t cols,
                                                                   const float* __restrict__ x, float* __restrict__ y) {
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
    if (r >= rows) return;
    const int lane = threadIdx.x % 32;
    const T* row = w + r * cols;
    float acc[N] = {};
    constexpr int kPerLoad = 16 / sizeof(T);
    if (Wide) {
        for (int64_t v = lane; v < cols / kPerLoad; v += 32) {
            const uint4 raw = __ldg(reinterpret_cast<const uint4*>(row) + v);
            T vals[kPerLoad];
            memcpy(vals, &raw, 16);
#pragma unroll
            for (int t = 0; t < N; ++t)
#pragma unroll
                for (int k = 0; k < kPerLoad; ++k) acc[t] = fmaf(to_float(vals[k]), __ldg(x + t * cols + v * kPerLoad + k), acc[t]);
        }
    } else {
        for (int64_t c = lane; c < cols; c += 32) {
            const float wv = to_float(row[c]);
#pragma unroll
            for (int t = 0; t < N; ++t) acc[t] = fmaf(wv, __ldg(x + t * cols + c), acc[t]);
        }
    }
#pragma unroll
    for (int t = 0; t < N; ++t) {
        const float s = warp_sum(acc[t]);
        if (lane == 0) y[t * rows + r] = s;
    }
}

template <int N>
void launch(const DeviceMatrix& w, const float* x, float* y, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock)), block(kWarpsPerBlock * 32);
    const bool aligned = (reinterpret_cast<uintptr_t>(w.data) % 16) == 0;
    switch (w.format) {
        case DeviceFormat::affine: {
            const int64_t row_words = w.row_words, groups = w.groups;
            const bool wide = aligned && row_words % 4 == 0;
            const auto* codes = static_cast<const uint32_t*>(w.data);
            auto run = [&](auto kernel) {
                kernel<<<grid, block, 0, stream>>>(codes, w.scales, w.biases, w.rows, w.cols, row_words, groups, w.group_size, x, y);
            };
            switch (w.bits) {
                case 2: wide ? run(affine_gemv<N, 2, true>) : run(affine_gemv<N, 2, false>); break;
                case 4: wide ? run(affine_gemv<N, 4, true>) : run(affine_gemv<N, 4, false>); break;
                case 8: wide ? run(affine_gemv<N, 8, true>) : run(affine_gemv<N, 8, false>); break;
                default: fail("gemv: affine weights of ", w.bits, " bits");
            }
            break;
        }
        case DeviceFormat::bf16: {
            const auto* p = static_cast<const uint16_t*>(w.data);
            if (aligned && w.cols % 8 == 0) float_gemv<N, uint16_t, true><<<grid, block, 0, stream>>>(p, w.rows, w.cols, x, y);
            else float_gemv<N, uint16_t, false><<<grid, block, 0, stream>>>(p, w.rows, w.cols, x, y);
            break;
        }
        case DeviceFormat::f16: {
            const auto* p = static_cast<const __half*>(w.data);
            if (aligned && w.cols % 8 == 0) float_gemv<N, __half, true><<<grid, block, 0, stream>>>(p, w.rows, w.cols, x, y);
            else float_gemv<N, __half, false><<<grid, block, 0, stream>>>(p, w.rows, w.cols, x, y);
            break;
        }
        case DeviceFormat::f32: {
            const auto* p = static_cast<const float*>(w.data);
            if (aligned && w.cols % 4 == 0) float_gemv<N, float, true><<<grid, block, 0, stream>>>(p, w.rows, w.cols, x, y);
            else float_gemv<N, float, false><<<grid, block, 0, stream>>>(p, w.rows, w.cols, x, y);
            break;
        }
    }
    check_launch("gemv");
}

}  // namespace

void gemv(const DeviceMatrix& w, const float* x, int64_t n, float* y, cudaStream_t stream) {
    if (w.rows <= 0 || w.cols <= 0) return;
    switch (n) {
        case 1: return launch<1>(w, x, y, stream);
        case 2: return launch<2>(w, x, y, stream);
        case 3: return launch<3>(w, x, y, stream);
        case 4: return launch<4>(w, x, y, stream);
        case 5: return launch<5>(w, x, y, stream);
        case 6: return launch<6>(w, x, y, stream);
        case 7: return launch<7>(w, x, y, stream);
        case 8: return launch<8>(w, x, y, stream);
        default: fail("gemv: ", n, " inputs, expected 1 to ", kMaxGemvInputs);
    }
}

}  // namespace moepack::cuda
