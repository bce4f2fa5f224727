// Choosing the next token from logits: greedy at temperature 0, otherwise repetition
// penalty, temperature, top-k, top-p and min-p filtering (in that order, as llama.cpp's
// default chain), then a draw from a seeded generator.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace moepack::engine {

struct SamplerOptions {
    float temperature = 0.8f;       // 0: greedy
    int top_k = 40;                 // 0: off
    float top_p = 0.95f;            // 1: off
    float min_p = 0.05f;            // 0: off
    float repeat_penalty = 1.0f;    // 1: off; divides positive logits of recent tokens
    int repeat_last_n = 64;         // how many recent tokens the penalty looks at
    uint64_t seed = 0;
};

class Sampler {
public:
    explicit Sampler(const SamplerOptions& options);
    // `recent` is the context so far (its last repeat_last_n tokens are penalised).
    int32_t sample(std::span<const float> logits, std::span<const int32_t> recent);

private:
    SamplerOptions o_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace moepack::engine
