// Builds a pack directory safely: everything is written into OUT.partial, each finished
// piece (weights.bin, one expert layer) gets a sidecar with its checksums so an interrupted
// run can --resume, and only when every file is complete and fsynced is manifest.json
// written and the directory renamed to OUT. An existing OUT is replaced only with force,
// except that a pack made from the same source may gain the part it lacks.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "pack_plan.hpp"

namespace moepack {

struct BuildRequest {
    std::string source;        // checkpoint directory or file; or a pack (experts only)
    std::string output;        // the pack directory to create
    PackOptions options;
    bool weights = true;       // write weights.bin
    bool experts = true;       // write the expert files
    bool resume = false;       // reuse verified pieces of OUT.partial
    bool force = false;        // replace an existing OUT
    // Source bytes processed so far and in all (called from the builder's thread and workers).
    std::function<void(uint64_t done, uint64_t total)> progress;
    // Called after each piece is committed in OUT.partial, with its name (for tests).
    std::function<void(const std::string& piece)> after_piece;
};

struct BuildResult {
    std::string output;
    uint64_t pack_bytes = 0;       // files of the finished pack
    uint64_t source_bytes = 0;     // source bytes read for the pieces written
    int pieces_written = 0, pieces_reused = 0;
};

// Throws moepack::Error; on failure OUT is untouched and OUT.partial keeps finished pieces.
BuildResult build_pack(const BuildRequest& request);

// "OUT.partial" for "OUT" (trailing slashes ignored).
std::string staging_path(const std::string& output);

}  // namespace moepack
