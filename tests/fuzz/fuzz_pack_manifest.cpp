// Fuzz target for the pack readers: the input is tried as manifest.json of a pack whose
// files exist (a real 2-layer pack is not needed: any referenced file must be rejected or
// read within bounds), and as the header of weights.bin and of an expert file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include "error.hpp"
#include "pack_format.hpp"
#include "pack_reader.hpp"

namespace {

const std::filesystem::path& pack_dir() {
    static const std::filesystem::path dir = [] {
        auto d = std::filesystem::temp_directory_path() / ("moepack_fuzz_pack_" + std::to_string(::getpid()));
        std::filesystem::create_directories(d / "experts");
        std::ofstream(d / "weights.bin") << std::string(512, '\0');
        std::ofstream(d / "experts" / "layer-000.bin") << std::string(8192, '\0');
        std::ofstream(d / "config.json") << "{}";
        return d;
    }();
    return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
    try {
        moepack::pack::decode_weights_header(bytes, "fuzz");
    } catch (const moepack::Error&) {
    }
    try {
        moepack::pack::decode_experts_header(bytes, "fuzz");
    } catch (const moepack::Error&) {
    }
    std::ofstream(pack_dir() / "manifest.json", std::ios::binary).write(reinterpret_cast<const char*>(data),
                                                                        static_cast<std::streamsize>(size));
    try {
        const auto p = moepack::Pack::open(pack_dir().string());
        std::vector<std::byte> block(p->has_experts() ? std::min<uint64_t>(p->expert_layout().bytes, 1 << 20) : 0);
        if (p->has_experts() && !p->expert_layers().empty() && p->expert_layout().bytes <= block.size())
            p->read_expert(0, 0, block);
    } catch (const moepack::Error&) {
    }
    return 0;
}
