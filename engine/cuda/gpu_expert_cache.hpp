// The routed experts in GPU memory. When the budget (--gpu-cache-gb) holds every expert
// block of every MoE layer, they are uploaded at open, side by side per layer, and nothing
// moves afterwards. Otherwise GPU memory holds a cache of slots (one expert block each,
// evicted by the host cache's policies): the layer's chosen experts are looked up on the
// host (their ids cross once per layer), misses are copied into victim slots from the host
// RAM cache (the expert store, page-locked so the copies are DMA) on a copy stream of their
// own, and the layer's expert -> slot table, kept in GPU memory, is brought up to date before
// the expert kernels read it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "cache_policy.hpp"
#include "cuda/device_resources.hpp"
#include "kernels.hpp"
#include "model.hpp"

namespace moepack::engine {
class ExpertStore;
}

namespace moepack::cuda {

class GpuExpertCache {
public:
    // Every expert resident when budget_bytes holds them all; else a cache of the slots it
    // holds (fewer than one layer's experts: an error naming the budget).
    GpuExpertCache(engine::ExpertStore& store, const ModelConfig& c, uint64_t budget_bytes,
                   engine::DeviceCacheStats& stats);
    ~GpuExpertCache();
    GpuExpertCache(const GpuExpertCache&) = delete;
    GpuExpertCache& operator=(const GpuExpertCache&) = delete;

    bool all_resident() const { return all_resident_; }
    // Block 0 of `layer` (every expert resident: the layer's first block; else the first slot)
    // and how the kernels find expert e's block from it.
    const std::byte* base(int64_t layer) const;
    ExpertBlocks blocks(int64_t layer) const;

    // Slots place(..., ahead) may still take (the others hold pinned experts).
    int64_t unpinned_slots() const { return slots_ - static_cast<int64_t>(pinned_.size()); }
    // Whether expert e of `layer` is in GPU memory (counts nothing).
    bool resident(int64_t layer, int32_t expert) const;
    // Takes slots for those of `experts` (distinct, of `layer`) not in GPU memory, pinning
    // them all until the next call, and returns the missing ones (counted as misses, the
    // others as hits). Their blocks must then be copied in with copy_in(). ahead: experts
    // of a later layer fetched before they are routed to (prefetch): nothing is counted and
    // the pins of the last call stay.
    std::span<const int32_t> place(int64_t layer, std::span<const int32_t> experts, bool ahead = false);
    // Copies the blocks of `misses` (host memory, blocks[i] for misses[i]) into their slots
    // on the copy stream and updates the layer's slot table; work put on `compute` afterwards
    // waits for both. The host blocks must stay until wait_copies() returns. ahead: a
    // prefetch, which nothing waits for until wait_for_prefetch().
    void copy_in(int64_t layer, std::span<const int32_t> misses, std::span<const std::byte* const> blocks,
                 cudaStream_t compute, bool ahead = false);
    // Work put on `compute` afterwards waits for the last prefetch's copies.
    void wait_for_prefetch(cudaStream_t compute);
    // Waits for the copies; returns the seconds they took on the GPU (0 when none).
    double wait_copies();
    // place() + copy_in() of the misses' blocks from the expert store, a store-full at a time.
    void fetch(int64_t layer, std::span<const int32_t> experts, cudaStream_t compute);

private:
    int64_t index_of(int64_t layer) const;
    int64_t take_slot();
    void upload_all();

    engine::ExpertStore& store_;
    const int64_t num_experts_;
    const uint64_t stride_;
    engine::DeviceCacheStats& stats_;
    std::vector<int64_t> index_of_layer_;   // model layer -> MoE layer index (-1: dense)
    int64_t moe_layers_ = 0;
    bool all_resident_ = false;
    int64_t slots_ = 0;
    DeviceMemory arena_;                    // slots_ blocks of stride_ bytes
    // cache mode
    DeviceMemory slot_table_;               // [moe layers, E] int32: expert -> slot (-1: absent)
    PinnedMemory slot_table_host_;          // its copy on the host, the source of the uploads
    std::vector<int64_t> slot_key_;         // slot -> moe layer index * E + expert (-1: free)
    std::vector<int64_t> free_, pinned_;
    std::vector<int32_t> misses_;
    engine::CachePolicy policy_;
    std::unique_ptr<Stream> copy_stream_;
    cudaEvent_t copy_start_ = nullptr, copied_ = nullptr, prefetched_ = nullptr;
    bool copies_pending_ = false, prefetch_pending_ = false;
    bool host_registered_ = false;          // the store's RAM cache page-locked
};

}  // namespace moepack::cuda
