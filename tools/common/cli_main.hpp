// The shared main() of moepack and moerun: parses the command line, runs the chosen
// subcommand, and turns errors into one message on stderr with exit code 1 (2 for usage
// errors), so that libraries never print or exit.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace moepack::tools {

using Command = std::function<int()>;

// `tool` names the program in messages ("moepack: error: ...").
int run_cli(CLI::App& app, int argc, char** argv, const char* tool,
            const std::vector<std::pair<std::string, Command>>& commands);

}  // namespace moepack::tools
