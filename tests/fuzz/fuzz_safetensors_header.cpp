// libFuzzer target: arbitrary bytes as a whole safetensors file. The parser must either
// accept them or throw moepack::Error; anything else (crash, other exception, sanitizer
// report, runaway allocation) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "error.hpp"
#include "safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        auto header = moepack::parse_safetensors(
            std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size), "fuzz");
        for (const auto& t : header.tensors)
            if (t.file_offset + t.nbytes > size) __builtin_trap();  // accepted out-of-bounds tensor
    } catch (const moepack::Error&) {
    }
    return 0;
}
