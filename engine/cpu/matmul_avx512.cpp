// AVX-512 (F, BW, VL, VNNI) kernels of the matrix products (dispatched from matmul.cpp; what
// they do not handle falls back to matmul_avx2.cpp).
//
// Decode (n < kPrefillMinInputs), affine with group sizes that are multiples of 64: 64 codes
// per 512-bit register, integer dot products with the int8 copy of X through VPDPBUSD (u8 x
// s8 summed to int32 without saturation, so 8-bit codes need no widening), one float FMA per
// group; same formula and accuracy as the AVX2 kernel.
// Prefill (n >= kPrefillMinInputs): rows decoded to float32 as in the AVX2 kernel, then a
// 4 rows x 6 inputs register-blocked FMA kernel on 16 lanes, column tails through masks.
//
// Target attributes rather than -mavx512* for the file: see matmul_avx2.cpp.
#include <algorithm>
#include <cstring>
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

MOEPACK_AVX512 inline __m256 load_bf16x8(const uint16_t* p) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

// Integer dot product of `chunks` chunks of 64 codes (and a partial one of `tail` codes) with
// int8 X, as 16 int32 partial sums.
template <int Bits>
MOEPACK_AVX512 inline __m512i group_dot(const uint8_t* codes, const int8_t* xq, int64_t chunks, int64_t tail) {
    constexpr int64_t bytes = Bits * 8;
    __m512i acc = _mm512_setzero_si512();
    for (int64_t i = 0; i < chunks; ++i)
        acc = _mm512_dpbusd_epi32(acc, unpack64<Bits>(codes + i * bytes), _mm512_loadu_si512(xq + i * 64));
    if (tail > 0)
        acc = _mm512_dpbusd_epi32(acc, unpack64_tail<Bits>(codes + chunks * bytes, tail),
                                  _mm512_loadu_si512(xq + chunks * 64));
    return acc;
}

template <int Bits>
MOEPACK_AVX512 float affine_row_int8(const WeightMatrix& w, int64_t r, const MatmulInput& in, int64_t t) {
    const int64_t G = w.group_size, groups = in.groups;
    const int64_t row_bytes = (w.cols * Bits + 31) / 32 * 4;
    const uint8_t* codes = reinterpret_cast<const uint8_t*>(w.data) + r * row_bytes;
    const uint16_t* s = w.scales + r * groups;
    const uint16_t* b = w.biases + r * groups;
    const int8_t* xq = in.xq.data() + t * groups * G;
    const float* sx = in.x_scales.data() + t * groups;
    const float* gs = in.group_sums.data() + t * groups;

    __m256 bacc = _mm256_setzero_ps();
    int64_t g = 0;
    for (; g + 8 <= groups; g += 8) bacc = _mm256_fmadd_ps(load_bf16x8(b + g), _mm256_loadu_ps(gs + g), bacc);
    __m128 b4 = _mm_add_ps(_mm256_castps256_ps128(bacc), _mm256_extractf128_ps(bacc, 1));
    b4 = _mm_add_ps(b4, _mm_movehl_ps(b4, b4));
    float bias_term = _mm_cvtss_f32(_mm_add_ss(b4, _mm_movehdup_ps(b4)));
    for (; g < groups; ++g) bias_term += bf16f(b[g]) * gs[g];

    const int64_t full = w.cols / G, chunks = G / 64;
    const int64_t group_bytes = G * Bits / 8;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    g = 0;
    for (; g + 2 <= full; g += 2) {
        const __m512i d0 = group_dot<Bits>(codes + g * group_bytes, xq + g * G, chunks, 0);
        const __m512i d1 = group_dot<Bits>(codes + (g + 1) * group_bytes, xq + (g + 1) * G, chunks, 0);
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_set1_ps(bf16f(s[g]) * sx[g]), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_set1_ps(bf16f(s[g + 1]) * sx[g + 1]), acc1);
    }
    for (; g < groups; ++g) {
        const int64_t m = std::min(G, w.cols - g * G);
        const __m512i d = group_dot<Bits>(codes + g * group_bytes, xq + g * G, m / 64, m % 64);
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_set1_ps(bf16f(s[g]) * sx[g]), acc0);
    }
    return hsum(_mm512_add_ps(acc0, acc1)) + bias_term;
}

template <int Bits>
MOEPACK_AVX512 void affine_rows_int8(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride,
                                     int64_t r0, int64_t r1) {
    const int64_t row_bytes = (w.cols * Bits + 31) / 32 * 4, groups = in.groups;
    for (int64_t r = r0; r < r1; ++r) {
        prefetch_row(w, r + kPrefetchRows, r1, row_bytes, groups);
        for (int64_t t = 0; t < in.n; ++t) y[t * y_stride + r] = affine_row_int8<Bits>(w, r, in, t);
    }
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
    if (in.n >= kPrefillMinInputs) {
        prefill_rows(w, in, y, y_stride, row_begin, row_end);
        return true;
    }
    // 16-bit and f32 decode is bound by memory bandwidth: the AVX2 kernel does as well.
    if (!affine || w.group_size % 64 != 0 || in.group != w.group_size || in.xq.empty()) return false;
    switch (w.bits) {
        case 2: affine_rows_int8<2>(w, in, y, y_stride, row_begin, row_end); return true;
        case 4: affine_rows_int8<4>(w, in, y, y_stride, row_begin, row_end); return true;
        default: affine_rows_int8<8>(w, in, y, y_stride, row_begin, row_end); return true;
    }
}

}  // namespace moepack::engine::detail

#else  // not x86-64: no AVX-512 kernels

namespace moepack::engine::detail {
bool matmul_rows_avx512(const WeightMatrix&, const MatmulInput&, float*, int64_t, int64_t, int64_t) { return false; }
}  // namespace moepack::engine::detail

#endif
