// Options every `moerun` command that runs a model shares (--model, threads, context,
// expert cache and I/O), and parsing of comma-separated token ids.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine.hpp"

namespace moepack::tools {

struct RunOptions {
    std::string model;
    engine::EngineOptions engine;
    double expert_cache_gb = -1, gpu_cache_gb = -1;
    std::string cache_policy = "lru2";
    std::string backend = "auto";
    std::string gpu_misses = "auto";
};

// Registers --model, --threads, --ctx, --batch, --expert-cache-gb (--host-cache-gb),
// --cache-policy, --direct-io, --verify-experts, --io-threads, --backend, --gpu-cache-gb and
// --gpu-misses on `cmd`.
void add_run_options(CLI::App* cmd, RunOptions& options);
// Opens the engine the options describe.
std::unique_ptr<engine::Engine> open_engine(RunOptions& options);
// "1,2,3" -> {1, 2, 3}; throws moepack::Error naming the bad item.
std::vector<int32_t> parse_token_ids(const std::string& text);

}  // namespace moepack::tools
