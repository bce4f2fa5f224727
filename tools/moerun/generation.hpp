// The decode loop shared by `moerun generate` and `moerun chat`: sample, stop on an
// end-of-sequence or end-of-turn token, stream text as tokens arrive.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine.hpp"
#include "sampler.hpp"
#include "tokenizer.hpp"

namespace moepack::tools {

// The model's EOS ids and, with a tokenizer, its EOS and end-of-turn tokens.
std::set<int32_t> stop_tokens(const engine::Engine& engine, const engine::Tokenizer* tokenizer);

struct GenerationResult {
    std::vector<int32_t> tokens;   // generated, the stop token included when one ended it
    bool stopped = false;          // ended by a stop token (not by the length limit)
};

// Samples up to max_tokens after the engine's last logits; calls on_token for each
// generated token (before it is fed back) with its streamed text ("" without tokenizer).
GenerationResult generate(engine::Engine& engine, engine::Sampler& sampler, const std::set<int32_t>& stop,
                          int64_t max_tokens, const engine::Tokenizer* tokenizer,
                          const std::function<void(int32_t, const std::string&)>& on_token);

// SamplerOptions on a CLI11 command.
void add_sampler_options(CLI::App* cmd, engine::SamplerOptions& o);

// Loads the pack's tokenizer, or nullopt when the pack has none.
std::optional<engine::Tokenizer> pack_tokenizer(const engine::Engine& engine);

}  // namespace moepack::tools
