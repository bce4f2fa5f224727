// The engine's private state, shared by engine.cpp and state_file.cpp.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dense_weights.hpp"
#include "engine.hpp"
#include "expert_store.hpp"
#include "kv_cache.hpp"
#include "model.hpp"
#include "pack_reader.hpp"
#include "thread_pool.hpp"

namespace moepack::engine {

struct Engine::Impl {
    Impl(const std::string& directory, const EngineOptions& o);
    ~Impl();
    int64_t position() const { return static_cast<int64_t>(context_tokens.size()); }
    void check_tokens(std::span<const int32_t> ids) const;
    void run(std::span<const int32_t> ids, std::vector<float>* all);
    void save(const std::string& path) const;   // state_file.cpp
    void load(const std::string& path);

    EngineOptions options;
    std::unique_ptr<Pack> pack;
    ModelConfig config;
    std::unique_ptr<DenseWeights> weights;
    std::unique_ptr<ExpertStore> experts;
    std::unique_ptr<ThreadPool> pool;
    std::unique_ptr<KvCache> kv;
    PhaseTimes phases;
    DeviceCacheStats device;
    std::unique_ptr<Model> model;
    std::vector<int32_t> context_tokens;
    std::vector<float> last_logits;   // page-locked under the CUDA backend (its size never changes)
    bool logits_pinned = false;
    bool has_logits = false;
    EngineStats stats;
};

}  // namespace moepack::engine
