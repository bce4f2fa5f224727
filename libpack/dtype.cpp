// Element types of safetensors tensors: names, sizes, and conversion to float32.
#include "dtype.hpp"

#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "error.hpp"

namespace moepack {
namespace {

struct DTypeInfo {
    DType type;
    std::string_view name;
    size_t size;
    bool is_float;
};

constexpr std::array<DTypeInfo, 16> kDTypes{{
    {DType::BOOL, "BOOL", 1, false},     {DType::U8, "U8", 1, false},
    {DType::I8, "I8", 1, false},         {DType::F8_E4M3, "F8_E4M3", 1, true},
    {DType::F8_E5M2, "F8_E5M2", 1, true}, {DType::F8_E8M0, "F8_E8M0", 1, true},
    {DType::I16, "I16", 2, false},       {DType::U16, "U16", 2, false},
    {DType::F16, "F16", 2, true},        {DType::BF16, "BF16", 2, true},
    {DType::I32, "I32", 4, false},       {DType::U32, "U32", 4, false},
    {DType::F32, "F32", 4, true},        {DType::F64, "F64", 8, true},
    {DType::I64, "I64", 8, false},       {DType::U64, "U64", 8, false},
}};

const DTypeInfo& info(DType t) { return kDTypes[static_cast<size_t>(t)]; }

template <class T>
T load_le(const unsigned char* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    static_assert(std::endian::native == std::endian::little, "big-endian hosts are unsupported");
    return v;
}

// Decodes a small float with `exp_bits` exponent bits and `man_bits` mantissa bits.
float decode_minifloat(uint32_t bits, int exp_bits, int man_bits, bool has_inf) {
    const uint32_t sign = bits >> (exp_bits + man_bits);
    const uint32_t exp = (bits >> man_bits) & ((1u << exp_bits) - 1);
    const uint32_t man = bits & ((1u << man_bits) - 1);
    const int bias = (1 << (exp_bits - 1)) - 1;
    const uint32_t exp_max = (1u << exp_bits) - 1;
    float value;
    if (exp == 0) {
        value = std::ldexp(static_cast<float>(man), 1 - bias - man_bits);
    } else if (has_inf && exp == exp_max) {
        value = man == 0 ? std::numeric_limits<float>::infinity()
                         : std::numeric_limits<float>::quiet_NaN();
    } else {
        value = std::ldexp(static_cast<float>(man | (1u << man_bits)),
                           static_cast<int>(exp) - bias - man_bits);
    }
    return sign ? -value : value;
}

}  // namespace

static_assert(kDTypes.size() == static_cast<size_t>(DType::U64) + 1);

std::string_view dtype_name(DType t) { return info(t).name; }
size_t dtype_size(DType t) { return info(t).size; }
bool dtype_is_float(DType t) { return info(t).is_float; }

std::optional<DType> parse_dtype(std::string_view name) {
    for (const auto& d : kDTypes)
        if (d.name == name) return d.type;
    return std::nullopt;
}

float bf16_to_float(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

float f16_to_float(uint16_t bits) { return decode_minifloat(bits, 5, 10, true); }

float f8e4m3_to_float(uint8_t bits) {
    if ((bits & 0x7F) == 0x7F) return std::numeric_limits<float>::quiet_NaN();
    return decode_minifloat(bits, 4, 3, false);
}

float f8e5m2_to_float(uint8_t bits) { return decode_minifloat(bits, 5, 2, true); }

float e8m0_to_float(uint8_t bits) {
    if (bits == 0xFF) return std::numeric_limits<float>::quiet_NaN();
    return std::ldexp(1.0f, static_cast<int>(bits) - 127);
}

uint16_t float_to_f16(float value) {
    uint32_t x;
    std::memcpy(&x, &value, 4);
    const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    const uint32_t exponent = (x >> 23) & 0xffu;
    uint32_t mantissa = x & 0x7fffffu;
    if (exponent == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mantissa ? 0x200u : 0u));
    const int e = static_cast<int>(exponent) - 127 + 15;
    if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
    // Keeps `bits` of a mantissa shifted right by `shift`, rounding to nearest even.
    auto round_shift = [](uint32_t m, int shift) {
        const uint32_t kept = m >> shift, rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        return kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
    };
    if (e <= 0) {   // subnormal half (or zero)
        if (e < -10) return sign;
        mantissa |= 0x800000u;
        return static_cast<uint16_t>(sign | round_shift(mantissa, 14 - e));
    }
    // a carry out of the mantissa correctly bumps the exponent (up to infinity)
    return static_cast<uint16_t>(sign | round_shift((static_cast<uint32_t>(e) << 23) | mantissa, 13));
}

uint16_t float_to_bf16(float value) {
    uint32_t bits = std::bit_cast<uint32_t>(value);
    if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);
    bits += 0x7FFF + ((bits >> 16) & 1);
    return static_cast<uint16_t>(bits >> 16);
}

void to_float32(DType t, const void* src, size_t count, float* dst) {
    const auto* p = static_cast<const unsigned char*>(src);
    switch (t) {
        case DType::F32:
            std::memcpy(dst, p, count * 4);
            return;
        case DType::BF16:
            for (size_t i = 0; i < count; ++i) dst[i] = bf16_to_float(load_le<uint16_t>(p + 2 * i));
            return;
        case DType::F16:
            for (size_t i = 0; i < count; ++i) dst[i] = f16_to_float(load_le<uint16_t>(p + 2 * i));
            return;
        case DType::F64:
            for (size_t i = 0; i < count; ++i)
                dst[i] = static_cast<float>(load_le<double>(p + 8 * i));
            return;
        case DType::F8_E4M3:
            for (size_t i = 0; i < count; ++i) dst[i] = f8e4m3_to_float(p[i]);
            return;
        case DType::F8_E5M2:
            for (size_t i = 0; i < count; ++i) dst[i] = f8e5m2_to_float(p[i]);
            return;
        case DType::F8_E8M0:
            for (size_t i = 0; i < count; ++i) dst[i] = e8m0_to_float(p[i]);
            return;
        default:
            fail("cannot convert ", dtype_name(t), " to float32: not a floating type");
    }
}

}  // namespace moepack
