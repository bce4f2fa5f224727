// Output files that appear only when complete: data goes to a temporary name in the same
// directory, and commit() fsyncs it, renames it into place and fsyncs the directory.
// A file destroyed without commit() is removed, so a crash or an error never leaves a
// half-written file under the final name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace moepack {

// Temporary files are named FINAL + kAtomicTempMarker + a random suffix.
inline constexpr std::string_view kAtomicTempMarker = ".tmp.";

class AtomicFile {
public:
    explicit AtomicFile(std::string path);
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    // Appends bytes; throws moepack::Error (disk full included) naming the final path.
    void write(std::span<const std::byte> bytes);
    void write(const void* data, size_t size) {
        write({static_cast<const std::byte*>(data), size});
    }
    uint64_t size() const { return written_; }
    void commit();

private:
    std::string path_;
    std::string temp_path_;
    int fd_ = -1;
    uint64_t written_ = 0;
};

}  // namespace moepack
