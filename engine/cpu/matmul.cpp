// Portable matrix products (see matmul.hpp), the preparation of inputs, and the dispatch to
// the instruction-set specific kernels (matmul_avx2.cpp, matmul_avx512.cpp, matmul_amx.cpp), for which the
// portable code is the fallback and the reference. One input row (decode) uses a fused
// decode-and-dot per group; several input rows (prefill) decode each weight row once into a
// small buffer and reuse it for every input row.
#include "matmul.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

#include "dtype.hpp"
#include "matmul_kernels.hpp"
#include "thread_pool.hpp"

namespace moepack::engine {

namespace {

inline float bf16(uint16_t v) {
    uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

const uint32_t* row_codes(const WeightMatrix& w, int64_t r) {
    const uint64_t words = (static_cast<uint64_t>(w.cols) * w.bits + 31) / 32;
    return reinterpret_cast<const uint32_t*>(w.data) + static_cast<uint64_t>(r) * words;
}

int64_t groups_of(const WeightMatrix& w) { return (w.cols + w.group_size - 1) / w.group_size; }

template <int Bits>
void decode_affine_row(const WeightMatrix& w, int64_t r, float* out) {
    constexpr uint32_t mask = (1u << Bits) - 1;
    constexpr int per_word = 32 / Bits;
    const uint32_t* codes = row_codes(w, r);
    const int64_t groups = groups_of(w);
    const uint16_t* s = w.scales + r * groups;
    const uint16_t* b = w.biases + r * groups;
    for (int64_t c = 0; c < w.cols; ++c) {
        const uint32_t q = (codes[c / per_word] >> ((c % per_word) * Bits)) & mask;
        const int64_t g = c / w.group_size;
        out[c] = static_cast<float>(q) * bf16(s[g]) + bf16(b[g]);
    }
}

void decode_row_any(const WeightMatrix& w, int64_t r, float* out) {
    const uint64_t off = static_cast<uint64_t>(r) * w.cols;
    switch (w.format) {
        case WeightFormat::f32: std::memcpy(out, reinterpret_cast<const float*>(w.data) + off, w.cols * 4); return;
        case WeightFormat::f16: {
            const auto* p = reinterpret_cast<const uint16_t*>(w.data) + off;
            for (int64_t c = 0; c < w.cols; ++c) out[c] = f16_to_float(p[c]);
            return;
        }
        case WeightFormat::bf16: {
            const auto* p = reinterpret_cast<const uint16_t*>(w.data) + off;
            for (int64_t c = 0; c < w.cols; ++c) out[c] = bf16(p[c]);
            return;
        }
        case WeightFormat::affine:
            switch (w.bits) {
                case 2: decode_affine_row<2>(w, r, out); return;
                case 4: decode_affine_row<4>(w, r, out); return;
                default: decode_affine_row<8>(w, r, out); return;
            }
    }
}

float dot(const float* a, const float* b, int64_t n) {
    float acc[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
    float s = 0;
    for (; i < n; ++i) s += a[i] * b[i];
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

float dot_bf16(const uint16_t* a, const float* b, int64_t n) {
    float acc[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) acc[k] += bf16(a[i + k]) * b[i + k];
    float s = 0;
    for (; i < n; ++i) s += bf16(a[i]) * b[i];
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// sum_g scale_g * (q_g . x_g) + bias_g * sum(x_g) for one row and one input.
template <int Bits>
float dot_affine(const WeightMatrix& w, int64_t r, const float* x, const float* group_sums) {
    constexpr uint32_t mask = (1u << Bits) - 1;
    constexpr int per_word = 32 / Bits;
    const uint32_t* codes = row_codes(w, r);
    const int64_t groups = groups_of(w);
    const uint16_t* s = w.scales + r * groups;
    const uint16_t* b = w.biases + r * groups;
    float total = 0;
    for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * w.group_size, c1 = std::min<int64_t>(w.cols, c0 + w.group_size);
        float acc[per_word] = {};
        int64_t c = c0;
        for (; c + per_word <= c1; c += per_word) {
            const uint32_t word = codes[c / per_word];
            for (int k = 0; k < per_word; ++k) acc[k] += static_cast<float>((word >> (k * Bits)) & mask) * x[c + k];
        }
        float a = 0;
        for (int k = 0; k < per_word; ++k) a += acc[k];
        for (; c < c1; ++c) a += static_cast<float>((codes[c / per_word] >> ((c % per_word) * Bits)) & mask) * x[c];
        total += bf16(s[g]) * a + bf16(b[g]) * group_sums[g];
    }
    return total;
}

float dot_row(const WeightMatrix& w, int64_t r, const MatmulInput& in, int64_t t) {
    const float* x = in.x + t * in.cols;
    const uint64_t off = static_cast<uint64_t>(r) * w.cols;
    switch (w.format) {
        case WeightFormat::f32: return dot(reinterpret_cast<const float*>(w.data) + off, x, w.cols);
        case WeightFormat::bf16: return dot_bf16(reinterpret_cast<const uint16_t*>(w.data) + off, x, w.cols);
        case WeightFormat::f16: {
            float buf[256];
            float s = 0;
            const auto* p = reinterpret_cast<const uint16_t*>(w.data) + off;
            for (int64_t c0 = 0; c0 < w.cols; c0 += 256) {
                const int64_t m = std::min<int64_t>(256, w.cols - c0);
                for (int64_t k = 0; k < m; ++k) buf[k] = f16_to_float(p[c0 + k]);
                s += dot(buf, x + c0, m);
            }
            return s;
        }
        case WeightFormat::affine: {
            const float* sums = in.group_sums.data() + t * in.groups;
            switch (w.bits) {
                case 2: return dot_affine<2>(w, r, x, sums);
                case 4: return dot_affine<4>(w, r, x, sums);
                default: return dot_affine<8>(w, r, x, sums);
            }
        }
    }
    return 0;
}

}  // namespace

WeightMatrix WeightMatrix::from_record(const std::byte* record, const pack::MatrixLayout& layout) {
    WeightMatrix w;
    w.rows = static_cast<int64_t>(layout.rows);
    w.cols = static_cast<int64_t>(layout.cols);
    w.data = record + layout.codes_offset();
    if (layout.bits == 16) {
        w.format = WeightFormat::bf16;
        return w;
    }
    w.format = WeightFormat::affine;
    w.bits = layout.bits;
    w.group_size = layout.group_size;
    w.scales = reinterpret_cast<const uint16_t*>(record + layout.scales_offset());
    w.biases = reinterpret_cast<const uint16_t*>(record + layout.biases_offset());
    return w;
}

uint64_t WeightMatrix::bytes() const {
    const uint64_t n = static_cast<uint64_t>(rows) * cols;
    switch (format) {
        case WeightFormat::f32: return n * 4;
        case WeightFormat::f16:
        case WeightFormat::bf16: return n * 2;
        case WeightFormat::affine:
            return static_cast<uint64_t>(rows) * ((static_cast<uint64_t>(cols) * bits + 31) / 32 * 4 +
                                                  4 * static_cast<uint64_t>(groups_of(*this)));
    }
    return 0;
}

void MatmulInput::reset(const float* input, int64_t rows, int64_t columns) {
    x = input;
    n = rows;
    cols = columns;
    group = 0;
    groups = 0;
    x_tiles.clear();
}

namespace {

// Whether inputs for affine weights of this group size take the AVX-512 kernels' plane layout.
bool uses_planes(int group) {
    return matmul_isa() >= MatmulIsa::avx512 && detail::int8_group_ok(group) && (group & (group - 1)) == 0;
}

// 16 lanes in GCC/Clang vector extensions: SSE code for the baseline, AVX2 in the clones of
// the functions below.
typedef float F32x16 __attribute__((vector_size(64)));
typedef int32_t I32x16 __attribute__((vector_size(64)));
typedef int8_t I8x16 __attribute__((vector_size(16)));

// The sum and the largest magnitude of x[0, m), in 16 partial sums.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void group_stats(
    const float* x, int64_t m, float& sum, float& amax) {
    F32x16 s = {}, a = {};
    int64_t i = 0;
    for (; i + 16 <= m; i += 16) {
        F32x16 v;
        std::memcpy(&v, x + i, sizeof v);
        s += v;
        const F32x16 magnitude = v < 0 ? -v : v;
        a = a > magnitude ? a : magnitude;
    }
    float total = 0, largest = 0;
    for (int k = 0; k < 16; ++k) {
        total += s[k];
        largest = std::max(largest, a[k]);
    }
    for (; i < m; ++i) {
        total += x[i];
        largest = std::max(largest, std::fabs(x[i]));
    }
    sum = total;
    amax = largest;
}

// q[i] = round(x[i] * inv) clamped to [-127, 127]; rounds to nearest even with the 1.5 * 2^23
// addition (exact for |v| < 2^22, and |v| <= 127 here) instead of a library call per value.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void quantize_int8(
    const float* x, int64_t m, float inv, int8_t* q) {
    constexpr float kRound = 12582912.0f;
    int64_t i = 0;
    for (; i + 16 <= m; i += 16) {
        F32x16 v;
        std::memcpy(&v, x + i, sizeof v);
        v *= inv;
        v = v < -127.0f ? -127.0f : v;
        v = v > 127.0f ? 127.0f : v;
        const I8x16 r = __builtin_convertvector(__builtin_convertvector((v + kRound) - kRound, I32x16), I8x16);
        std::memcpy(q + i, &r, sizeof r);
    }
    for (; i < m; ++i) {
        const float v = std::min(std::max(x[i] * inv, -127.0f), 127.0f);
        q[i] = static_cast<int8_t>(static_cast<int32_t>((v + kRound) - kRound));
    }
}

}  // namespace

bool detail::amx_int8_inputs(const WeightMatrix& w, int64_t n) {
    return matmul_isa() == MatmulIsa::amx && w.format == WeightFormat::affine && (w.bits == 2 || w.bits == 4) &&
           w.group_size % 64 == 0 && n >= kAmxInt8MinInputs && amx_int8_usable();
}

bool detail::int8_inputs(const WeightMatrix& w, int64_t n) {
    if (matmul_isa() == MatmulIsa::portable || w.format != WeightFormat::affine || !int8_group_ok(w.group_size))
        return false;
    if (amx_int8_inputs(w, n)) return true;
    // Beyond decode only where the weights' own rounding dominates int8's (<= 4 bits): 8-bit
    // weights keep the AMX kernels' finer bf16 pair for prompts.
    return n < kPrefillMinInputs || (uses_planes(w.group_size) && n < int8_max_inputs() && w.bits <= 4);
}

void MatmulInput::prepare(const WeightMatrix& w) {
    if (w.format != WeightFormat::affine) return;
    if (group != w.group_size) {
        group = w.group_size;
        groups = (cols + group - 1) / group;
        group_sums.clear();
        xq.clear();
        x_scales.clear();
        for (auto& p : xq_planes) p.clear();
        for (auto& t : x_int8_tiles) t.clear();
        x_scales_by_group.clear();
        group_sums_by_group.clear();
    }
    const bool int8 = detail::int8_inputs(w, n);
    if (n >= detail::kPrefillMinInputs && !int8) {   // the prefill kernels decode whole rows: no sums
        if (matmul_isa() == MatmulIsa::amx && x_tiles.empty()) detail::prepare_amx_input(x, n, cols, x_tiles);
        return;
    }
    if (group_sums.empty()) {   // the bias term of the decode kernels; the int8 scales
        group_sums.assign(static_cast<size_t>(n * groups), 0.0f);
        x_scales.assign(static_cast<size_t>(n * groups), 0.0f);
        for (int64_t t = 0; t < n; ++t)
            for (int64_t g = 0; g < groups; ++g) {
                const int64_t c0 = g * group, m = std::min<int64_t>(cols - c0, group);
                float amax = 0;
                group_stats(x + t * cols + c0, m, group_sums[t * groups + g], amax);
                // zeros (or no usable scale): scale 0 and all codes 0
                if (amax > 0 && std::isfinite(amax)) x_scales[t * groups + g] = amax / 127.0f;
            }
    }
    if (!int8) return;
    if (xq.empty()) {
        const int64_t length = groups * group;
        xq.assign(static_cast<size_t>(n * length), 0);
        for (int64_t t = 0; t < n; ++t)
            for (int64_t g = 0; g < groups; ++g) {
                const float scale = x_scales[t * groups + g];
                if (scale == 0) continue;
                const int64_t c0 = g * group, m = std::min<int64_t>(cols - c0, group);
                quantize_int8(x + t * cols + c0, m, 1.0f / scale, xq.data() + t * length + c0);
            }
    }
    if (detail::amx_int8_inputs(w, n)) {
        if (x_int8_tiles[plane_index(w.bits)].empty()) detail::prepare_amx_int8_input(*this, w.bits);
        return;
    }
    if (!uses_planes(group)) return;
    auto& planes = xq_planes[plane_index(w.bits)];
    if (!planes.empty()) return;
    // xq_planes[span * S + k * 64 + j] = xq[span * S + j * per + k]
    const int64_t per = 8 / w.bits, span = 64 * per, length = groups * group;
    const int64_t spans = (cols + span - 1) / span;
    planes.assign(static_cast<size_t>(n * spans * span), 0);
    for (int64_t t = 0; t < n; ++t) {
        const int8_t* q = xq.data() + t * length;
        int8_t* out = planes.data() + t * spans * span;
        for (int64_t p = 0; p < spans; ++p)
            for (int64_t k = 0; k < per; ++k)
                for (int64_t j = 0; j < 64; ++j) {
                    const int64_t c = p * span + j * per + k;
                    out[p * span + k * 64 + j] = c < length ? q[c] : 0;
                }
    }
}

namespace {

MatmulIsa detect_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    // F16C (every AVX2 CPU has it) from CPUID: clang's __builtin_cpu_supports does not know it
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
        return detail::amx_usable() ? MatmulIsa::amx : MatmulIsa::avx512;
    if (avx2) return MatmulIsa::avx2;
#endif
    return MatmulIsa::portable;
}

std::atomic<int> g_isa{-1};   // -1: not chosen yet (the best)
std::atomic<int64_t> g_int8_max_inputs{detail::kInt8MaxInputsDefault};

}  // namespace

int64_t detail::int8_max_inputs() { return g_int8_max_inputs.load(std::memory_order_relaxed); }
void detail::set_int8_max_inputs(int64_t n) { g_int8_max_inputs.store(n, std::memory_order_relaxed); }

MatmulIsa matmul_best_isa() {
    static const MatmulIsa best = detect_isa();
    return best;
}

MatmulIsa matmul_isa() {
    const int v = g_isa.load(std::memory_order_relaxed);
    return v < 0 ? matmul_best_isa() : static_cast<MatmulIsa>(v);
}

void set_matmul_isa(MatmulIsa isa) {
    g_isa.store(static_cast<int>(std::min(isa, matmul_best_isa())), std::memory_order_relaxed);
}

const char* matmul_isa_name(MatmulIsa isa) {
    switch (isa) {
        case MatmulIsa::portable: return "portable";
        case MatmulIsa::avx2: return "avx2";
        case MatmulIsa::avx512: return "avx512";
        case MatmulIsa::amx: return "amx";
    }
    return "?";
}

void matmul_rows(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride, int64_t row_begin,
                 int64_t row_end) {
    if (row_begin >= row_end) return;
    const MatmulIsa isa = matmul_isa();
    if (isa >= MatmulIsa::amx && in.n >= detail::kPrefillMinInputs &&
        (detail::matmul_rows_amx_int8(w, in, y, y_stride, row_begin, row_end) ||
         detail::matmul_rows_amx(w, in, y, y_stride, row_begin, row_end)))
        return;
    if (isa >= MatmulIsa::avx512 && detail::matmul_rows_avx512(w, in, y, y_stride, row_begin, row_end)) return;
    if (isa >= MatmulIsa::avx2 && detail::matmul_rows_avx2(w, in, y, y_stride, row_begin, row_end)) return;
    if (in.n == 1 || w.format == WeightFormat::f32 || w.format == WeightFormat::bf16) {
        for (int64_t r = row_begin; r < row_end; ++r)
            for (int64_t t = 0; t < in.n; ++t) y[t * y_stride + r] = dot_row(w, r, in, t);
        return;
    }
    thread_local std::vector<float> row;
    row.resize(static_cast<size_t>(w.cols));
    for (int64_t r = row_begin; r < row_end; ++r) {
        decode_row_any(w, r, row.data());
        for (int64_t t = 0; t < in.n; ++t) y[t * y_stride + r] = dot(row.data(), in.x + t * in.cols, w.cols);
    }
}

void matmul(ThreadPool& pool, const WeightMatrix& w, MatmulInput& in, float* y) {
    in.prepare(w);
    // About four chunks per thread (chunks are taken dynamically, so a slow thread takes fewer),
    // in whole blocks of 16 rows (the prefill kernels work on 4 rows at a time); one chunk when
    // a single thread runs. 768 rows over 16 threads: 48 chunks of 16 rows.
    const int64_t threads = pool.size();
    const int64_t per_chunk = (w.rows + 4 * threads - 1) / (4 * threads);
    const int64_t grain = threads == 1 ? w.rows : std::max<int64_t>(16, (per_chunk + 15) / 16 * 16);
    pool.parallel_for(w.rows, grain, [&](int64_t r0, int64_t r1) { matmul_rows(w, in, y, w.rows, r0, r1); });
}

void decode_row(const WeightMatrix& w, int64_t r, float* out) { decode_row_any(w, r, out); }

}  // namespace moepack::engine
