// Writes the binary files of a pack from a PackPlan: weights.bin (non-expert tensors in
// plan order, 256-byte aligned) and one expert file per MoE layer (experts encoded in
// parallel, written in order on 4096-byte boundaries). Every file is written under a
// temporary name and renamed into place only when complete and fsynced. Each function
// returns the manifest entry of what it wrote, with XXH3-64 checksums.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>

#include "pack_plan.hpp"

namespace moepack {

class Pack;

// Called with the number of source bytes just consumed (from any thread).
using ProgressFn = std::function<void(uint64_t)>;

// Where experts come from: a checkpoint (through the plan) or an existing pack.
class ExpertSource {
public:
    virtual ~ExpertSource() = default;
    // Encodes expert `expert` of plan.layers[layer_index] into `block` (zeroed, layout.bytes).
    virtual void encode(size_t layer_index, int64_t expert, const pack::ExpertBlockLayout& layout, QuantMethod method,
                        std::span<std::byte> block) const = 0;
    // Source bytes one expert stands for (for progress).
    virtual uint64_t source_bytes_per_expert() const = 0;
};

class CheckpointExpertSource : public ExpertSource {
public:
    CheckpointExpertSource(const PackPlan& plan, uint64_t bytes_per_expert) : plan_(plan), bytes_(bytes_per_expert) {}
    void encode(size_t layer_index, int64_t expert, const pack::ExpertBlockLayout& layout, QuantMethod method,
                std::span<std::byte> block) const override;
    uint64_t source_bytes_per_expert() const override { return bytes_; }
private:
    const PackPlan& plan_;
    uint64_t bytes_;
};

// Re-encodes the experts of an existing pack (e.g. 2-bit from a 4-bit pack).
class PackExpertSource : public ExpertSource {
public:
    explicit PackExpertSource(const Pack& pack) : pack_(pack) {}
    void encode(size_t layer_index, int64_t expert, const pack::ExpertBlockLayout& layout, QuantMethod method,
                std::span<std::byte> block) const override;
    uint64_t source_bytes_per_expert() const override;
private:
    const Pack& pack_;
};

// Writes `dir`/weights.bin; returns the manifest "weights" object.
nlohmann::json write_weights(const PackPlan& plan, const std::string& dir, int threads, const ProgressFn& progress);

// Writes `dir`/experts/layer-NNN.bin for plan.layers[layer_index]; returns the manifest
// layer object ({"layer", "file", "experts": [{"offset", "bytes", "xxh3"}]}) plus the
// file's "bytes" and "xxh3".
nlohmann::json write_expert_layer(const PackPlan& plan, size_t layer_index, const ExpertSource& source,
                                  const std::string& dir, int threads, const ProgressFn& progress);

}  // namespace moepack
