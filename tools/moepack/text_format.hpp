// Human-readable sizes, rates and durations for the tools' output.
#pragma once

#include <cstdint>
#include <string>

namespace moepack::tools {

std::string human_bytes(uint64_t bytes);       // "1.50 GiB"
std::string human_seconds(double seconds);     // "1 m 05 s", "12.3 s"

}  // namespace moepack::tools
