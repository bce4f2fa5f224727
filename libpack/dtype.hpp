// Element types of safetensors tensors: names, sizes, and conversion to float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace moepack {

enum class DType : uint8_t {
    BOOL, U8, I8, F8_E4M3, F8_E5M2, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64,
};

// The safetensors spelling ("BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
// Parses a safetensors dtype string; nullopt when unknown.
std::optional<DType> parse_dtype(std::string_view name);
// Bytes per element.
size_t dtype_size(DType t);
// True for the types to_float32 converts (floating types, including fp8 and E8M0).
bool dtype_is_float(DType t);

// Scalar decoders, exposed for kernels and tests.
float bf16_to_float(uint16_t bits);
float f16_to_float(uint16_t bits);
float f8e4m3_to_float(uint8_t bits);   // OCP E4M3FN: no infinities, 0x7F/0xFF are NaN
float f8e5m2_to_float(uint8_t bits);   // IEEE-like: infinities and NaNs
float e8m0_to_float(uint8_t bits);     // 2^(bits-127); 0xFF is NaN
uint16_t float_to_bf16(float value);   // round to nearest even; NaN stays NaN
uint16_t float_to_f16(float value);    // round to nearest even; overflow to infinity; NaN stays NaN

// Converts `count` little-endian elements of type `t` at `src` (any alignment) to float32.
// Throws moepack::Error when `t` is not a floating type.
void to_float32(DType t, const void* src, size_t count, float* dst);

}  // namespace moepack
