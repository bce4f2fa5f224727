// Command dispatch and error reporting shared by the command-line tools.
#include "cli_main.hpp"

#include <cstdio>
#include <exception>
#include <filesystem>
#include <new>

#include "error.hpp"

namespace moepack::tools {

int run_cli(CLI::App& app, int argc, char** argv, const char* tool,
            const std::vector<std::pair<std::string, Command>>& commands) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;  // --help and --version succeed; usage errors are 2
    }
    try {
        for (const auto& [name, run] : commands)
            if (app.got_subcommand(name)) return run();
    } catch (const Error& e) {
        std::fprintf(stderr, "%s: error: %s\n", tool, e.what());
        return 1;
    } catch (const std::filesystem::filesystem_error& e) {
        std::fprintf(stderr, "%s: error: %s\n", tool, e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "%s: error: out of memory\n", tool);
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: internal error: %s\n", tool, e.what());
        return 1;
    }
    return 2;
}

}  // namespace moepack::tools
