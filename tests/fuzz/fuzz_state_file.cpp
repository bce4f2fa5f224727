// Fuzz target for saved contexts (formats/state.md): each input is loaded as a state file
// into one engine, which must refuse it with moepack::Error or load it within bounds. The
// pack comes from the environment (MOEPACK_FUZZ_PACK; tools/run-tests.sh converts the
// qwen3_next fixture, whose layers keep keys and values and recurrent states, and seeds the
// corpus with a state that pack saved).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "engine.hpp"
#include "error.hpp"

namespace {

moepack::engine::Engine& engine() {
    static const std::unique_ptr<moepack::engine::Engine> e = [] {
        const char* pack = std::getenv("MOEPACK_FUZZ_PACK");
        if (!pack) {
            std::fprintf(stderr, "fuzz_state_file: set MOEPACK_FUZZ_PACK to a pack directory\n");
            std::abort();
        }
        moepack::engine::EngineOptions o;
        o.threads = 1;
        o.context = 64;
        return moepack::engine::Engine::open(pack, o);
    }();
    return *e;
}

const std::string& state_path() {
    static const std::string path =
        (std::filesystem::temp_directory_path() / ("moepack_fuzz_" + std::to_string(::getpid()) + ".state")).string();
    return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::ofstream(state_path(), std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    try {
        engine().state_load(state_path());
    } catch (const moepack::Error&) {
    }
    return 0;
}
