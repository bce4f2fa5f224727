// Safetensors reader: validates the header of an untrusted file and gives typed views of
// its tensors. Layout: u64 LE header length N, N bytes of JSON, then the data buffer;
// tensor offsets are relative to the data buffer and must tile it exactly.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "dtype.hpp"
#include "mapped_file.hpp"

namespace moepack {

// Headers larger than this are rejected before parsing (the format's own limit).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct TensorInfo {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t numel = 0;
    uint64_t file_offset = 0;  // absolute offset of the first byte in the file
    uint64_t nbytes = 0;
};

struct SafetensorsHeader {
    std::vector<TensorInfo> tensors;  // ordered by offset
    std::map<std::string, std::string> metadata;
    uint64_t data_start = 0;  // 8 + header length
};

// Parses and validates the header of a whole safetensors file held in `file`.
// `label` (usually the path) prefixes every error message. Throws moepack::Error.
SafetensorsHeader parse_safetensors(std::span<const std::byte> file, const std::string& label);

// "[2, 3]"
std::string shape_string(std::span<const int64_t> shape);

class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::string& path);

    const std::string& path() const { return map_.path(); }
    const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
    const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
    uint64_t file_size() const { return map_.bytes().size(); }
    // nullptr when absent.
    const TensorInfo* find(const std::string& name) const;
    // The tensor's raw bytes (may be unaligned).
    std::span<const std::byte> data(const TensorInfo& t) const;
    // Lets the pages of `range` (inside this file's data) leave the resident set.
    void drop_pages(std::span<const std::byte> range) const { map_.drop_pages(range); }

private:
    MappedFile map_;
    SafetensorsHeader header_;
    std::unordered_map<std::string, size_t> index_;
};

}  // namespace moepack
