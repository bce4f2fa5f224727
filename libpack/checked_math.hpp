// Overflow-checked unsigned arithmetic for sizes read from untrusted files.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace moepack {

inline std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
    return r;
}

inline std::optional<uint64_t> checked_add(uint64_t a, uint64_t b) {
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
    return r;
}

// Product of a shape's dimensions; nullopt on overflow.
inline std::optional<uint64_t> checked_numel(std::span<const int64_t> shape) {
    uint64_t n = 1;
    for (int64_t d : shape) {
        if (d < 0) return std::nullopt;
        auto next = checked_mul(n, static_cast<uint64_t>(d));
        if (!next) return std::nullopt;
        n = *next;
    }
    return n;
}

}  // namespace moepack
