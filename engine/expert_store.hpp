// The expert store: the only way routed experts reach compute. A bounded RAM cache of
// expert blocks (slots of the pack's expert stride, in one anonymous mapping) with a
// pluggable eviction policy; misses are read in parts with pread (through the page cache by
// the compute threads, or with O_DIRECT, aligned slots and the page cache bypassed, by a pool
// of I/O threads, optionally in the background), optionally checked against the manifest's
// XXH3 on first load.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache_policy.hpp"
#include "pack_reader.hpp"

namespace moepack::engine {

class ThreadPool;

struct ExpertStoreOptions {
    uint64_t cache_bytes = 0;   // rounded down to whole slots, at least min_slots
    int64_t min_slots = 1;      // the most experts one acquire() may pin
    CachePolicyKind policy = CachePolicyKind::lru2;
    bool direct_io = false;
    bool verify = false;        // XXH3 of each expert on its first load
    int io_threads = 16;
    // Callers may compute with the resident experts while the missing ones are read
    // (acquire() with `ready`). Only O_DIRECT reads run in the background: reads through the
    // page cache are copies that need the cores (overlapping them made decode slower).
    bool overlap_reads = true;
    // The compute threads, sent to sleep while reads are waited for (their polling would
    // otherwise take the cores the reads need); may be null.
    ThreadPool* compute = nullptr;
};

struct ExpertStoreStats {
    uint64_t hits = 0, misses = 0;
    uint64_t bytes_read = 0;     // from the expert files
    uint64_t read_ns = 0;        // wall time from the start of each batch of reads to its end
    uint64_t verified = 0;       // experts checked against their checksum
};

class ExpertStore {
public:
    // Opens the expert files of `pack` (which must outlive the store). Throws moepack::Error.
    ExpertStore(const Pack& pack, const ExpertStoreOptions& options);
    ~ExpertStore();
    ExpertStore(const ExpertStore&) = delete;
    ExpertStore& operator=(const ExpertStore&) = delete;

    const pack::ExpertBlockLayout& layout() const { return pack_.expert_layout(); }
    int64_t slots() const { return slots_; }
    uint64_t cache_bytes() const { return static_cast<uint64_t>(slots_) * layout().stride; }
    bool has_layer(int64_t layer) const { return layer_index_.count(layer) != 0; }
    bool overlap_reads() const { return options_.overlap_reads; }
    CachePolicyKind policy() const { return options_.policy; }
    // The RAM cache's memory (a GPU backend page-locks it so its copies to the GPU are DMA).
    std::span<std::byte> arena() const { return {arena_, static_cast<size_t>(arena_bytes_)}; }

    // Makes experts `experts` of model layer `layer` resident and pins them until
    // release_all(); out[i] receives the block of experts[i]. At most slots() distinct
    // experts may be pinned at once. Without `ready`, returns once every block is resident.
    // With it, the reads of the missing blocks go on in the background: ready[i] says whether
    // out[i] is resident already; call wait() before touching the others. Throws naming the
    // file, layer and expert on a read error or a checksum mismatch (from wait() when the
    // reads are in the background).
    void acquire(int64_t layer, std::span<const int32_t> experts, std::span<const std::byte*> out,
                 std::span<bool> ready = {});
    void wait();
    void release_all();   // waits for reads still in flight first
    // Whether the cache has a slot for every expert of the pack (nothing is ever evicted).
    bool holds_every_expert() const;
    // The block of a resident expert, or null (not resident, or being read); counts nothing
    // and pins nothing: the block stays where it is only while nothing is evicted.
    const std::byte* peek(int64_t layer, int32_t expert) const;

    const ExpertStoreStats& stats() const { return stats_; }
    void reset_stats() { stats_ = {}; }

private:
    struct Miss {
        int64_t slot, expert;
    };
    struct Slot {
        int64_t key = -1;   // layer * num_experts + expert, -1 when empty
        bool pinned = false;
    };
    class IoPool;
    int64_t take_slot();
    std::byte* slot_data(int64_t slot) const { return arena_ + static_cast<uint64_t>(slot) * layout().stride; }
    // Reads bytes [begin, end) of an expert block into its slot.
    void read_part(int64_t slot, size_t layer_index, int64_t expert, uint64_t begin, uint64_t end);
    // Throws naming the file, layer and expert when the block's XXH3 differs from the manifest.
    void verify(int64_t slot, size_t layer_index, int64_t expert);
    // Reads through the page cache are copies: the compute threads, idle until the experts
    // arrive, make them (no threads to wake or to put to sleep). O_DIRECT reads wait on the
    // device: the I/O threads issue them while the compute threads sleep.
    bool copies_on_compute_threads() const;
    void run_reads(size_t count, const std::function<void(size_t)>& task);

    const Pack& pack_;
    ExpertStoreOptions options_;
    int64_t slots_ = 0;
    std::byte* arena_ = nullptr;
    uint64_t arena_bytes_ = 0;
    std::vector<Slot> slot_info_;
    std::vector<int64_t> free_;
    std::vector<int64_t> pinned_;
    std::vector<Miss> pending_;                        // misses being read
    std::function<void(size_t)> read_task_;            // reads part i of the pending misses
    size_t read_tasks_ = 0;
    bool reads_started_ = false;                       // on the I/O threads, in the background
    size_t pending_layer_ = 0;                         // their expert_layers() index
    std::chrono::steady_clock::time_point read_start_;
    std::unordered_map<int64_t, int64_t> where_;       // key -> slot
    std::unordered_map<int64_t, size_t> layer_index_;  // model layer -> expert_layers() index
    std::vector<int> fds_;                             // per expert layer (O_DIRECT when asked)
    std::vector<std::vector<bool>> verified_;          // per expert layer, per expert
    CachePolicy policy_;
    std::unique_ptr<IoPool> io_;
    ExpertStoreStats stats_;
};

}  // namespace moepack::engine
