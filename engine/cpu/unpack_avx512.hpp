// Internal to the matrix products: what the AVX-512 and AMX kernels share (matmul_avx512.cpp,
// matmul_amx.cpp): the target attribute, bf16 scalars, and the unpacking of codes to bytes in
// order (the AMX-BF16 kernels). Include only from x86-64 GCC/Clang builds.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

// GCC 12's _mm512_undefined_* (a self-initialised variable) warns wherever an intrinsic using
// it is inlined into a function with a target attribute (GCC bug 105593, fixed in 13).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define MOEPACK_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

namespace moepack::engine::detail {

inline float bf16f(uint16_t v) {
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// 64 consecutive codes (Bits * 8 bytes at p, LSB first) as 64 bytes in order.
template <int Bits>
MOEPACK_AVX512 inline __m512i unpack64(const uint8_t* p) {
    if constexpr (Bits == 8) {
        return _mm512_loadu_si512(p);
    } else if constexpr (Bits == 4) {
        // byte j -> 16-bit lane j: low byte keeps the low nibble, high byte gets the high one
        const __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        return _mm512_ternarylogic_epi32(v, _mm512_slli_epi16(v, 4), _mm512_set1_epi8(0x0F), 0xA8);   // (a|b)&c
    } else {
        // byte j -> 32-bit lane j: byte k of the lane gets bits 2k, 2k+1 of the byte
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        const __m512i s = _mm512_ternarylogic_epi32(v, _mm512_slli_epi32(v, 6), _mm512_slli_epi32(v, 12), 0xFE);
        return _mm512_ternarylogic_epi32(s, _mm512_slli_epi32(v, 18), _mm512_set1_epi8(0x03), 0xA8);
    }
}

template <int Bits>
MOEPACK_AVX512 inline __m512i unpack64_tail(const uint8_t* p, int64_t count) {
    alignas(64) uint8_t buf[64] = {};
    std::memcpy(buf, p, static_cast<size_t>((count * Bits + 7) / 8));
    return unpack64<Bits>(buf);
}

}  // namespace moepack::engine::detail
