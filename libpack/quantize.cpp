// Affine group quantizer with a cheap error search: for each group it tries a few ranges
// clipped symmetrically inside [min, max], then refits scale and bias by least squares on
// the chosen codes, keeping whichever has the lowest squared error after bf16 rounding of
// scale and bias (the values the reader will use).
#include "quantize.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "dtype.hpp"
#include "error.hpp"

namespace moepack {
namespace {

// Fractions of the range removed (half from each end) by the search.
constexpr float kSearchClips[] = {0.0f, 0.08f, 0.16f, 0.28f};
constexpr int kRefineSteps = 1;

float round_bf16(float v) { return bf16_to_float(float_to_bf16(v)); }

struct GroupFit {
    float scale = 0, bias = 0;   // already bf16-representable
    float error = 0;
};

// Squared error of quantizing `w` with (scale, bias); writes codes when `codes` is set.
// The hot loop of the quantizer: written so that it vectorizes (round half up by truncation
// of a clamped non-negative value; float accumulation).
[[gnu::always_inline]] inline float evaluate(const float* w, size_t n, float scale, float bias, float qmax, uint8_t* codes) {
    float error = 0;
    const float inv = scale != 0.0f ? 1.0f / scale : 0.0f;
    for (size_t i = 0; i < n; ++i) {
        const float x = std::clamp((w[i] - bias) * inv, 0.0f, qmax);
        const float q = static_cast<float>(static_cast<int>(x + 0.5f));
        const float d = q * scale + bias - w[i];
        error += d * d;
        if (codes) codes[i] = static_cast<uint8_t>(q);
    }
    return error;
}

[[gnu::always_inline]] inline GroupFit fit_range(const float* w, size_t n, float lo, float hi, float qmax) {
    GroupFit f;
    f.bias = round_bf16(lo);
    f.scale = round_bf16((hi - f.bias) / qmax);
    f.error = evaluate(w, n, f.scale, f.bias, qmax, nullptr);
    return f;
}

// Least-squares scale and bias for the codes that `current` assigns.
[[gnu::always_inline]] inline GroupFit refine(const float* w, size_t n, const GroupFit& current, float qmax, uint8_t* scratch) {
    evaluate(w, n, current.scale, current.bias, qmax, scratch);
    double sq = 0, sqq = 0, sw = 0, sqw = 0;
    for (size_t i = 0; i < n; ++i) {
        const double q = scratch[i];
        sq += q;
        sqq += q * q;
        sw += w[i];
        sqw += q * w[i];
    }
    const double dn = static_cast<double>(n);
    const double det = dn * sqq - sq * sq;
    if (det <= 0) return current;
    GroupFit f;
    const double scale = (dn * sqw - sq * sw) / det;
    f.scale = round_bf16(static_cast<float>(scale));
    f.bias = round_bf16(static_cast<float>((sw - scale * sq) / dn));
    f.error = evaluate(w, n, f.scale, f.bias, qmax, nullptr);
    return f.error < current.error ? f : current;
}

[[gnu::always_inline]] inline GroupFit fit_group(const float* w, size_t n, float qmax, QuantMethod method, uint8_t* scratch) {
    float lo = w[0], hi = w[0];
    for (size_t i = 1; i < n; ++i) {
        lo = std::min(lo, w[i]);
        hi = std::max(hi, w[i]);
    }
    GroupFit best = fit_range(w, n, lo, hi, qmax);
    // 8-bit steps are fine enough that clipping gains nothing measurable.
    if (method == QuantMethod::minmax || hi == lo || qmax > 15.0f) return best;
    const float range = hi - lo;
    for (size_t c = 1; c < std::size(kSearchClips); ++c) {
        const float cut = range * kSearchClips[c] * 0.5f;
        const GroupFit f = fit_range(w, n, lo + cut, hi - cut, qmax);
        if (f.error < best.error) best = f;
    }
    for (int step = 0; step < kRefineSteps; ++step) best = refine(w, n, best, qmax, scratch);
    return best;
}

void check_finite(const float* row, uint64_t row_index, uint64_t cols) {
    for (uint64_t c = 0; c < cols; ++c)
        if (!std::isfinite(row[c])) fail("row ", row_index, ": non-finite value ", row[c], " at column ", c);
}

}  // namespace

// Compiled for AVX2 and for baseline x86-64 (the helpers above are inlined into both);
// the loader picks the version the CPU supports.
__attribute__((target_clones("avx2", "default")))
void quantize_row(const float* row, uint64_t cols, int bits, int group_size, QuantMethod method,
                  uint32_t* codes, uint16_t* scales, uint16_t* biases) {
    const float qmax = static_cast<float>((1u << bits) - 1);
    const uint64_t words = (cols * static_cast<uint64_t>(bits) + 31) / 32;
    std::memset(codes, 0, words * 4);
    uint8_t group_codes[128];
    uint8_t scratch[128];
    const uint64_t g = static_cast<uint64_t>(group_size);
    for (uint64_t start = 0, group = 0; start < cols; start += g, ++group) {
        const size_t n = static_cast<size_t>(std::min(g, cols - start));
        const GroupFit f = fit_group(row + start, n, qmax, method, scratch);
        evaluate(row + start, n, f.scale, f.bias, qmax, group_codes);
        scales[group] = float_to_bf16(f.scale);
        biases[group] = float_to_bf16(f.bias);
        for (size_t i = 0; i < n; ++i) {
            const uint64_t bit = (start + i) * static_cast<uint64_t>(bits);
            codes[bit / 32] |= static_cast<uint32_t>(group_codes[i]) << (bit % 32);
        }
    }
}

void dequantize_row(const uint32_t* codes, const float* scales, const float* biases, uint64_t cols, int bits,
                    int group_size, float* row) {
    const uint32_t mask = (1u << bits) - 1;
    const uint64_t g = static_cast<uint64_t>(group_size);
    for (uint64_t c = 0; c < cols; ++c) {
        const uint64_t bit = c * static_cast<uint64_t>(bits);
        const uint32_t q = (codes[bit / 32] >> (bit % 32)) & mask;
        const uint64_t group = c / g;
        row[c] = static_cast<float>(q) * scales[group] + biases[group];
    }
}

void encode_matrix_rows(const float* rows, uint64_t row_begin, uint64_t row_count, const pack::MatrixLayout& m,
                        QuantMethod method, std::span<std::byte> record) {
    if (record.size() < m.bytes()) fail("matrix record buffer: expected ", m.bytes(), " bytes, got ", record.size());
    if (row_begin + row_count > m.rows) fail("matrix rows ", row_begin, "+", row_count, " beyond ", m.rows);
    for (uint64_t r = 0; r < row_count; ++r) {
        const float* src = rows + r * m.cols;
        const uint64_t row = row_begin + r;
        check_finite(src, row, m.cols);
        if (m.bits == 16) {
            auto* out = reinterpret_cast<uint16_t*>(record.data()) + row * m.cols;
            for (uint64_t c = 0; c < m.cols; ++c) out[c] = float_to_bf16(src[c]);
            continue;
        }
        auto* codes = reinterpret_cast<uint32_t*>(record.data() + m.codes_offset()) + row * m.row_words();
        auto* scales = reinterpret_cast<uint16_t*>(record.data() + m.scales_offset()) + row * m.groups();
        auto* biases = reinterpret_cast<uint16_t*>(record.data() + m.biases_offset()) + row * m.groups();
        quantize_row(src, m.cols, m.bits, m.group_size, method, codes, scales, biases);
    }
}

void encode_matrix(const float* matrix, const pack::MatrixLayout& m, QuantMethod method,
                   std::span<std::byte> record) {
    encode_matrix_rows(matrix, 0, m.rows, m, method, record);
}

void decode_matrix(std::span<const std::byte> record, const pack::MatrixLayout& m, float* matrix) {
    if (record.size() < m.bytes()) fail("matrix record: expected ", m.bytes(), " bytes, got ", record.size());
    std::vector<float> scales(m.groups()), biases(m.groups());
    for (uint64_t row = 0; row < m.rows; ++row) {
        float* out = matrix + row * m.cols;
        if (m.bits == 16) {
            to_float32(DType::BF16, record.data() + row * m.cols * 2, m.cols, out);
            continue;
        }
        const auto* codes = reinterpret_cast<const uint32_t*>(record.data() + m.codes_offset()) + row * m.row_words();
        to_float32(DType::BF16, record.data() + m.scales_offset() + row * m.groups() * 2, m.groups(), scales.data());
        to_float32(DType::BF16, record.data() + m.biases_offset() + row * m.groups() * 2, m.groups(), biases.data());
        dequantize_row(codes, scales.data(), biases.data(), m.cols, m.bits, m.group_size, out);
    }
}

}  // namespace moepack
