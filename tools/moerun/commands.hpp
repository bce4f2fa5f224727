// Subcommands of the `moerun` tool. Each registers its options on the CLI11 app and
// returns the callback that runs it; errors propagate as moepack::Error to main().
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace moepack::tools {

using Command = std::function<int()>;

Command add_tokenize_command(CLI::App& app);
Command add_tokenize_bench_command(CLI::App& app);

}  // namespace moepack::tools
