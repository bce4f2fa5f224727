// The inner loop every decode product shares: one warp computes the dot products of M rows
// of a weight matrix (M matrices laid out alike, e.g. an expert's gate and up) with N input
// vectors, or of each matrix m with its own input m (PerMatrix: a token's experts' down rows
// against their activations), the row's values decoded in registers, the loads of all M
// rows in flight together. Affine rows take inputs quantised to int8
// (QuantizedInput): each 32-bit code word, masked and shifted per code plane, meets four
// inputs in one dp4a, and a group adds scale_w * scale_x * sum(q * xq) + bias_w * sum(x).
// Float rows (bf16, f16, f32) take the float inputs. Lanes walk a row in chunks of 16 bytes
// when its rows and base allow (else one word or one value), coalesced; partial sums stay
// per lane until the caller's warp reduction. Device code, included by the product kernels.
#pragma once

#include <cuda_fp16.h>

#include "kernels.hpp"

namespace moepack::cuda::detail {

__device__ inline float bf16_to_float(uint16_t v) { return __uint_as_float(static_cast<uint32_t>(v) << 16); }

__device__ inline float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Four unsigned bytes of a times four signed bytes of b, summed into c.
__device__ inline int dot4_u8_s8(uint32_t a, int b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// A product's input as the kernels read it.
struct InputView {
    const float* x;          // [n, cols] (float rows)
    const int8_t* values;    // [n, padded] (affine rows)
    const float* scales;     // [n, groups]
    const float* sums;       // [n, groups]
    int64_t cols, padded, groups;
};

inline InputView input_view(const ProductInput& in, int64_t cols) {
    InputView v{in.x, nullptr, nullptr, nullptr, cols, 0, 0};
    if (in.quantized) {
        v.values = in.quantized->values;
        v.scales = in.quantized->scales;
        v.sums = in.quantized->sums;
        v.padded = in.quantized->padded();
        v.groups = in.quantized->groups;
    }
    return v;
}

// The matrix of `w` moved by `offset` bytes (an expert's block within the table of blocks).
struct RowSource {
    const char* data;
    const uint16_t* scales;
    const uint16_t* biases;
};

__device__ inline RowSource moved(const DeviceMatrix& w, int64_t offset) {
    return RowSource{static_cast<const char*>(w.data) + offset,
                     w.scales ? reinterpret_cast<const uint16_t*>(reinterpret_cast<const char*>(w.scales) + offset) : nullptr,
                     w.biases ? reinterpret_cast<const uint16_t*>(reinterpret_cast<const char*>(w.biases) + offset) : nullptr};
}

// The matrix of `w` moved down by `rows` rows (its values, scales and biases alike).
__device__ inline RowSource rows_down(const DeviceMatrix& w, int64_t rows) {
    const auto* data = static_cast<const char*>(w.data);
    if (w.format != DeviceFormat::affine) {
        const int64_t size = w.format == DeviceFormat::f32 ? 4 : 2;
        return RowSource{data + rows * w.cols * size, nullptr, nullptr};
    }
    return RowSource{data + rows * w.row_words * 4, w.scales ? w.scales + rows * w.groups : nullptr,
                     w.biases ? w.biases + rows * w.groups : nullptr};
}

// Bytes from block 0 to expert e's block.
__device__ inline int64_t block_offset(const ExpertBlocks& b, int64_t e) {
    return (b.slot ? int64_t{__ldg(b.slot + e)} : e) * b.stride;
}

// V 32-bit words of one load.
template <int V>
struct Words {
    uint32_t w[V];
};

template <int V>
__device__ inline Words<V> load_words(const uint32_t* p) {
    Words<V> out;
    if constexpr (V == 4) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
        out.w[0] = v.x, out.w[1] = v.y, out.w[2] = v.z, out.w[3] = v.w;
    } else {
#pragma unroll
        for (int i = 0; i < V; ++i) out.w[i] = __ldg(p + i);
    }
    return out;
}

// Count int32s from p, in 16- or 8-byte loads where Count allows (p aligned to them).
template <int Count>
__device__ inline void load_ints(const int8_t* p, int (&out)[Count]) {
    if constexpr (Count % 4 == 0) {
#pragma unroll
        for (int i = 0; i < Count / 4; ++i) {
            const int4 v = __ldg(reinterpret_cast<const int4*>(p) + i);
            out[4 * i] = v.x, out[4 * i + 1] = v.y, out[4 * i + 2] = v.z, out[4 * i + 3] = v.w;
        }
    } else if constexpr (Count % 2 == 0) {
#pragma unroll
        for (int i = 0; i < Count / 2; ++i) {
            const int2 v = __ldg(reinterpret_cast<const int2*>(p) + i);
            out[2 * i] = v.x, out[2 * i + 1] = v.y;
        }
    } else {
#pragma unroll
        for (int i = 0; i < Count; ++i) out[i] = __ldg(reinterpret_cast<const int*>(p) + i);
    }
}

// Affine rows of Bits-bit codes, V code words per load (V * 32 / Bits codes, within one group).
template <int Bits, int V>
struct AffineRows {
    static constexpr int kPerWord = 32 / Bits, kPlanes = 8 / Bits, kChunkCodes = V * kPerWord;
    static constexpr uint32_t kPlaneMask = Bits == 8 ? 0xffffffffu : Bits == 4 ? 0x0f0f0f0fu : 0x03030303u;

    // acc[m][t] += row r of matrix m . input (first + t), this lane's share; PerMatrix (N 1):
    // acc[m][0] += row r of matrix m . input (first + m).
    template <int M, int N, bool PerMatrix = false>
    __device__ static void dot(const DeviceMatrix& w, const RowSource (&src)[M], int64_t r, const InputView& in, int64_t first,
                               int lane, float (&acc)[M][N]) {
        static_assert(!PerMatrix || N == 1, "one input per matrix");
        const int64_t chunks = w.row_words / V;
        for (int64_t c = lane; c < chunks; c += 32) {
            Words<V> raw[M];
#pragma unroll
            for (int m = 0; m < M; ++m)
                raw[m] = load_words<V>(reinterpret_cast<const uint32_t*>(src[m].data) + r * w.row_words + c * V);
            const int64_t code0 = c * kChunkCodes, g = code0 / w.group_size;
            const bool group_start = code0 % w.group_size == 0;
            float ws[M], wb[M];
#pragma unroll
            for (int m = 0; m < M; ++m) {
                ws[m] = bf16_to_float(__ldg(src[m].scales + r * w.groups + g));
                wb[m] = group_start ? bf16_to_float(__ldg(src[m].biases + r * w.groups + g)) : 0.0f;
            }
#pragma unroll
            for (int t = 0; t < (PerMatrix ? M : N); ++t) {   // input first + t
                int xv[V * kPlanes];
                load_ints<V * kPlanes>(in.values + (first + t) * in.padded + code0, xv);
                const float xs = __ldg(in.scales + (first + t) * in.groups + g);
                const float xsum = group_start ? __ldg(in.sums + (first + t) * in.groups + g) : 0.0f;
#pragma unroll
                for (int m = PerMatrix ? t : 0; m < (PerMatrix ? t + 1 : M); ++m) {
                    int isum = 0;
#pragma unroll
                    for (int v = 0; v < V; ++v)
#pragma unroll
                        for (int k = 0; k < kPlanes; ++k)
                            isum = dot4_u8_s8((raw[m].w[v] >> (k * Bits)) & kPlaneMask, xv[v * kPlanes + k], isum);
                    float& a = acc[m][PerMatrix ? 0 : t];
                    a = fmaf(ws[m] * xs, static_cast<float>(isum), fmaf(wb[m], xsum, a));
                }
            }
        }
    }
};

template <typename T>
__device__ inline float to_float(T v);
template <>
__device__ inline float to_float<float>(float v) { return v; }
template <>
__device__ inline float to_float<uint16_t>(uint16_t v) { return bf16_to_float(v); }
template <>
__device__ inline float to_float<__half>(__half v) { return __half2float(v); }

// Float rows (f32, bf16 as uint16_t, f16), 16 bytes per load when Wide, else one value.
template <typename T, bool Wide>
struct FloatRows {
    static constexpr int kPerChunk = Wide ? 16 / sizeof(T) : 1;

    template <int M, int N, bool PerMatrix = false>
    __device__ static void dot(const DeviceMatrix& w, const RowSource (&src)[M], int64_t r, const InputView& in, int64_t first,
                               int lane, float (&acc)[M][N]) {
        static_assert(!PerMatrix || N == 1, "one input per matrix");
        const int64_t chunks = w.cols / kPerChunk;
        for (int64_t c = lane; c < chunks; c += 32) {
            T vals[M][kPerChunk];
#pragma unroll
            for (int m = 0; m < M; ++m) {
                const T* row = reinterpret_cast<const T*>(src[m].data) + r * w.cols;
                if constexpr (Wide) {
                    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(row) + c);
                    memcpy(vals[m], &raw, 16);
                } else {
                    vals[m][0] = row[c];
                }
            }
#pragma unroll
            for (int t = 0; t < (PerMatrix ? M : N); ++t) {   // input first + t
                float xv[kPerChunk];
                const float* xp = in.x + (first + t) * in.cols + c * kPerChunk;
                if constexpr (kPerChunk % 4 == 0) {
#pragma unroll
                    for (int i = 0; i < kPerChunk / 4; ++i) {
                        const float4 v = __ldg(reinterpret_cast<const float4*>(xp) + i);
                        xv[4 * i] = v.x, xv[4 * i + 1] = v.y, xv[4 * i + 2] = v.z, xv[4 * i + 3] = v.w;
                    }
                } else {
#pragma unroll
                    for (int i = 0; i < kPerChunk; ++i) xv[i] = __ldg(xp + i);
                }
#pragma unroll
                for (int m = PerMatrix ? t : 0; m < (PerMatrix ? t + 1 : M); ++m)
#pragma unroll
                    for (int i = 0; i < kPerChunk; ++i)
                        acc[m][PerMatrix ? 0 : t] = fmaf(to_float(vals[m][i]), xv[i], acc[m][PerMatrix ? 0 : t]);
            }
        }
    }
};

// Calls run(Rows{}) with the row reader for w's encoding: 16-byte loads when every row (and
// the other matrices read alike, `offsets` being the OR of their byte offsets from w: expert
// strides, distances between products) starts on a 16-byte boundary and is a whole number
// of chunks, and the input rows are aligned alike.
template <typename Run>
void with_rows(const DeviceMatrix& w, int64_t offsets, const ProductInput& in, Run&& run) {
    const auto aligned = [&](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    switch (w.format) {
        case DeviceFormat::affine: {
            if (!in.quantized || in.quantized->group_size != w.group_size || in.quantized->bits != w.bits ||
                in.quantized->cols != w.cols)
                fail("gemv: affine ", w.bits, "-bit weights (group ", w.group_size, ", ", w.cols,
                     " columns) need their input quantised for them");
            const int per_word = 32 / w.bits;
            const bool wide = aligned(w.data) && offsets % 16 == 0 && w.row_words % 4 == 0 && w.group_size % (4 * per_word) == 0;
            switch (w.bits * 2 + (wide ? 1 : 0)) {
                case 4: run(AffineRows<2, 1>{}); break;
                case 5: run(AffineRows<2, 4>{}); break;
                case 8: run(AffineRows<4, 1>{}); break;
                case 9: run(AffineRows<4, 4>{}); break;
                case 16: run(AffineRows<8, 1>{}); break;
                case 17: run(AffineRows<8, 4>{}); break;
                default: fail("gemv: affine weights of ", w.bits, " bits");
            }
            return;
        }
        case DeviceFormat::bf16:
        case DeviceFormat::f16:
        case DeviceFormat::f32: {
            if (!in.x) fail("gemv: float weights need float inputs");
            const size_t size = w.format == DeviceFormat::f32 ? 4 : 2;
            const bool wide = aligned(w.data) && aligned(in.x) && offsets % 16 == 0 && (w.cols * size) % 16 == 0;
            if (w.format == DeviceFormat::f32)
                wide ? run(FloatRows<float, true>{}) : run(FloatRows<float, false>{});
            else if (w.format == DeviceFormat::bf16)
                wide ? run(FloatRows<uint16_t, true>{}) : run(FloatRows<uint16_t, false>{});
            else
                wide ? run(FloatRows<__half, true>{}) : run(FloatRows<__half, false>{});
            return;
        }
    }
}

}  // namespace moepack::cuda::detail
