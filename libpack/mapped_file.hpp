// Read-only memory mapping of a whole file (RAII). Empty files map to an empty span.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace moepack {

class MappedFile {
public:
    // Maps `path` read-only; throws moepack::Error naming the path on failure.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(MappedFile&& other) noexcept;
    MappedFile& operator=(MappedFile&& other) noexcept;
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    std::span<const std::byte> bytes() const { return {data_, size_}; }
    const std::string& path() const { return path_; }
    // Tells the kernel the pages under `range` (a part of bytes()) will not be read again
    // soon, so they leave this process's resident set (they stay in the page cache).
    void drop_pages(std::span<const std::byte> range) const;

private:
    void release();
    std::string path_;
    const std::byte* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace moepack
