// XXH3-64, the checksum of every file, tensor and expert of a pack: one-shot, streaming,
// and over a whole file. (xxHash is compiled in header-only; no library to ship.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace moepack {

uint64_t hash_bytes(std::span<const std::byte> bytes);

// Streaming hash; reset() starts over.
class StreamHash {
public:
    StreamHash();
    ~StreamHash();
    StreamHash(const StreamHash&) = delete;
    StreamHash& operator=(const StreamHash&) = delete;
    void reset();
    void update(std::span<const std::byte> bytes);
    uint64_t digest() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

// Hash of a whole file, read sequentially; throws moepack::Error naming the file.
uint64_t hash_file(const std::string& path);

}  // namespace moepack
