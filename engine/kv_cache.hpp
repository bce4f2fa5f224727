// The key/value cache: per attention layer, keys and values [context, kv_heads * head_dim]
// float32, in anonymous mappings so that only the positions used become resident.
#pragma once

#include <cstdint>
#include <vector>

namespace moepack::engine {

class KvCache {
public:
    KvCache(int64_t layers, int64_t context, int64_t kv_dim);
    ~KvCache();
    KvCache(const KvCache&) = delete;
    KvCache& operator=(const KvCache&) = delete;

    int64_t context() const { return context_; }
    int64_t kv_dim() const { return kv_dim_; }
    int64_t layers() const { return layers_; }
    float* keys(int64_t layer) { return base_ + (2 * layer) * context_ * kv_dim_; }
    float* values(int64_t layer) { return base_ + (2 * layer + 1) * context_ * kv_dim_; }
    const float* keys(int64_t layer) const { return base_ + (2 * layer) * context_ * kv_dim_; }
    const float* values(int64_t layer) const { return base_ + (2 * layer + 1) * context_ * kv_dim_; }
    // Bytes holding positions [0, positions) of every layer.
    uint64_t bytes_used(int64_t positions) const;

private:
    int64_t layers_, context_, kv_dim_;
    float* base_ = nullptr;
    uint64_t bytes_ = 0;
};

}  // namespace moepack::engine
