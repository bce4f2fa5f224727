// Little-endian serialisation for moepack's binary files: ByteWriter appends fixed-width
// integers and length-prefixed strings; ByteReader reads them back from untrusted bytes with
// every read bounds-checked, throwing moepack::Error that names the file and the item.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "error.hpp"

namespace moepack {

class ByteWriter {
public:
    void u8(uint8_t v) { bytes_.push_back(static_cast<std::byte>(v)); }
    void u32(uint32_t v) { put_le(v, 4); }
    void i32(int32_t v) { put_le(static_cast<uint32_t>(v), 4); }
    void u64(uint64_t v) { put_le(v, 8); }
    // u32 length, then the bytes.
    void str(std::string_view s) {
        if (s.size() > UINT32_MAX) fail("string of ", s.size(), " bytes is too long to store");
        u32(static_cast<uint32_t>(s.size()));
        raw(s.data(), s.size());
    }
    void raw(const void* data, size_t n) {
        const auto* p = static_cast<const std::byte*>(data);
        bytes_.insert(bytes_.end(), p, p + n);
    }
    std::vector<std::byte>& bytes() { return bytes_; }

private:
    void put_le(uint64_t v, int n) {
        for (int i = 0; i < n; ++i) bytes_.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
    }
    std::vector<std::byte> bytes_;
};

class ByteReader {
public:
    ByteReader(std::span<const std::byte> bytes, std::string file) : bytes_(bytes), file_(std::move(file)) {}

    uint8_t u8(std::string_view item) { return static_cast<uint8_t>(get_le(1, item)); }
    uint32_t u32(std::string_view item) { return static_cast<uint32_t>(get_le(4, item)); }
    int32_t i32(std::string_view item) { return static_cast<int32_t>(static_cast<uint32_t>(get_le(4, item))); }
    uint64_t u64(std::string_view item) { return get_le(8, item); }
    std::string str(std::string_view item) {
        const uint32_t n = u32(item);
        need(n, item);
        std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
        pos_ += n;
        return s;
    }
    // A count of records that each take at least `min_record_bytes`: rejects counts the
    // remaining bytes cannot hold, so that a corrupt count never drives a huge allocation.
    uint32_t count(std::string_view item, size_t min_record_bytes) {
        const uint32_t n = u32(item);
        if (min_record_bytes > 0 && n > remaining() / min_record_bytes)
            fail(file_, ": ", item, " is ", n, " but only ", remaining(), " bytes remain");
        return n;
    }
    size_t remaining() const { return bytes_.size() - pos_; }
    size_t position() const { return pos_; }
    const std::string& file() const { return file_; }

private:
    void need(size_t n, std::string_view item) const {
        if (n > remaining())
            fail(file_, ": truncated at byte ", pos_, " reading ", item, " (", n, " bytes needed, ", remaining(),
                 " left)");
    }
    uint64_t get_le(int n, std::string_view item) {
        need(static_cast<size_t>(n), item);
        uint64_t v = 0;
        for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(bytes_[pos_ + i]) << (8 * i);
        pos_ += static_cast<size_t>(n);
        return v;
    }
    std::span<const std::byte> bytes_;
    std::string file_;
    size_t pos_ = 0;
};

}  // namespace moepack
