// AVX2 + FMA + F16C kernels of the matrix products (dispatched from matmul.cpp).
//
// Decode (n < kPrefillMinInputs): affine rows as integer dot products of the unsigned codes
// with X quantised to int8 per group (MatmulInput::xq), one float FMA per group:
//   y = sum_g scale_g * x_scale_g * (q_g . xq_g) + sum_g bias_g * sum(x_g)
// 16-bit and f32 rows as float FMA dot products (float32 accuracy).
// Prefill (n >= kPrefillMinInputs): blocks of 4 rows decoded to float32 once per 1024 columns,
// then a 4 rows x 3 inputs register-blocked float FMA kernel.
//
// Functions carry target attributes instead of the file being compiled with -mavx2, so that
// inline functions from headers instantiated here stay generic (no AVX2 code can leak into
// the rest of the program through the linker's choice of one copy of an inline function).
#include <algorithm>
#include <cstring>
#include <vector>

#include "dtype.hpp"
#include "matmul_kernels.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define MOEPACK_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace moepack::engine::detail {

namespace {

constexpr int64_t kRowBlock = 4;      // prefill: rows per block
constexpr int64_t kInputBlock = 3;    // prefill: inputs per block
constexpr int64_t kColBlock = 1024;   // prefill: columns decoded at a time (multiple of 32)

inline float bf16f(uint16_t v) {
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

MOEPACK_AVX2 inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The four horizontal sums of a, b, c, d.
MOEPACK_AVX2 inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
    const __m256 abcd = _mm256_hadd_ps(ab, cd);   // per 128-bit half: a b c d partial sums
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

MOEPACK_AVX2 inline __m256 load_bf16(const uint16_t* p) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

MOEPACK_AVX2 inline __m256 load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// 32 consecutive codes (Bits * 4 bytes at p, LSB first) as 32 bytes in order.
template <int Bits>
MOEPACK_AVX2 inline __m256i unpack32(const uint8_t* p) {
    if constexpr (Bits == 8) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    } else if constexpr (Bits == 4) {
        // byte j -> 16-bit lane j; low byte keeps the low nibble, high byte gets the high one
        const __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_and_si256(_mm256_or_si256(v, _mm256_slli_epi16(v, 4)), _mm256_set1_epi8(0x0F));
    } else {
        // byte j -> 32-bit lane j; byte k of the lane gets bits 2k, 2k+1 of the byte
        const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        const __m256i s = _mm256_or_si256(_mm256_or_si256(v, _mm256_slli_epi32(v, 6)),
                                          _mm256_or_si256(_mm256_slli_epi32(v, 12), _mm256_slli_epi32(v, 18)));
        return _mm256_and_si256(s, _mm256_set1_epi8(0x03));
    }
}

// The last `count` (< 32) codes of a row, through a zeroed copy so that nothing past the row
// is read.
template <int Bits>
MOEPACK_AVX2 inline __m256i unpack32_tail(const uint8_t* p, int64_t count) {
    alignas(32) uint8_t buf[32] = {};
    std::memcpy(buf, p, static_cast<size_t>((count * Bits + 7) / 8));
    return unpack32<Bits>(buf);
}

// Integer dot product of `chunks` chunks of 32 codes with int8 X (plus a partial chunk of
// `tail` codes), as 8 int32 partial sums.
template <int Bits>
MOEPACK_AVX2 inline __m256i group_dot(const uint8_t* codes, const int8_t* xq, int64_t chunks, int64_t tail) {
    constexpr int64_t bytes = Bits * 4;
    __m256i acc = _mm256_setzero_si256();
    if constexpr (Bits == 8) {
        // u8 x s8 pairs can exceed int16 (2 * 255 * 127): widen to 16 bits and use madd
        for (int64_t i = 0; i <= chunks; ++i) {
            __m256i q;
            if (i < chunks) q = unpack32<8>(codes + i * bytes);
            else if (tail > 0) q = unpack32_tail<8>(codes + i * bytes, tail);
            else break;
            const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * 32));
            const __m256i q0 = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(q));
            const __m256i q1 = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(q, 1));
            const __m256i x0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(x));
            const __m256i x1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(x, 1));
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(q0, x0), _mm256_madd_epi16(q1, x1)));
        }
    } else {
        // maddubs: pairs of u8 x s8 summed to int16, at most 2 * 15 * 127 = 3810 in magnitude;
        // four chunks summed stay below 2^15, then madd widens to int32.
        const __m256i ones = _mm256_set1_epi16(1);
        int64_t i = 0;
        while (i < chunks) {
            __m256i s16 = _mm256_setzero_si256();
            const int64_t end = std::min(chunks, i + 4);
            for (; i < end; ++i) {
                const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * 32));
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(unpack32<Bits>(codes + i * bytes), x));
            }
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(s16, ones));
        }
        if (tail > 0) {
            const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + chunks * 32));
            const __m256i s16 = _mm256_maddubs_epi16(unpack32_tail<Bits>(codes + chunks * bytes, tail), x);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(s16, ones));
        }
    }
    return acc;
}

// Row r of an affine matrix times input t, through the int8 copy of X.
template <int Bits>
MOEPACK_AVX2 float affine_row_int8(const WeightMatrix& w, int64_t r, const MatmulInput& in, int64_t t) {
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
    for (; g + 8 <= groups; g += 8) bacc = _mm256_fmadd_ps(load_bf16(b + g), _mm256_loadu_ps(gs + g), bacc);
    float bias_term = hsum(bacc);
    for (; g < groups; ++g) bias_term += bf16f(b[g]) * gs[g];

    const int64_t full = w.cols / G, chunks = G / 32;
    const int64_t group_bytes = G * Bits / 8;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    g = 0;
    for (; g + 2 <= full; g += 2) {
        const __m256i d0 = group_dot<Bits>(codes + g * group_bytes, xq + g * G, chunks, 0);
        const __m256i d1 = group_dot<Bits>(codes + (g + 1) * group_bytes, xq + (g + 1) * G, chunks, 0);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_set1_ps(bf16f(s[g]) * sx[g]), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), _mm256_set1_ps(bf16f(s[g + 1]) * sx[g + 1]), acc1);
    }
    for (; g < groups; ++g) {
        const int64_t m = std::min(G, w.cols - g * G);   // values in this group
        const __m256i d = group_dot<Bits>(codes + g * group_bytes, xq + g * G, m / 32, m % 32);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(bf16f(s[g]) * sx[g]), acc0);
    }
    return hsum(_mm256_add_ps(acc0, acc1)) + bias_term;
}

// Float dot products of one f32 / bf16 / f16 row with x.
template <WeightFormat F>
MOEPACK_AVX2 inline __m256 load8(const void* base, int64_t i) {
    if constexpr (F == WeightFormat::f32) return _mm256_loadu_ps(static_cast<const float*>(base) + i);
    else if constexpr (F == WeightFormat::bf16) return load_bf16(static_cast<const uint16_t*>(base) + i);
    else return load_f16(static_cast<const uint16_t*>(base) + i);
}

template <WeightFormat F>
inline float scalar_at(const void* base, int64_t i) {
    if constexpr (F == WeightFormat::f32) return static_cast<const float*>(base)[i];
    else if constexpr (F == WeightFormat::bf16) return bf16f(static_cast<const uint16_t*>(base)[i]);
    else return f16_to_float(static_cast<const uint16_t*>(base)[i]);
}

template <WeightFormat F>
MOEPACK_AVX2 float float_row_dot(const void* row, const float* x, int64_t cols) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= cols; i += 32) {
        a0 = _mm256_fmadd_ps(load8<F>(row, i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(load8<F>(row, i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(load8<F>(row, i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(load8<F>(row, i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= cols; i += 8) a0 = _mm256_fmadd_ps(load8<F>(row, i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < cols; ++i) s += scalar_at<F>(row, i) * x[i];
    return s;
}

template <WeightFormat F>
MOEPACK_AVX2 void float_rows(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride, int64_t r0,
                             int64_t r1) {
    const int64_t esize = F == WeightFormat::f32 ? 4 : 2;
    for (int64_t r = r0; r < r1; ++r) {
        const void* row = w.data + r * w.cols * esize;
        for (int64_t t = 0; t < in.n; ++t) y[t * y_stride + r] = float_row_dot<F>(row, in.x + t * in.cols, w.cols);
    }
}

template <int Bits>
MOEPACK_AVX2 void affine_rows_int8(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride,
                                   int64_t r0, int64_t r1) {
    const int64_t row_bytes = (w.cols * Bits + 31) / 32 * 4, groups = in.groups;
    for (int64_t r = r0; r < r1; ++r) {
        prefetch_row(w, r + kPrefetchRows, r1, row_bytes, groups);
        for (int64_t t = 0; t < in.n; ++t) y[t * y_stride + r] = affine_row_int8<Bits>(w, r, in, t);
    }
}

// --- prefill ---

template <int Bits>
MOEPACK_AVX2 void decode_affine_span(const WeightMatrix& w, int64_t r, int64_t c0, int64_t count, float* out) {
    const int64_t G = w.group_size, groups = (w.cols + G - 1) / G;
    const int64_t row_bytes = (w.cols * Bits + 31) / 32 * 4;
    const uint8_t* codes = reinterpret_cast<const uint8_t*>(w.data) + r * row_bytes;
    const uint16_t* s = w.scales + r * groups;
    const uint16_t* b = w.biases + r * groups;
    for (int64_t i = 0; i < count; i += 32) {
        const int64_t c = c0 + i, m = std::min<int64_t>(32, count - i);
        const int64_t left = w.cols - c;   // codes left in the row
        const __m256i q = left >= 32 ? unpack32<Bits>(codes + c * Bits / 8)
                                     : unpack32_tail<Bits>(codes + c * Bits / 8, left);
        const int64_t g = c / G;
        const __m256 sc = _mm256_set1_ps(bf16f(s[g])), bi = _mm256_set1_ps(bf16f(b[g]));
        alignas(32) float tmp[32];
        float* dst = m == 32 ? out + i : tmp;
        const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        _mm256_storeu_ps(dst, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), sc, bi));
        _mm256_storeu_ps(dst + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), sc, bi));
        _mm256_storeu_ps(dst + 16, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), sc, bi));
        _mm256_storeu_ps(dst + 24, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), sc, bi));
        if (m < 32) std::memcpy(out + i, tmp, static_cast<size_t>(m) * 4);
    }
}

template <WeightFormat F>
MOEPACK_AVX2 void decode_float_span(const void* row, int64_t c0, int64_t count, float* out) {
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(out + i, load8<F>(row, c0 + i));
    for (; i < count; ++i) out[i] = scalar_at<F>(row, c0 + i);
}

// y[t, r0 + i] (+)= rows[i] . x[t] over kc columns, for T inputs and 4 rows.
template <int T>
MOEPACK_AVX2 void block_kernel(const float* const* rows, const float* const* xs, int64_t kc, float* y,
                               int64_t y_stride, int64_t nr, bool accumulate) {
    __m256 acc[T][4];
    for (int t = 0; t < T; ++t)
        for (int i = 0; i < 4; ++i) acc[t][i] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        const __m256 w0 = _mm256_loadu_ps(rows[0] + k), w1 = _mm256_loadu_ps(rows[1] + k);
        const __m256 w2 = _mm256_loadu_ps(rows[2] + k), w3 = _mm256_loadu_ps(rows[3] + k);
        for (int t = 0; t < T; ++t) {
            const __m256 x = _mm256_loadu_ps(xs[t] + k);
            acc[t][0] = _mm256_fmadd_ps(w0, x, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(w1, x, acc[t][1]);
            acc[t][2] = _mm256_fmadd_ps(w2, x, acc[t][2]);
            acc[t][3] = _mm256_fmadd_ps(w3, x, acc[t][3]);
        }
    }
    for (int t = 0; t < T; ++t) {
        alignas(16) float sums[4];
        _mm_store_ps(sums, hsum4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]));
        for (int i = 0; i < nr; ++i) {
            float s = sums[i];
            for (int64_t kk = k; kk < kc; ++kk) s += rows[i][kk] * xs[t][kk];
            float& out = y[t * y_stride + i];
            out = accumulate ? out + s : s;
        }
    }
}

MOEPACK_AVX2 void prefill_rows(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride, int64_t r0,
                               int64_t r1) {
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(kRowBlock * kColBlock));
    for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
        const int64_t nr = std::min(kRowBlock, r1 - rb);
        const float* rows[4];
        for (int64_t i = 0; i < 4; ++i) rows[i] = buf.data() + std::min(i, nr - 1) * kColBlock;
        for (int64_t k0 = 0; k0 < w.cols; k0 += kColBlock) {
            const int64_t kc = std::min(kColBlock, w.cols - k0);
            for (int64_t i = 0; i < nr; ++i) decode_span_avx2(w, rb + i, k0, kc, buf.data() + i * kColBlock);
            const bool accumulate = k0 > 0;
            int64_t t = 0;
            for (; t + kInputBlock <= in.n; t += kInputBlock) {
                const float* xs[3] = {in.x + t * in.cols + k0, in.x + (t + 1) * in.cols + k0,
                                      in.x + (t + 2) * in.cols + k0};
                block_kernel<3>(rows, xs, kc, y + t * y_stride + rb, y_stride, nr, accumulate);
            }
            if (in.n - t == 2) {
                const float* xs[2] = {in.x + t * in.cols + k0, in.x + (t + 1) * in.cols + k0};
                block_kernel<2>(rows, xs, kc, y + t * y_stride + rb, y_stride, nr, accumulate);
            } else if (in.n - t == 1) {
                const float* xs[1] = {in.x + t * in.cols + k0};
                block_kernel<1>(rows, xs, kc, y + t * y_stride + rb, y_stride, nr, accumulate);
            }
        }
    }
}

}  // namespace

MOEPACK_AVX2 void decode_span_avx2(const WeightMatrix& w, int64_t r, int64_t c0, int64_t count, float* out) {
    const uint64_t off = static_cast<uint64_t>(r) * static_cast<uint64_t>(w.cols);
    switch (w.format) {
        case WeightFormat::f32:
            decode_float_span<WeightFormat::f32>(reinterpret_cast<const float*>(w.data) + off, c0, count, out);
            return;
        case WeightFormat::bf16:
            decode_float_span<WeightFormat::bf16>(reinterpret_cast<const uint16_t*>(w.data) + off, c0, count, out);
            return;
        case WeightFormat::f16:
            decode_float_span<WeightFormat::f16>(reinterpret_cast<const uint16_t*>(w.data) + off, c0, count, out);
            return;
        case WeightFormat::affine:
            switch (w.bits) {
                case 2: decode_affine_span<2>(w, r, c0, count, out); return;
                case 4: decode_affine_span<4>(w, r, c0, count, out); return;
                default: decode_affine_span<8>(w, r, c0, count, out); return;
            }
    }
}

MOEPACK_AVX2 bool matmul_rows_avx2(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride,
                                   int64_t row_begin, int64_t row_end) {
    const bool affine = w.format == WeightFormat::affine;
    if (affine && (!int8_group_ok(w.group_size) || (w.bits != 2 && w.bits != 4 && w.bits != 8))) return false;
    if (in.n >= kPrefillMinInputs) {
        prefill_rows(w, in, y, y_stride, row_begin, row_end);
        return true;
    }
    switch (w.format) {
        case WeightFormat::f32: float_rows<WeightFormat::f32>(w, in, y, y_stride, row_begin, row_end); return true;
        case WeightFormat::bf16: float_rows<WeightFormat::bf16>(w, in, y, y_stride, row_begin, row_end); return true;
        case WeightFormat::f16: float_rows<WeightFormat::f16>(w, in, y, y_stride, row_begin, row_end); return true;
        case WeightFormat::affine:
            if (in.group != w.group_size || in.xq.empty()) return false;   // not prepared for the int8 kernels
            switch (w.bits) {
                case 2: affine_rows_int8<2>(w, in, y, y_stride, row_begin, row_end); return true;
                case 4: affine_rows_int8<4>(w, in, y, y_stride, row_begin, row_end); return true;
                default: affine_rows_int8<8>(w, in, y, y_stride, row_begin, row_end); return true;
            }
    }
    return false;
}

}  // namespace moepack::engine::detail

#else  // not x86-64: no AVX2 kernels

namespace moepack::engine::detail {
bool matmul_rows_avx2(const WeightMatrix&, const MatmulInput&, float*, int64_t, int64_t, int64_t) { return false; }
void decode_span_avx2(const WeightMatrix&, int64_t, int64_t, int64_t, float*) {}
}  // namespace moepack::engine::detail

#endif
