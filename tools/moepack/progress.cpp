// Progress line for convert and verify.
#include "progress.hpp"

#include <unistd.h>

#include <cstdio>

#include "text_format.hpp"

namespace moepack::tools {

ProgressLine::ProgressLine(std::string what)
    : what_(std::move(what)), terminal_(::isatty(STDERR_FILENO) == 1), start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

double ProgressLine::elapsed_seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressLine::update(uint64_t done, uint64_t total) {
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const int decile = total ? static_cast<int>(done * 10 / total) : 10;
    // a terminal line is rewritten 5 times a second; a log gets a line per 10 %, at most every 2 s
    if (terminal_ ? now - last_print_ < std::chrono::milliseconds(200)
                  : decile == last_decile_ || now - last_print_ < std::chrono::seconds(2))
        return;
    last_print_ = now;
    last_decile_ = decile;
    const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
    const double eta = rate > 0 && total > done ? static_cast<double>(total - done) / rate : 0;
    std::fprintf(stderr, "%s%s: %s of %s (%3.0f%%), %s/s, ETA %s%s", terminal_ ? "\r" : "", what_.c_str(),
                 human_bytes(done).c_str(), human_bytes(total).c_str(),
                 total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0,
                 human_bytes(static_cast<uint64_t>(rate)).c_str(), human_seconds(eta).c_str(),
                 terminal_ ? "\033[K" : "\n");
    printed_ = true;
}

void ProgressLine::finish(uint64_t done) {
    std::lock_guard lock(mutex_);
    const double seconds = elapsed_seconds();
    std::fprintf(stderr, "%s%s: %s in %s (%s/s)\n", terminal_ && printed_ ? "\r\033[K" : "", what_.c_str(),
                 human_bytes(done).c_str(), human_seconds(seconds).c_str(),
                 human_bytes(seconds > 0 ? static_cast<uint64_t>(static_cast<double>(done) / seconds) : 0).c_str());
}

}  // namespace moepack::tools
