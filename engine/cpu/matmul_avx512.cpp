// AVX-512 (F, BW, VL, VNNI) kernels of the matrix products (dispatched from matmul.cpp; what
// they do not handle falls back to matmul_avx2.cpp).
//
// Decode (n < kPrefillMinInputs), affine with power-of-two group sizes of at least 32: 64
// bytes of codes per 512-bit register, split into bit planes and multiplied with the int8 copy
// of X (laid out to match, MatmulInput::xq_planes) through VPDPBUSD (u8 x s8 summed to int32
// without saturation, so 8-bit codes need no widening), one float FMA per 64 bytes; same
// formula and accuracy as the AVX2 kernel.
// Prefill (n >= kPrefillMinInputs): rows decoded to float32 as in the AVX2 kernel, then a
// 4 rows x 6 inputs register-blocked FMA kernel on 16 lanes, column tails through masks.
//
// Target attributes rather than -mavx512* for the file: see matmul_avx2.cpp.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "matmul_kernels.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "unpack_avx512.hpp"

namespace moepack::engine::detail {

namespace {

constexpr int64_t kRowBlock = 4;
constexpr int64_t kInputBlock = 6;
constexpr int64_t kColBlock = 1024;   // multiple of 32 (decode_span_avx2 on affine rows)

MOEPACK_AVX512 inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

MOEPACK_AVX512 inline __m256 half(__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

MOEPACK_AVX512 inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    const __m256 ab = _mm256_hadd_ps(half(a), half(b)), cd = _mm256_hadd_ps(half(c), half(d));
    const __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// Up to 16 bf16 values (lanes of m) as float32; the other lanes 0.
MOEPACK_AVX512 inline __m512 load_bf16x16(__mmask16 m, const uint16_t* p) {
    const __m256i v = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

// The int8 kernel: affine Bits-bit rows times inputs through their int8 plane layout
// (MatmulInput::xq_planes). Each 64-byte load of codes is split into its 8 / Bits bit planes
// with a shift and a mask (no byte shuffles), and each plane meets the matching 64 int8 values
// of an input in one VPDPBUSD. Lane k of the int32 sums covers code bytes 4k..4k+3, i.e.
// codes [4k, 4k + 4) * 8 / Bits of the span: one group per lane, whose scale (weight scale x
// input scale) multiplies the lane before it joins the float accumulator. A row is unpacked
// once per block of up to kTokenBlock inputs while it sits in L1.
constexpr int kTokenBlock = 8;
constexpr int64_t kRowTile = 8;

struct PlaneRows {
    int64_t groups, row_bytes, spans, plane_row, padded;
    __mmask64 last_mask;      // code bytes of the last span
    int group_shift;          // log2 of the group size
    __m512i lane_index;       // groups shorter than spans: the group of lane k, from the span's first group on
    float* scales;            // [kTokenBlock, padded]: weight scale x input scale per group
};

// Row r (codes, scales s, biases b) times inputs t0 .. t0 + T - 1, into y. SharedGroup: groups
// at least as long as spans (every lane of a span in one group), known when compiled.
template <int Bits, int T, bool SharedGroup>
MOEPACK_AVX512 inline void row_planes(const PlaneRows& k, const MatmulInput& in, const uint8_t* codes,
                                      const uint16_t* s, const uint16_t* b, int64_t t0, float* y, int64_t y_stride) {
    constexpr int64_t per = 8 / Bits, span = 64 * per;
    // (the stores to k.scales could alias the vectors' pointers: read those once)
    const int8_t* const xq = in.xq_planes[MatmulInput::plane_index(Bits)].data() + t0 * k.plane_row;
    const float* const x_scales = in.x_scales.data() + t0 * k.groups;
    const float* const group_sums = in.group_sums.data() + t0 * k.groups;
    // per input: the bias term sum_g bias_g * sum(x_g) as 16 lanes, and the group scales
    __m512 acc[T];
    for (int t = 0; t < T; ++t) {
        acc[t] = _mm512_setzero_ps();
        float* sc = k.scales + t * k.padded;
        const float* sx = x_scales + t * k.groups;
        const float* gs = group_sums + t * k.groups;
        for (int64_t g = 0; g < k.groups; g += 16) {
            const __mmask16 m = k.groups - g >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (k.groups - g)) - 1);
            acc[t] = _mm512_fmadd_ps(load_bf16x16(m, b + g), _mm512_maskz_loadu_ps(m, gs + g), acc[t]);
            _mm512_storeu_ps(sc + g, _mm512_mul_ps(load_bf16x16(m, s + g), _mm512_maskz_loadu_ps(m, sx + g)));
        }
    }
    const __m512i low_bits = _mm512_set1_epi8(static_cast<char>((1 << Bits) - 1));
    for (int64_t p = 0; p < k.spans; ++p) {
        const __m512i v = p + 1 < k.spans ? _mm512_loadu_si512(codes + p * 64)
                                          : _mm512_maskz_loadu_epi8(k.last_mask, codes + p * 64);
        __m512i plane[per];
        for (int i = 0; i < per; ++i)
            plane[i] = Bits == 8 ? v : _mm512_and_si512(_mm512_srli_epi16(v, Bits * i), low_bits);
        const int64_t g0 = (p * span) >> k.group_shift;   // G is a power of two: no division
        for (int t = 0; t < T; ++t) {
            const int8_t* xs = xq + t * k.plane_row + p * span;
            __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), plane[0], _mm512_loadu_si512(xs));
            for (int i = 1; i < per; ++i) d = _mm512_dpbusd_epi32(d, plane[i], _mm512_loadu_si512(xs + i * 64));
            const float* sc = k.scales + t * k.padded + g0;
            const __m512 lane_scale = SharedGroup ? _mm512_set1_ps(*sc)
                                                  : _mm512_permutexvar_ps(k.lane_index, _mm512_loadu_ps(sc));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), lane_scale, acc[t]);
        }
    }
    for (int t = 0; t < T; ++t) y[(t0 + t) * y_stride] = hsum(acc[t]);
}

template <int Bits, bool SharedGroup>
MOEPACK_AVX512 void affine_rows_int8(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride,
                                     int64_t r0, int64_t r1) {
    constexpr int64_t per = 8 / Bits, span = 64 * per;
    PlaneRows k;
    k.groups = in.groups;
    k.row_bytes = (w.cols * Bits + 31) / 32 * 4;
    k.spans = (w.cols + span - 1) / span;
    k.plane_row = k.spans * span;
    const int64_t last_bytes = (w.cols * Bits + 7) / 8 - (k.spans - 1) * 64;
    k.last_mask = last_bytes >= 64 ? ~__mmask64{0} : (__mmask64{1} << last_bytes) - 1;
    k.group_shift = __builtin_ctzll(static_cast<unsigned long long>(w.group_size));
    alignas(64) int32_t lane_group[16];
    for (int i = 0; i < 16; ++i) lane_group[i] = static_cast<int32_t>(SharedGroup ? 0 : 4 * per * i / w.group_size);
    k.lane_index = _mm512_load_si512(lane_group);
    thread_local std::vector<float> scale_buf;
    k.padded = (k.groups + 15) / 16 * 16 + 16;
    scale_buf.resize(static_cast<size_t>(kTokenBlock * k.padded));
    k.scales = scale_buf.data();
    for (int t = 0; t < kTokenBlock; ++t)   // lanes past the last group read these: zero, not stale values
        std::fill_n(k.scales + t * k.padded + (k.groups + 15) / 16 * 16, 16, 0.0f);
    // Tiles of kRowTile rows x kTokenBlock inputs: both stay in L1 while the tile is done.
    auto rows_of_block = [&](int64_t rb, int64_t re, int64_t t, auto block) {
        constexpr int T = decltype(block)::value;
        for (int64_t r = rb; r < re; ++r) {
            if (t == 0) prefetch_row(w, r + kPrefetchRows, r1, k.row_bytes, k.groups);
            row_planes<Bits, T, SharedGroup>(k, in, reinterpret_cast<const uint8_t*>(w.data) + r * k.row_bytes,
                                w.scales + r * k.groups, w.biases + r * k.groups, t, y + r, y_stride);
        }
    };
    for (int64_t rb = r0; rb < r1; rb += kRowTile) {
        const int64_t re = std::min(r1, rb + kRowTile);
        int64_t t = 0;
        for (; t + kTokenBlock <= in.n; t += kTokenBlock) rows_of_block(rb, re, t, std::integral_constant<int, kTokenBlock>{});
        if (in.n - t >= 4) {
            rows_of_block(rb, re, t, std::integral_constant<int, 4>{});
            t += 4;
        }
        switch (in.n - t) {
            case 3: rows_of_block(rb, re, t, std::integral_constant<int, 3>{}); break;
            case 2: rows_of_block(rb, re, t, std::integral_constant<int, 2>{}); break;
            case 1: rows_of_block(rb, re, t, std::integral_constant<int, 1>{}); break;
            default: break;
        }
    }
}

template <int Bits>
MOEPACK_AVX512 bool int8_rows(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride, int64_t r0,
                              int64_t r1) {
    if (w.group_size >= 64 * (8 / Bits))
        affine_rows_int8<Bits, true>(w, in, y, y_stride, r0, r1);
    else
        affine_rows_int8<Bits, false>(w, in, y, y_stride, r0, r1);
    return true;
}

// y[t, i] (+)= rows[i] . xs[t] over kc columns, for T inputs and 4 rows (nr of them kept).
template <int T>
MOEPACK_AVX512 void block_kernel(const float* const* rows, const float* const* xs, int64_t kc, float* y,
                                 int64_t y_stride, int64_t nr, bool accumulate) {
    __m512 acc[T][4];
    for (int t = 0; t < T; ++t)
        for (int i = 0; i < 4; ++i) acc[t][i] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= kc; k += 16) {
        const __m512 w0 = _mm512_loadu_ps(rows[0] + k), w1 = _mm512_loadu_ps(rows[1] + k);
        const __m512 w2 = _mm512_loadu_ps(rows[2] + k), w3 = _mm512_loadu_ps(rows[3] + k);
        for (int t = 0; t < T; ++t) {
            const __m512 x = _mm512_loadu_ps(xs[t] + k);
            acc[t][0] = _mm512_fmadd_ps(w0, x, acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(w1, x, acc[t][1]);
            acc[t][2] = _mm512_fmadd_ps(w2, x, acc[t][2]);
            acc[t][3] = _mm512_fmadd_ps(w3, x, acc[t][3]);
        }
    }
    if (k < kc) {
        const __mmask16 m = static_cast<__mmask16>((1u << (kc - k)) - 1);
        const __m512 w0 = _mm512_maskz_loadu_ps(m, rows[0] + k), w1 = _mm512_maskz_loadu_ps(m, rows[1] + k);
        const __m512 w2 = _mm512_maskz_loadu_ps(m, rows[2] + k), w3 = _mm512_maskz_loadu_ps(m, rows[3] + k);
        for (int t = 0; t < T; ++t) {
            const __m512 x = _mm512_maskz_loadu_ps(m, xs[t] + k);
            acc[t][0] = _mm512_fmadd_ps(w0, x, acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(w1, x, acc[t][1]);
            acc[t][2] = _mm512_fmadd_ps(w2, x, acc[t][2]);
            acc[t][3] = _mm512_fmadd_ps(w3, x, acc[t][3]);
        }
    }
    for (int t = 0; t < T; ++t) {
        const __m128 s = hsum4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
        float* out = y + t * y_stride;
        if (nr == 4) {
            _mm_storeu_ps(out, accumulate ? _mm_add_ps(_mm_loadu_ps(out), s) : s);
        } else {
            alignas(16) float sums[4];
            _mm_store_ps(sums, s);
            for (int64_t i = 0; i < nr; ++i) out[i] = accumulate ? out[i] + sums[i] : sums[i];
        }
    }
}

template <int T>
MOEPACK_AVX512 void run_block(const float* const* rows, const MatmulInput& in, int64_t t, int64_t k0, int64_t kc,
                              float* y, int64_t y_stride, int64_t nr, bool accumulate) {
    const float* xs[T];
    for (int j = 0; j < T; ++j) xs[j] = in.x + (t + j) * in.cols + k0;
    block_kernel<T>(rows, xs, kc, y + t * y_stride, y_stride, nr, accumulate);
}

MOEPACK_AVX512 void prefill_rows(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride,
                                 int64_t r0, int64_t r1) {
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(kRowBlock * kColBlock));
    for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
        const int64_t nr = std::min(kRowBlock, r1 - rb);
        const float* rows[4];
        for (int64_t i = 0; i < 4; ++i) rows[i] = buf.data() + std::min(i, nr - 1) * kColBlock;
        float* yb = y + rb;
        for (int64_t k0 = 0; k0 < w.cols; k0 += kColBlock) {
            const int64_t kc = std::min(kColBlock, w.cols - k0);
            for (int64_t i = 0; i < nr; ++i) decode_span_avx2(w, rb + i, k0, kc, buf.data() + i * kColBlock);
            const bool acc = k0 > 0;
            int64_t t = 0;
            for (; t + kInputBlock <= in.n; t += kInputBlock) run_block<6>(rows, in, t, k0, kc, yb, y_stride, nr, acc);
            switch (in.n - t) {
                case 5: run_block<5>(rows, in, t, k0, kc, yb, y_stride, nr, acc); break;
                case 4: run_block<4>(rows, in, t, k0, kc, yb, y_stride, nr, acc); break;
                case 3: run_block<3>(rows, in, t, k0, kc, yb, y_stride, nr, acc); break;
                case 2: run_block<2>(rows, in, t, k0, kc, yb, y_stride, nr, acc); break;
                case 1: run_block<1>(rows, in, t, k0, kc, yb, y_stride, nr, acc); break;
                default: break;
            }
        }
    }
}

}  // namespace

MOEPACK_AVX512 bool matmul_rows_avx512(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride,
                                       int64_t row_begin, int64_t row_end) {
    const bool affine = w.format == WeightFormat::affine;
    if (affine && (!int8_group_ok(w.group_size) || (w.bits != 2 && w.bits != 4 && w.bits != 8))) return false;
    // MatmulInput::prepare() chose: int8 planes (decode, small batches) or whole-row decoding
    if (affine && in.group == w.group_size && !in.xq_planes[MatmulInput::plane_index(w.bits)].empty()) {
        switch (w.bits) {
            case 2: return int8_rows<2>(w, in, y, y_stride, row_begin, row_end);
            case 4: return int8_rows<4>(w, in, y, y_stride, row_begin, row_end);
            default: return int8_rows<8>(w, in, y, y_stride, row_begin, row_end);
        }
    }
    if (in.n < kPrefillMinInputs) return false;   // 16-bit and f32 decode: the AVX2 kernel is as fast
    prefill_rows(w, in, y, y_stride, row_begin, row_end);
    return true;
}

}  // namespace moepack::engine::detail

#else  // not x86-64: no AVX-512 kernels

namespace moepack::engine::detail {
bool matmul_rows_avx512(const WeightMatrix&, const MatmulInput&, float*, int64_t, int64_t, int64_t) { return false; }
}  // namespace moepack::engine::detail

#endif
