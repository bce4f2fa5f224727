// `moepack`: converts Hugging Face MoE checkpoints into packs and inspects both.
// Turns library errors into a message on stderr and exit code 1 (2 for usage errors).
#include <cstdio>
#include <exception>
#include <filesystem>
#include <utility>

#include "commands.hpp"
#include "error.hpp"

int main(int argc, char** argv) {
    CLI::App app{"moepack: prepare Mixture-of-Experts checkpoints for streaming"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "moepack 0.1.0");
    using namespace moepack::tools;
    const std::pair<const char*, Command> commands[] = {
        {"inspect", add_inspect_command(app)},
        {"convert", add_convert_command(app)},
        {"extract-weights", add_extract_weights_command(app)},
        {"repack-experts", add_repack_experts_command(app)},
        {"verify", add_verify_command(app)},
        {"export-vocab", add_export_vocab_command(app)},
        {"export-tokenizer", add_export_tokenizer_command(app)},
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
        std::fprintf(stderr, "moepack: error: %s\n", e.what());
        return 1;
    } catch (const std::filesystem::filesystem_error& e) {
        std::fprintf(stderr, "moepack: error: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "moepack: error: out of memory\n");
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "moepack: internal error: %s\n", e.what());
        return 1;
    }
    return 2;
}
