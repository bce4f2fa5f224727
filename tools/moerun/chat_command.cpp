// `moerun chat --model PACK`: an interactive conversation on stdin/stdout using the pack's
// chat format. Each turn renders the whole conversation, keeps the part of the context
// that is unchanged (earlier turns are not evaluated again) and evaluates only the rest.
// Lines: text = a user message; /reset = new conversation; /exit (or end of input) = quit.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "chat_format.hpp"
#include "commands.hpp"
#include "engine_options.hpp"
#include "error.hpp"
#include "generation.hpp"

namespace moepack::tools {
namespace {

struct ChatCommandOptions {
    RunOptions run;
    engine::SamplerOptions sampler;
    std::string system;
    int64_t max_tokens = 1024;
    bool no_think = false;
};

int run(ChatCommandOptions& o) {
    auto engine = open_engine(o.run);
    const auto tokenizer = pack_tokenizer(*engine);
    if (!tokenizer) fail(o.run.model, ": the pack has no tokenizer, which chat needs");
    engine::Sampler sampler(o.sampler);
    const auto stop = stop_tokens(*engine, &*tokenizer);
    engine::ChatOptions chat;
    if (o.no_think) chat.enable_thinking = false;
    std::vector<engine::ChatMessage> messages;
    auto start = [&] {
        messages.clear();
        if (!o.system.empty()) messages.push_back({"system", o.system, std::nullopt, {}});
    };
    start();
    const bool interactive = isatty(0);
    std::string line;
    for (;;) {
        if (interactive) std::fputs("> ", stdout), std::fflush(stdout);
        if (!std::getline(std::cin, line) || line == "/exit") break;
        if (line == "/reset") {
            start();
            engine->reset();
            continue;
        }
        if (line.empty()) continue;
        messages.push_back({"user", line, std::nullopt, {}});
        const std::string rendered = engine::render_chat(*tokenizer, messages, chat);
        std::vector<int32_t> ids;
        for (uint32_t id : tokenizer->encode(rendered, false)) ids.push_back(static_cast<int32_t>(id));
        // keep the context's longest common prefix with the new rendering
        const auto& have = engine->tokens();
        size_t common = 0;
        while (common < have.size() && common < ids.size() && have[common] == ids[common]) ++common;
        if (common == ids.size()) --common;   // at least one token must be evaluated for fresh logits
        engine->truncate(static_cast<int64_t>(common));
        engine->eval_prompt(std::span<const int32_t>(ids).subspan(common));
        std::string reply;
        const auto r = generate(*engine, sampler, stop, o.max_tokens, &*tokenizer, [&](int32_t, const std::string& text) {
            reply += text;
            std::fputs(text.c_str(), stdout);
            std::fflush(stdout);
        });
        std::fputs("\n", stdout);
        if (r.stopped && engine->position() < engine->context()) engine->eval_token(r.tokens.back());
        messages.push_back({"assistant", reply, std::nullopt, {}});
    }
    return 0;
}

}  // namespace

Command add_chat_command(CLI::App& app) {
    auto opt = std::make_shared<ChatCommandOptions>();
    CLI::App* cmd = app.add_subcommand("chat", "Chat with the model (reads user messages from stdin)");
    add_run_options(cmd, opt->run);
    cmd->add_option("--system", opt->system, "system message");
    cmd->add_option("-n,--max-tokens", opt->max_tokens, "tokens per reply at most")->capture_default_str();
    cmd->add_flag("--no-think", opt->no_think, "ask models with a thinking switch (Qwen3) not to think");
    add_sampler_options(cmd, opt->sampler);
    return [opt]() { return run(*opt); };
}

}  // namespace moepack::tools
