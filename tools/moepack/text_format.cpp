// Human-readable sizes and durations.
#include "text_format.hpp"

#include <cstdio>

namespace moepack::tools {

std::string human_bytes(uint64_t bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", v, units[u]);
    return buf;
}

std::string human_seconds(double seconds) {
    char buf[32];
    if (seconds < 60) std::snprintf(buf, sizeof buf, "%.1f s", seconds);
    else std::snprintf(buf, sizeof buf, "%d m %02d s", static_cast<int>(seconds) / 60, static_cast<int>(seconds) % 60);
    return buf;
}

}  // namespace moepack::tools
