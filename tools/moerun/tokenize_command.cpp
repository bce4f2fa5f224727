// `moerun tokenize --tokenizer PATH --json-in FILE [--decode]`: encodes a JSON array of
// strings into a JSON array of id arrays, or with --decode the reverse.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.hpp"
#include "error.hpp"
#include "mapped_file.hpp"
#include "tokenizer.hpp"

namespace moepack::tools {
namespace {

struct TokenizeOptions {
    std::string tokenizer;
    std::string json_in;
    bool decode = false;
    bool no_special = false;
    bool skip_special = false;
};

std::vector<uint32_t> ids_of(const nlohmann::json& item, const std::string& file, size_t index) {
    if (!item.is_array()) fail(file, ": item ", index, " is ", item.type_name(), ", expected an array of token ids");
    std::vector<uint32_t> ids;
    for (const auto& id : item) {
        if (!id.is_number_unsigned() || id.get<uint64_t>() > UINT32_MAX)
            fail(file, ": item ", index, ": ", id.dump(), " is not a token id");
        ids.push_back(static_cast<uint32_t>(id.get<uint64_t>()));
    }
    return ids;
}

nlohmann::json read_json_array(const std::string& path) {
    const MappedFile file(path);
    const auto* text = reinterpret_cast<const char*>(file.bytes().data());
    nlohmann::json j = nlohmann::json::parse(text, text + file.bytes().size(), nullptr, false);
    if (j.is_discarded()) fail(path, ": not valid UTF-8 JSON");
    if (!j.is_array()) fail(path, ": expected a JSON array, got ", j.type_name());
    return j;
}

int run(const TokenizeOptions& opt) {
    const nlohmann::json in = read_json_array(opt.json_in);
    const engine::Tokenizer tokenizer = engine::Tokenizer::load(opt.tokenizer);
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < in.size(); ++i) {
        if (opt.decode) {
            out.push_back(tokenizer.decode(ids_of(in[i], opt.json_in, i), opt.skip_special));
        } else {
            if (!in[i].is_string()) fail(opt.json_in, ": item ", i, " is ", in[i].type_name(), ", expected a string");
            out.push_back(tokenizer.encode(in[i].get<std::string>(), !opt.no_special));
        }
    }
    std::printf("%s\n", out.dump().c_str());
    return 0;
}

}  // namespace

Command add_tokenize_command(CLI::App& app) {
    auto opt = std::make_shared<TokenizeOptions>();
    CLI::App* cmd = app.add_subcommand("tokenize", "Encode strings to token ids, or decode ids to strings");
    cmd->add_option("--tokenizer", opt->tokenizer, "tokenizer.bin, or a pack directory holding one")->required();
    cmd->add_option("--json-in", opt->json_in, "JSON array of strings (or, with --decode, of id arrays)")->required();
    cmd->add_flag("--decode", opt->decode, "decode id arrays to strings");
    cmd->add_flag("--no-special", opt->no_special, "encode without the tokenizer's added ids (e.g. BOS)");
    cmd->add_flag("--skip-special", opt->skip_special, "decode without special tokens");
    return [opt]() { return run(*opt); };
}

}  // namespace moepack::tools
