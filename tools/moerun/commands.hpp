// Subcommands of the `moerun` tool. Each registers its options on the CLI11 app and
// returns the callback that runs it; errors propagate as moepack::Error to main().
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

#include "cli_main.hpp"

namespace moepack::tools {

Command add_tokenize_command(CLI::App& app);
Command add_tokenize_bench_command(CLI::App& app);
Command add_eval_command(CLI::App& app);
Command add_generate_command(CLI::App& app);
Command add_chat_command(CLI::App& app);
Command add_bench_command(CLI::App& app);

}  // namespace moepack::tools
