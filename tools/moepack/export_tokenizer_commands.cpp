// `moepack export-vocab SRC -o OUT` and `moepack export-tokenizer SRC -o OUT`: a checkpoint's
// tokenizer as vocab.bin (formats/vocab.md) or tokenizer.bin (formats/tokenizer.md).
#include <cstdio>
#include <memory>
#include <string>

#include "chat_template_family.hpp"
#include "commands.hpp"
#include "tokenizer_export.hpp"

namespace moepack::tools {
namespace {

struct ExportOptions {
    std::string source;
    std::string output;
};

std::shared_ptr<ExportOptions> add_export_options(CLI::App& app, const char* name, const char* help) {
    auto opt = std::make_shared<ExportOptions>();
    CLI::App* cmd = app.add_subcommand(name, help);
    cmd->add_option("source", opt->source, "checkpoint directory with tokenizer.json (+ tokenizer_config.json)")
        ->required();
    cmd->add_option("-o,--output", opt->output, "output file")->required();
    return opt;
}

}  // namespace

Command add_export_vocab_command(CLI::App& app) {
    auto opt = add_export_options(app, "export-vocab", "Write vocab.bin: the bytes each token id prints");
    return [opt]() {
        const DecodeTable t = export_vocab(opt->source, opt->output);
        std::printf("wrote %s: %zu token ids\n", opt->output.c_str(), t.tokens.size());
        return 0;
    };
}

Command add_export_tokenizer_command(CLI::App& app) {
    auto opt = add_export_options(app, "export-tokenizer",
                                  "Write tokenizer.bin: everything the engine needs to encode, decode and format chats");
    return [opt]() {
        const TokenizerData d = export_tokenizer(opt->source, opt->output);
        std::printf("wrote %s: %zu token ids, %zu merges, %zu added tokens, chat format %s\n", opt->output.c_str(),
                    d.decode.tokens.size(), d.merges.size(), d.added.size(), to_string(d.chat_format));
        return 0;
    };
}

}  // namespace moepack::tools
