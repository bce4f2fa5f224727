// The per-layer context of a model: for each attention layer, keys and values [context,
// kv_heads * head_dim] float32; for each linear-attention layer, a fixed-size recurrent state
// (its convolution and delta-rule state, float32). All in one anonymous mapping, so that only
// the positions used become resident.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moepack::engine {

class KvCache {
public:
    // recurrent[l]: layer l keeps `recurrent_floats` values of recurrent state instead of
    // keys and values (empty: every layer is an attention layer).
    KvCache(int64_t layers, int64_t context, int64_t kv_dim, const std::vector<bool>& recurrent = {},
            int64_t recurrent_floats = 0);
    ~KvCache();
    KvCache(const KvCache&) = delete;
    KvCache& operator=(const KvCache&) = delete;

    int64_t context() const { return context_; }
    int64_t kv_dim() const { return kv_dim_; }
    int64_t layers() const { return static_cast<int64_t>(offsets_.size()); }
    bool is_recurrent(int64_t layer) const { return !recurrent_.empty() && recurrent_[static_cast<size_t>(layer)]; }
    int64_t recurrent_floats() const { return recurrent_floats_; }
    // Attention layers only.
    float* keys(int64_t layer) { return base_ + offsets_[static_cast<size_t>(layer)]; }
    float* values(int64_t layer) { return keys(layer) + context_ * kv_dim_; }
    const float* keys(int64_t layer) const { return base_ + offsets_[static_cast<size_t>(layer)]; }
    const float* values(int64_t layer) const { return keys(layer) + context_ * kv_dim_; }
    // Linear-attention layers only.
    float* recurrent(int64_t layer) { return base_ + offsets_[static_cast<size_t>(layer)]; }
    const float* recurrent(int64_t layer) const { return base_ + offsets_[static_cast<size_t>(layer)]; }
    // Zeroes every recurrent state (the start of a new context).
    void clear_recurrent();
    // Bytes of the whole cache: every attention layer's keys and values for the full
    // context, every recurrent state (what a GPU copy of it takes too).
    uint64_t bytes() const { return bytes_; }
    // Bytes holding positions [0, positions) of every layer (and the recurrent states).
    uint64_t bytes_used(int64_t positions) const;

private:
    int64_t context_, kv_dim_, recurrent_floats_;
    std::vector<bool> recurrent_;
    std::vector<int64_t> offsets_;   // per layer, in floats from base_
    float* base_ = nullptr;
    uint64_t bytes_ = 0;
};

}  // namespace moepack::engine
