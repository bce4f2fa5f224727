// Checks a pack against its manifest. Quick: structure, file sizes and the binary headers.
// Full: additionally re-hashes every file, tensor and expert (files in parallel, each read
// once, sequentially) and requires zero padding, naming the exact file, tensor or
// (layer, expert) and byte offset of every mismatch.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace moepack {

struct VerifyReport {
    uint64_t files_checked = 0;
    uint64_t bytes_hashed = 0;
    uint64_t pieces_checked = 0;     // tensors and experts
    std::vector<std::string> failures;
    bool ok() const { return failures.empty(); }
};

// Never throws for a damaged pack: every problem becomes a failure line.
VerifyReport verify_pack(const std::string& directory, bool quick, int threads,
                         const std::function<void(uint64_t done, uint64_t total)>& progress = {});

}  // namespace moepack
