// Shared helpers of the unit tests: fixture paths, scratch directories, error capture.
#pragma once

#include <cmath>
#include <cstdlib>
#include <vector>

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "error.hpp"

namespace moepack::test {

// The fixtures folder: $MOEPACK_FIXTURES when set (tests run from a copied tree),
// else the source tree's tests/fixtures.
inline std::filesystem::path fixtures_dir() {
    const char* env = std::getenv("MOEPACK_FIXTURES");
    return env != nullptr && *env != '\0' ? std::filesystem::path(env)
                                          : std::filesystem::path(MOEPACK_FIXTURES_DIR);
}

inline std::filesystem::path fixture_model(const std::string& name) {
    return fixtures_dir() / "models" / name;
}

// A fresh scratch directory, removed when the object goes out of scope.
class ScratchDir {
public:
    explicit ScratchDir(const std::string& name)
        : path_(std::filesystem::temp_directory_path() /
                ("moepack_" + name + "_" + std::to_string(::getpid()))) {
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    ~ScratchDir() { std::filesystem::remove_all(path_); }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

// The message of the moepack::Error `fn` throws, or "(no error)".
inline std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

// ||got - want|| / ||want|| (relative L2 error), in double.
inline double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
    double e = 0, r = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        e += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
        r += static_cast<double>(want[i]) * want[i];
    }
    return std::sqrt(e / r);
}

}  // namespace moepack::test
