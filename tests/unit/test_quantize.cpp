// Quantizer: LSB-first layout golden vectors, per-bit-width error limits against float64
// reference math, the search's gain over min/max, partial groups, and rejected inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "dtype.hpp"
#include "pack_format.hpp"
#include "quantize.hpp"
#include "test_helpers.hpp"

namespace moepack {
namespace {

// Relative RMS error of decode(encode(w)) computed in float64.
double relative_rms_error(const std::vector<float>& w, uint64_t rows, uint64_t cols, int bits, int group,
                          QuantMethod method) {
    const pack::MatrixLayout l = pack::matrix_layout(rows, cols, bits, group);
    std::vector<std::byte> record(l.bytes());
    encode_matrix(w.data(), l, method, record);
    std::vector<float> back(w.size());
    decode_matrix(record, l, back.data());
    double err = 0, ref = 0;
    for (size_t i = 0; i < w.size(); ++i) {
        const double d = static_cast<double>(back[i]) - static_cast<double>(w[i]);
        err += d * d;
        ref += static_cast<double>(w[i]) * w[i];
    }
    return std::sqrt(err / ref);
}

std::vector<float> gaussian(size_t n, unsigned seed, float scale = 0.02f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> w(n);
    for (auto& v : w) v = dist(rng);
    return w;
}

TEST(Quantize, CodesArePackedLsbFirstLikeMlx) {
    // Values 0..15 in one group of 16 at 4 bits: exact (scale 1, bias 0), words 0x76543210, 0xfedcba98.
    std::vector<float> row(32);
    for (int i = 0; i < 32; ++i) row[i] = static_cast<float>(i % 16);
    uint32_t codes[4] = {};
    uint16_t scales[1], biases[1];
    quantize_row(row.data(), 32, 4, 32, QuantMethod::minmax, codes, scales, biases);
    EXPECT_EQ(codes[0], 0x76543210u);
    EXPECT_EQ(codes[1], 0xfedcba98u);
    EXPECT_EQ(codes[2], 0x76543210u);
    EXPECT_EQ(bf16_to_float(scales[0]), 1.0f);
    EXPECT_EQ(bf16_to_float(biases[0]), 0.0f);
    // 2 bits: 0,1,2,3 repeating -> 0b11100100 per byte
    std::vector<float> r2(32);
    for (int i = 0; i < 32; ++i) r2[i] = static_cast<float>(i % 4);
    uint32_t c2[2] = {};
    quantize_row(r2.data(), 32, 2, 32, QuantMethod::minmax, c2, scales, biases);
    EXPECT_EQ(c2[0], 0xe4e4e4e4u);
    EXPECT_EQ(c2[1], 0xe4e4e4e4u);
    // 8 bits: byte i of the word holds value i
    std::vector<float> r8 = {0, 255, 17, 128};
    r8.resize(32, 0.0f);
    uint32_t c8[8] = {};
    quantize_row(r8.data(), 32, 8, 32, QuantMethod::minmax, c8, scales, biases);
    EXPECT_EQ(c8[0], 0x8011ff00u);
}

TEST(Quantize, DecodeOfHandMadeRecord) {
    // One row, 8 columns, 4 bits, group 32 (partial group of 8): w = q * 0.5 - 1
    const pack::MatrixLayout l = pack::matrix_layout(1, 8, 4, 32);
    ASSERT_EQ(l.row_words(), 1u);
    ASSERT_EQ(l.groups(), 1u);
    std::vector<std::byte> record(l.bytes());
    const uint32_t word = 0x87654321u;
    std::memcpy(record.data(), &word, 4);
    const uint16_t s = float_to_bf16(0.5f), b = float_to_bf16(-1.0f);
    std::memcpy(record.data() + l.scales_offset(), &s, 2);
    std::memcpy(record.data() + l.biases_offset(), &b, 2);
    float out[8];
    decode_matrix(record, l, out);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(out[i], static_cast<float>(i + 1) * 0.5f - 1.0f) << i;
}

struct Limit {
    int bits;
    double max_error;      // relative RMS on Gaussian weights, group 64
};

TEST(Quantize, ErrorWithinLimitsPerBitWidth) {
    const uint64_t rows = 64, cols = 512;
    const auto w = gaussian(rows * cols, 1);
    for (const Limit& lim : {Limit{8, 0.008}, Limit{4, 0.11}, Limit{2, 0.45}}) {
        const double e = relative_rms_error(w, rows, cols, lim.bits, 64, QuantMethod::search);
        EXPECT_LT(e, lim.max_error) << lim.bits << "-bit";
        EXPECT_GT(e, lim.max_error / 4) << lim.bits << "-bit error implausibly small";
    }
    // 16-bit is bf16 rounding: relative error below 2^-8
    EXPECT_LT(relative_rms_error(w, rows, cols, 16, 64, QuantMethod::search), 1.0 / 256);
}

TEST(Quantize, SearchBeatsMinMax) {
    const uint64_t rows = 64, cols = 512;
    const auto w = gaussian(rows * cols, 2);
    for (int bits : {2, 4}) {
        const double plain = relative_rms_error(w, rows, cols, bits, 64, QuantMethod::minmax);
        const double searched = relative_rms_error(w, rows, cols, bits, 64, QuantMethod::search);
        EXPECT_LT(searched, plain * (bits == 2 ? 0.85 : 0.97)) << bits << "-bit: " << searched << " vs " << plain;
    }
    const double plain8 = relative_rms_error(w, rows, cols, 8, 64, QuantMethod::minmax);
    EXPECT_LE(relative_rms_error(w, rows, cols, 8, 64, QuantMethod::search), plain8);
}

TEST(Quantize, SmallerGroupsAreMoreAccurate) {
    const auto w = gaussian(32 * 256, 3);
    const double g32 = relative_rms_error(w, 32, 256, 4, 32, QuantMethod::search);
    const double g128 = relative_rms_error(w, 32, 256, 4, 128, QuantMethod::search);
    EXPECT_LT(g32, g128);
}

TEST(Quantize, PartialLastGroupAndPaddedWords) {
    // 144 columns at group 64: groups of 64, 64, 16; 2-bit rows of 9 words
    const auto w = gaussian(8 * 144, 4);
    const pack::MatrixLayout l = pack::matrix_layout(8, 144, 2, 64);
    EXPECT_EQ(l.groups(), 3u);
    EXPECT_EQ(l.row_words(), 9u);
    EXPECT_LT(relative_rms_error(w, 8, 144, 2, 64, QuantMethod::search), 0.45);
    EXPECT_LT(relative_rms_error(w, 8, 144, 4, 128, QuantMethod::search), 0.12);
    // 3 columns at 4 bits: one word, upper 20 bits zero
    std::vector<float> row = {1.0f, -2.0f, 0.5f};
    uint32_t code = 0xffffffffu;
    uint16_t s, b;
    quantize_row(row.data(), 3, 4, 32, QuantMethod::search, &code, &s, &b);
    EXPECT_EQ(code >> 12, 0u);
}

TEST(Quantize, ConstantGroupIsExact) {
    std::vector<float> row(64, 0.375f);
    const pack::MatrixLayout l = pack::matrix_layout(1, 64, 2, 64);
    std::vector<std::byte> record(l.bytes());
    encode_matrix(row.data(), l, QuantMethod::search, record);
    std::vector<float> back(64);
    decode_matrix(record, l, back.data());
    for (float v : back) EXPECT_EQ(v, 0.375f);
}

TEST(Quantize, RejectsNonFiniteValuesNamingTheRow) {
    auto w = gaussian(4 * 64, 5);
    w[2 * 64 + 7] = std::nanf("");
    const pack::MatrixLayout l = pack::matrix_layout(4, 64, 4, 64);
    std::vector<std::byte> record(l.bytes());
    EXPECT_EQ(test::error_of([&] { encode_matrix(w.data(), l, QuantMethod::search, record); }),
              "row 2: non-finite value nan at column 7");
    w[2 * 64 + 7] = INFINITY;
    const pack::MatrixLayout l16 = pack::matrix_layout(4, 64, 16, 0);
    std::vector<std::byte> r16(l16.bytes());
    EXPECT_NE(test::error_of([&] { encode_matrix(w.data(), l16, QuantMethod::search, r16); }), "(no error)");
}

TEST(Quantize, LayoutRejectsUnsupportedParameters) {
    EXPECT_EQ(test::error_of([] { pack::matrix_layout(4, 64, 3, 64); }), "unsupported bit width 3 (expected 2, 4, 8 or 16)");
    EXPECT_EQ(test::error_of([] { pack::matrix_layout(4, 64, 4, 48); }),
              "unsupported group size 48 (expected 32, 64 or 128)");
}

}  // namespace
}  // namespace moepack
