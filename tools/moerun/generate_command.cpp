// `moerun generate --model PACK --prompt TEXT | --tokens IDS [-n N] [sampling]`: evaluates
// the prompt, then streams generated text (or ids, for a pack without tokenizer) to stdout
// and ends with a line of prompt and decode speeds on stderr.
#include <cstdio>

#include "commands.hpp"
#include "engine_options.hpp"
#include "error.hpp"
#include "generation.hpp"

namespace moepack::tools {
namespace {

struct GenerateOptions {
    RunOptions run;
    engine::SamplerOptions sampler;
    std::string prompt, tokens, load_state, save_state;
    int64_t max_tokens = 128;
    bool ignore_eos = false;
    bool no_special = false;
};

double per_second(int64_t count, uint64_t ns) { return ns ? static_cast<double>(count) * 1e9 / static_cast<double>(ns) : 0.0; }

int run(GenerateOptions& o) {
    auto engine = open_engine(o.run);
    const auto tokenizer = pack_tokenizer(*engine);
    std::vector<int32_t> prompt;
    if (!o.tokens.empty()) {
        prompt = parse_token_ids(o.tokens);
    } else {
        if (!tokenizer) fail(o.run.model, ": the pack has no tokenizer; give the prompt as --tokens IDS");
        for (uint32_t id : tokenizer->encode(o.prompt, !o.no_special)) prompt.push_back(static_cast<int32_t>(id));
        if (prompt.empty() && o.load_state.empty()) fail("the prompt encodes to no tokens");
    }
    engine::Sampler sampler(o.sampler);
    if (!o.load_state.empty()) engine->state_load(o.load_state);
    if (!o.load_state.empty() && !o.no_special && !o.prompt.empty()) {   // a continuation: no second BOS
        prompt.clear();
        for (uint32_t id : tokenizer->encode(o.prompt, false)) prompt.push_back(static_cast<int32_t>(id));
    }
    if (!prompt.empty()) engine->eval_prompt(prompt);
    if (engine->last_logits().empty()) fail("nothing to generate from: give a prompt");
    const auto stop = o.ignore_eos ? std::set<int32_t>{} : stop_tokens(*engine, tokenizer ? &*tokenizer : nullptr);
    bool first = true;
    generate(*engine, sampler, stop, o.max_tokens, tokenizer ? &*tokenizer : nullptr,
             [&](int32_t id, const std::string& text) {
                 if (tokenizer) {
                     std::fputs(text.c_str(), stdout);
                 } else if (id >= 0) {
                     std::printf(first ? "%d" : ",%d", id);
                     first = false;
                 }
                 std::fflush(stdout);
             });
    std::fputs("\n", stdout);
    std::fflush(stdout);
    if (!o.save_state.empty()) engine->state_save(o.save_state);
    const auto s = engine->stats();
    std::fprintf(stderr, "prompt: %lld tokens, %.1f tok/s | decode: %lld tokens, %.1f tok/s | expert cache hit rate %.1f%%\n",
                 static_cast<long long>(s.prompt_tokens), per_second(s.prompt_tokens, s.prompt_ns),
                 static_cast<long long>(s.decode_tokens), per_second(s.decode_tokens, s.decode_ns),
                 s.experts.hits + s.experts.misses
                     ? 100.0 * static_cast<double>(s.experts.hits) / static_cast<double>(s.experts.hits + s.experts.misses)
                     : 0.0);
    return 0;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
    auto opt = std::make_shared<GenerateOptions>();
    CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt, streamed to stdout");
    add_run_options(cmd, opt->run);
    auto* prompt = cmd->add_option("-p,--prompt", opt->prompt, "prompt text");
    auto* tokens = cmd->add_option("--tokens", opt->tokens, "prompt as comma-separated token ids");
    prompt->excludes(tokens);
    tokens->excludes(prompt);
    cmd->add_option("-n,--max-tokens", opt->max_tokens, "tokens to generate at most")->capture_default_str();
    cmd->add_option("--load-state", opt->load_state, "continue a context saved with --save-state (the prompt is appended)");
    cmd->add_option("--save-state", opt->save_state, "save the context (prompt and generated tokens) at the end");
    cmd->add_flag("--ignore-eos", opt->ignore_eos, "do not stop at end-of-sequence tokens");
    cmd->add_flag("--no-special", opt->no_special, "encode the prompt without the tokenizer's added ids (e.g. BOS)");
    add_sampler_options(cmd, opt->sampler);
    cmd->callback([cmd] {
        if (cmd->count("--prompt") + cmd->count("--tokens") != 1) throw CLI::ValidationError("give --prompt or --tokens");
    });
    return [opt]() { return run(*opt); };
}

}  // namespace moepack::tools
