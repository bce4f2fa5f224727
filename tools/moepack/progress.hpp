// Progress of a long job on stderr: a self-rewriting line (bytes done, rate, ETA) when
// stderr is a terminal, otherwise a plain line per 10 % (at most one every 2 s) so logs
// stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace moepack::tools {

class ProgressLine {
public:
    explicit ProgressLine(std::string what);
    // Safe to call from any thread.
    void update(uint64_t done, uint64_t total);
    // Ends the line; prints the final figures.
    void finish(uint64_t done);
    double elapsed_seconds() const;

private:
    std::string what_;
    bool terminal_;
    std::chrono::steady_clock::time_point start_, last_print_;
    int last_decile_ = -1;
    bool printed_ = false;
    std::mutex mutex_;
};

}  // namespace moepack::tools
