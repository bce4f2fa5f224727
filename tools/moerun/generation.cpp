// Decode loop and sampling options of moerun: see generation.hpp.
#include "generation.hpp"

#include <CLI/CLI.hpp>

#include "detokenizer.hpp"
#include "error.hpp"
#include "pack_reader.hpp"

namespace moepack::tools {

std::set<int32_t> stop_tokens(const engine::Engine& engine, const engine::Tokenizer* tokenizer) {
    std::set<int32_t> stop;
    for (int64_t id : engine.config().eos_token_ids) stop.insert(static_cast<int32_t>(id));
    if (!tokenizer) return stop;
    if (tokenizer->data().eos_id) stop.insert(static_cast<int32_t>(*tokenizer->data().eos_id));
    // end-of-turn markers of the chat formats the engine renders
    for (const char* marker : {"<|im_end|>", "<|eot_id|>", "<|end|>", "<|return|>", "<|call|>", "</s>",
                               "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"}) {
        const auto ids = tokenizer->encode(marker, false);
        if (ids.size() != 1) continue;
        try {   // a one-id ordinary token is not a marker
            if (tokenizer->added_token_text(ids[0]) == marker) stop.insert(static_cast<int32_t>(ids[0]));
        } catch (const Error&) {
        }
    }
    return stop;
}

GenerationResult generate(engine::Engine& engine, engine::Sampler& sampler, const std::set<int32_t>& stop,
                          int64_t max_tokens, const engine::Tokenizer* tokenizer,
                          const std::function<void(int32_t, const std::string&)>& on_token) {
    GenerationResult r;
    std::optional<engine::StreamDecoder> text;
    if (tokenizer) text.emplace(tokenizer->data().decode, true);
    auto logits = engine.last_logits();
    for (int64_t i = 0; i < max_tokens; ++i) {
        const int32_t next = sampler.sample(logits, engine.tokens());
        r.tokens.push_back(next);
        if (stop.count(next)) {
            r.stopped = true;
            on_token(next, text ? text->finish() : std::string());
            return r;
        }
        on_token(next, text ? text->push(static_cast<uint32_t>(next)) : std::string());
        if (engine.position() >= engine.context()) break;
        logits = engine.eval_token(next);
    }
    if (text) on_token(-1, text->finish());
    return r;
}

void add_sampler_options(CLI::App* cmd, engine::SamplerOptions& o) {
    cmd->add_option("--temp", o.temperature, "sampling temperature (0: greedy)")->capture_default_str();
    cmd->add_option("--top-k", o.top_k, "keep the k most likely tokens (0: off)")->capture_default_str();
    cmd->add_option("--top-p", o.top_p, "keep the smallest set with this probability mass (1: off)")->capture_default_str();
    cmd->add_option("--min-p", o.min_p, "drop tokens below min-p x the top probability (0: off)")->capture_default_str();
    cmd->add_option("--repeat-penalty", o.repeat_penalty, "penalty for recently seen tokens (1: off)")->capture_default_str();
    cmd->add_option("--repeat-last-n", o.repeat_last_n, "how many recent tokens the penalty sees")->capture_default_str();
    cmd->add_option("--seed", o.seed, "random seed")->capture_default_str();
}

std::optional<engine::Tokenizer> pack_tokenizer(const engine::Engine& engine) {
    if (engine.pack().tokenizer_file().empty()) return std::nullopt;
    return engine::Tokenizer::load(engine.pack().path_of(engine.pack().tokenizer_file()));
}

}  // namespace moepack::tools
