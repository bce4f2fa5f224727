// `moerun`: runs packs. Turns library errors into a message on stderr and exit code 1
// (2 for usage errors).
#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include "commands.hpp"
#include "error.hpp"

int main(int argc, char** argv) {
    CLI::App app{"moerun: run Mixture-of-Experts packs"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "moerun 0.1.0");
    const std::map<std::string, moepack::tools::Command> commands{
        {"tokenize", moepack::tools::add_tokenize_command(app)},
        {"tokenize-bench", moepack::tools::add_tokenize_bench_command(app)},
    };
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;  // --help and --version succeed; usage errors are 2
    }
    try {
        for (const auto& [name, run] : commands)
            if (app.got_subcommand(name)) return run();
    } catch (const moepack::Error& e) {
        std::fprintf(stderr, "moerun: error: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "moerun: error: out of memory\n");
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "moerun: internal error: %s\n", e.what());
        return 1;
    }
    return 2;
}
