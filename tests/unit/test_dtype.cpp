// Element type table and scalar decoders against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "dtype.hpp"
#include "error.hpp"

using namespace moepack;

TEST(DType, NamesRoundTripAndSizes) {
    struct Case { const char* name; size_t size; bool is_float; };
    const Case cases[] = {{"BOOL", 1, false}, {"U8", 1, false},      {"I8", 1, false},      {"F8_E4M3", 1, true},
                          {"F8_E5M2", 1, true}, {"F8_E8M0", 1, true}, {"I16", 2, false},     {"U16", 2, false},
                          {"F16", 2, true},    {"BF16", 2, true},     {"I32", 4, false},     {"U32", 4, false},
                          {"F32", 4, true},    {"F64", 8, true},      {"I64", 8, false},     {"U64", 8, false}};
    for (const auto& c : cases) {
        auto t = parse_dtype(c.name);
        ASSERT_TRUE(t) << c.name;
        EXPECT_EQ(dtype_name(*t), c.name);
        EXPECT_EQ(dtype_size(*t), c.size) << c.name;
        EXPECT_EQ(dtype_is_float(*t), c.is_float) << c.name;
    }
    EXPECT_FALSE(parse_dtype("F4"));
    EXPECT_FALSE(parse_dtype("bf16"));
    EXPECT_FALSE(parse_dtype(""));
}

TEST(DType, ScalarDecoders) {
    EXPECT_EQ(bf16_to_float(0x3F80), 1.0f);
    EXPECT_EQ(bf16_to_float(0xC040), -3.0f);
    EXPECT_EQ(f16_to_float(0x3C00), 1.0f);
    EXPECT_EQ(f16_to_float(0xC000), -2.0f);
    EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
    EXPECT_EQ(f16_to_float(0x7BFF), 65504.0f);
    EXPECT_TRUE(std::isinf(f16_to_float(0x7C00)));
    EXPECT_TRUE(std::isnan(f16_to_float(0x7E00)));
    // E4M3FN: bias 7, no infinities, S.1111.111 is NaN, max 448
    EXPECT_EQ(f8e4m3_to_float(0x38), 1.0f);
    EXPECT_EQ(f8e4m3_to_float(0x7E), 448.0f);
    EXPECT_EQ(f8e4m3_to_float(0xFE), -448.0f);
    EXPECT_EQ(f8e4m3_to_float(0x01), std::ldexp(1.0f, -9));
    EXPECT_EQ(f8e4m3_to_float(0x78), 256.0f);  // exponent 15 is a normal exponent here
    EXPECT_TRUE(std::isnan(f8e4m3_to_float(0x7F)));
    EXPECT_TRUE(std::isnan(f8e4m3_to_float(0xFF)));
    // E5M2: bias 15, IEEE specials
    EXPECT_EQ(f8e5m2_to_float(0x3C), 1.0f);
    EXPECT_EQ(f8e5m2_to_float(0x7B), 57344.0f);
    EXPECT_TRUE(std::isinf(f8e5m2_to_float(0x7C)));
    EXPECT_TRUE(std::isnan(f8e5m2_to_float(0x7D)));
    // E8M0: pure exponent
    EXPECT_EQ(e8m0_to_float(127), 1.0f);
    EXPECT_EQ(e8m0_to_float(130), 8.0f);
    EXPECT_EQ(e8m0_to_float(0), std::ldexp(1.0f, -127));
    EXPECT_TRUE(std::isnan(e8m0_to_float(255)));
}

TEST(DType, Bf16RoundingIsNearestEven) {
    EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
    // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to even (1.0)
    EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
    // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up to even
    EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
    EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
    for (uint32_t bits = 0; bits < 0x10000; bits += 7) {
        const float f = bf16_to_float(static_cast<uint16_t>(bits));
        if (!std::isnan(f)) {
            EXPECT_EQ(float_to_bf16(f), bits);
        }
    }
}

TEST(DType, BulkConversionHandlesUnalignedInput) {
    const uint16_t values[] = {0x3F80, 0x4000, 0xC040};
    unsigned char buf[1 + sizeof values];
    std::memcpy(buf + 1, values, sizeof values);  // deliberately misaligned
    float out[3];
    to_float32(DType::BF16, buf + 1, 3, out);
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_EQ(out[1], 2.0f);
    EXPECT_EQ(out[2], -3.0f);
    const double d[] = {0.5, -1e10};
    float od[2];
    to_float32(DType::F64, d, 2, od);
    EXPECT_EQ(od[0], 0.5f);
    EXPECT_EQ(od[1], -1e10f);
    EXPECT_THROW(to_float32(DType::I32, values, 1, out), Error);
}

namespace moepack {
namespace {

TEST(DTypeEncode, F16RoundTripsEveryFiniteHalfAndRoundsToNearestEven) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const auto half = static_cast<uint16_t>(h);
        if ((half & 0x7c00u) == 0x7c00u && (half & 0x3ffu)) continue;   // NaN payloads
        ASSERT_EQ(float_to_f16(f16_to_float(half)), half) << std::hex << h;
    }
    EXPECT_EQ(float_to_f16(1.0f + 1.0f / 2048), 0x3c00u);           // tie to even (down)
    EXPECT_EQ(float_to_f16(1.0f + 3.0f / 2048), 0x3c02u);           // tie to even (up)
    EXPECT_EQ(float_to_f16(70000.0f), 0x7c00u);                     // overflow
    EXPECT_EQ(float_to_f16(1e-8f), 0x0000u);                        // underflow
    EXPECT_EQ(f16_to_float(float_to_f16(-3e-6f)), -2.980232238769531e-06f);   // subnormal, rounded
    EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(std::nanf("")))));
}

}  // namespace
}  // namespace moepack
