// `moepack`: converts Hugging Face MoE checkpoints into packs and inspects both.
#include "cli_main.hpp"
#include "commands.hpp"

int main(int argc, char** argv) {
    CLI::App app{"moepack: prepare Mixture-of-Experts checkpoints for streaming"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "moepack 0.1.0");
    using namespace moepack::tools;
    return run_cli(app, argc, argv, "moepack",
                   {
                       {"inspect", add_inspect_command(app)},
                       {"convert", add_convert_command(app)},
                       {"extract-weights", add_extract_weights_command(app)},
                       {"repack-experts", add_repack_experts_command(app)},
                       {"verify", add_verify_command(app)},
                       {"export-vocab", add_export_vocab_command(app)},
                       {"export-tokenizer", add_export_tokenizer_command(app)},
                   });
}
