// The engine's public API: open a pack, feed tokens, get logits; save and restore the
// context; read statistics. One Engine is one context (its own KV cache and expert cache);
// several may be open at once. Not thread-safe: call one Engine from one thread.
//
//   auto e = moepack::engine::Engine::open("model.pack", {});
//   auto logits = e->eval_prompt(prompt_ids);       // vocab floats for the last token
//   logits = e->eval_token(next_id);
//   e->state_save("chat.state");
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cache_policy.hpp"
#include "expert_store.hpp"
#include "model.hpp"
#include "model_config.hpp"

namespace moepack {
class Pack;
}

namespace moepack::engine {

struct EngineOptions {
    int threads = 0;                   // compute threads; 0: every core
    int64_t context = 4096;            // KV cache positions (prompt + generated)
    int64_t batch = 256;               // prompt tokens per forward pass
    int64_t expert_cache_bytes = -1;   // RAM: -1: half the available RAM, at most all experts (0 with
                                       // the CUDA backend when every expert fits GPU memory)
    int64_t gpu_cache_bytes = -1;      // CUDA backend, GPU memory for experts: -1: what is free
    MissHandling gpu_misses = MissHandling::automatic;   // CUDA backend: decode experts not in GPU memory
    CachePolicyKind cache_policy = CachePolicyKind::lru2;   // highest hit rate measured (with lfu)
    bool direct_io = false;            // O_DIRECT expert reads
    bool verify_experts = false;       // XXH3 of each expert on first load
    int io_threads = 16;               // parallel expert reads
    bool overlap_reads = true;         // with direct_io: compute resident experts while missing ones are read
    Backend backend = Backend::cpu;    // cuda: needs the CUDA backend registered and a GPU
};

struct EngineStats {
    int64_t prompt_tokens = 0, decode_tokens = 0;
    uint64_t prompt_ns = 0, decode_ns = 0;
    PhaseTimes phases;
    ExpertStoreStats experts;
    int64_t cache_slots = 0;
    uint64_t cache_bytes = 0;
    DeviceCacheStats device;           // the CUDA backend's expert cache (device.used)
};

class Engine {
public:
    // Opens and checks the pack, binds the model graph, sizes the caches. Throws
    // moepack::Error naming the file and what is wrong.
    static std::unique_ptr<Engine> open(const std::string& pack_directory, const EngineOptions& options);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    const ModelConfig& config() const;
    const Pack& pack() const;
    const EngineOptions& options() const;
    int64_t vocab_size() const;
    int64_t context() const;
    int64_t position() const;                       // tokens in the context
    const std::vector<int32_t>& tokens() const;     // the context's tokens
    uint64_t context_bytes() const;                 // KV cache and recurrent state in use

    // Appends tokens to the context and returns the logits of the last one. Throws for an
    // out-of-range id or when the context would overflow (nothing is appended then).
    std::span<const float> eval_prompt(std::span<const int32_t> tokens);
    // Like eval_prompt, and writes the logits of every token to `all` ([n, vocab]).
    void eval_prompt(std::span<const int32_t> tokens, std::vector<float>& all);
    std::span<const float> eval_token(int32_t token);
    // The logits of the last evaluated token (empty before the first).
    std::span<const float> last_logits() const;
    // Forgets the context (the expert cache stays warm).
    void reset();
    // Keeps the first `tokens` tokens of the context (the rest is recomputed when fed again).
    // Models with linear-attention layers evaluate the kept tokens again (their recurrent
    // state holds no earlier positions).
    void truncate(int64_t tokens);

    // The context (tokens, KV cache, last logits) to a file, written atomically; loading
    // checks that the file belongs to this pack and fits this context size.
    void state_save(const std::string& path) const;
    void state_load(const std::string& path);

    EngineStats stats() const;
    void reset_stats();

private:
    struct Impl;
    explicit Engine(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace moepack::engine
