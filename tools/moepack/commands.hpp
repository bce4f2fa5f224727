// Subcommands of the `moepack` tool. Each registers its options on the CLI11 app and
// returns the callback that runs it; errors propagate as moepack::Error to main().
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "cli_main.hpp"

namespace moepack::tools {

Command add_inspect_command(CLI::App& app);
Command add_export_vocab_command(CLI::App& app);
Command add_export_tokenizer_command(CLI::App& app);
Command add_convert_command(CLI::App& app);
Command add_extract_weights_command(CLI::App& app);
Command add_repack_experts_command(CLI::App& app);
Command add_verify_command(CLI::App& app);

// `moepack inspect` on a pack directory (pack_inspect.cpp).
bool is_pack_directory(const std::string& path);
int inspect_pack(const std::string& path, bool json, bool tensors);

}  // namespace moepack::tools
