// Shared by the engine tests: converting a fixture to a pack and reading the reference
// logits that transformers produced for it (tests/fixtures/reference).
#pragma once

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine.hpp"
#include "pack_builder.hpp"
#include "test_helpers.hpp"

namespace moepack::test {

struct Reference {
    std::vector<int32_t> prompt, greedy;   // greedy continuation of the prompt
    int64_t positions = 0, vocab = 0;
    std::vector<float> logits;              // [positions, vocab] over prompt + greedy
    std::vector<int32_t> sequence() const {
        std::vector<int32_t> s = prompt;
        s.insert(s.end(), greedy.begin(), greedy.end());
        s.resize(static_cast<size_t>(positions));
        return s;
    }
};

inline Reference load_reference(const std::string& name) {
    const auto dir = test::fixtures_dir() / "reference";
    std::ifstream in(dir / (name + ".json"));
    const auto j = nlohmann::json::parse(in);
    Reference r;
    r.prompt = j.at("prompt_ids").get<std::vector<int32_t>>();
    r.greedy = j.at("greedy_ids").get<std::vector<int32_t>>();
    r.positions = j.at("num_positions").get<int64_t>();
    r.vocab = j.at("vocab_size").get<int64_t>();
    r.logits.resize(static_cast<size_t>(r.positions * r.vocab));
    std::ifstream lf(dir / j.at("logits_file").get<std::string>(), std::ios::binary);
    lf.read(reinterpret_cast<char*>(r.logits.data()), static_cast<std::streamsize>(r.logits.size() * sizeof(float)));
    if (!lf) throw std::runtime_error("short reference logits file for " + name);
    return r;
}

inline std::string convert_fixture(const std::string& name, const std::filesystem::path& out, int bits,
                                   int dense_bits = 16) {
    BuildRequest r;
    r.source = fixture_model(name).string();
    r.output = out.string();
    r.options.expert_bits = bits;
    r.options.dense_bits = dense_bits;
    r.options.threads = 2;
    r.force = true;
    build_pack(r);
    return out.string();
}

// What the engine tests run with: two threads, 64 positions.
inline engine::EngineOptions small_engine_options() {
    engine::EngineOptions o;
    o.threads = 2;
    o.context = 64;
    o.io_threads = 2;
    return o;
}

// Feeds `tokens` one at a time (decode steps) and returns the logits of each, concatenated.
inline std::vector<float> logits_token_by_token(engine::Engine& e, const std::vector<int32_t>& tokens) {
    std::vector<float> out;
    for (int32_t t : tokens) {
        const auto l = e.eval_token(t);
        out.insert(out.end(), l.begin(), l.end());
    }
    return out;
}

}  // namespace moepack::test
