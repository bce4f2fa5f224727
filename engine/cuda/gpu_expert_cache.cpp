// The routed experts in GPU memory: see gpu_expert_cache.hpp.
#include "cuda/gpu_expert_cache.hpp"

#include <algorithm>

#include "cuda_check.hpp"
#include "error.hpp"
#include "expert_store.hpp"

namespace moepack::cuda {

namespace {

int64_t slot_count(const engine::ExpertStore& store, const ModelConfig& c, uint64_t budget) {
    const uint64_t all = static_cast<uint64_t>(c.num_moe_layers() * c.num_experts);
    return static_cast<int64_t>(std::min(all, budget / store.layout().stride));
}

}  // namespace

GpuExpertCache::GpuExpertCache(engine::ExpertStore& store, const ModelConfig& c, uint64_t budget_bytes,
                               engine::DeviceCacheStats& stats)
    : store_(store), num_experts_(c.num_experts), stride_(store.layout().stride), stats_(stats),
      policy_(store.policy(), std::max<int64_t>(1, slot_count(store, c, budget_bytes))) {
    for (const LayerDesc& d : c.layers) index_of_layer_.push_back(d.ffn == FfnKind::moe ? moe_layers_++ : -1);
    slots_ = slot_count(store, c, budget_bytes);
    all_resident_ = slots_ == moe_layers_ * num_experts_;
    if (slots_ < num_experts_)
        fail("CUDA: ", static_cast<double>(budget_bytes) / 1e9, " GB of GPU memory for experts hold ", slots_,
             " of them; one layer's ", num_experts_, " need ", static_cast<double>(num_experts_ * stride_) / 1e9,
             " GB (raise --gpu-cache-gb)");
    arena_ = DeviceMemory(static_cast<size_t>(slots_) * stride_, "the GPU expert cache");
    stats_.used = true;
    stats_.all_resident = all_resident_;
    stats_.slots = slots_;
    stats_.bytes = static_cast<uint64_t>(slots_) * stride_;
    if (all_resident_) {
        upload_all();
        return;
    }
    const auto table = static_cast<size_t>(moe_layers_ * num_experts_);
    slot_table_ = DeviceMemory(table * sizeof(int32_t), "the GPU expert slot table");
    slot_table_host_ = PinnedMemory(table * sizeof(int32_t), "the GPU expert slot table (host)");
    std::fill_n(slot_table_host_.get<int32_t>(), table, -1);
    check_cuda(cudaMemcpy(slot_table_.get(), slot_table_host_.get(), table * sizeof(int32_t), cudaMemcpyHostToDevice),
               "uploading the expert slot table");
    slot_key_.assign(static_cast<size_t>(slots_), -1);
    for (int64_t s = slots_ - 1; s >= 0; --s) free_.push_back(s);
    copy_stream_ = std::make_unique<Stream>();
    check_cuda(cudaEventCreate(&copy_start_), "cudaEventCreate");
    check_cuda(cudaEventCreate(&copied_), "cudaEventCreate");
    check_cuda(cudaEventCreateWithFlags(&prefetched_, cudaEventDisableTiming), "cudaEventCreate");
    // Page-locked, the RAM cache is copied by DMA at the link's rate; where the system
    // refuses (locked-memory limits), copies go through the driver's staging buffers instead.
    const std::span<std::byte> host = store.arena();
    host_registered_ = cudaHostRegister(host.data(), host.size(), cudaHostRegisterDefault) == cudaSuccess;
    if (!host_registered_) cudaGetLastError();   // clear the error
}

GpuExpertCache::~GpuExpertCache() {
    if (copy_stream_) cudaStreamSynchronize(*copy_stream_);
    if (host_registered_) cudaHostUnregister(store_.arena().data());
    if (copy_start_) cudaEventDestroy(copy_start_);
    if (copied_) cudaEventDestroy(copied_);
    if (prefetched_) cudaEventDestroy(prefetched_);
}

int64_t GpuExpertCache::index_of(int64_t layer) const {
    const int64_t i = layer >= 0 && layer < static_cast<int64_t>(index_of_layer_.size())
                          ? index_of_layer_[static_cast<size_t>(layer)]
                          : -1;
    if (i < 0) fail("CUDA expert cache: layer ", layer, " has no routed experts");
    return i;
}

const std::byte* GpuExpertCache::base(int64_t layer) const {
    return arena_.get() + (all_resident_ ? static_cast<uint64_t>(index_of(layer) * num_experts_) * stride_ : 0);
}

ExpertBlocks GpuExpertCache::blocks(int64_t layer) const {
    ExpertBlocks b;
    b.stride = static_cast<int64_t>(stride_);
    if (!all_resident_) b.slot = slot_table_.get<int32_t>() + index_of(layer) * num_experts_;
    return b;
}

bool GpuExpertCache::resident(int64_t layer, int32_t expert) const {
    if (expert < 0 || expert >= num_experts_) fail("CUDA: layer ", layer, ": expert ", expert, " out of range (", num_experts_, ")");
    return all_resident_ || slot_table_host_.get<int32_t>()[index_of(layer) * num_experts_ + expert] >= 0;
}

// Every block of every MoE layer through the store's slots, a store-full at a time.
void GpuExpertCache::upload_all() {
    const int64_t chunk = store_.slots();
    std::vector<int32_t> ids;
    std::vector<const std::byte*> blocks;
    for (int64_t layer = 0; layer < static_cast<int64_t>(index_of_layer_.size()); ++layer) {
        const int64_t index = index_of_layer_[static_cast<size_t>(layer)];
        if (index < 0) continue;
        for (int64_t first = 0; first < num_experts_; first += chunk) {
            const int64_t count = std::min(chunk, num_experts_ - first);
            ids.resize(static_cast<size_t>(count));
            blocks.resize(static_cast<size_t>(count));
            for (int64_t i = 0; i < count; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(first + i);
            store_.acquire(layer, ids, blocks);
            for (int64_t i = 0; i < count; ++i) {
                std::byte* dst = arena_.get() + static_cast<uint64_t>(index * num_experts_ + first + i) * stride_;
                check_cuda(cudaMemcpy(dst, blocks[static_cast<size_t>(i)], store_.layout().bytes, cudaMemcpyHostToDevice),
                           "uploading experts");
            }
            store_.release_all();
        }
    }
}

int64_t GpuExpertCache::take_slot() {
    if (!free_.empty()) {
        const int64_t s = free_.back();
        free_.pop_back();
        return s;
    }
    const int64_t s = policy_.victim();
    if (s < 0) fail("CUDA expert cache: all ", slots_, " slots are pinned");
    slot_table_host_.get<int32_t>()[slot_key_[static_cast<size_t>(s)]] = -1;
    slot_key_[static_cast<size_t>(s)] = -1;
    policy_.on_evict(s);
    return s;
}

std::span<const int32_t> GpuExpertCache::place(int64_t layer, std::span<const int32_t> experts, bool ahead) {
    misses_.clear();
    if (all_resident_) {
        if (!ahead) stats_.hits += experts.size();
        return misses_;
    }
    if (!ahead) {
        for (const int64_t s : pinned_) policy_.unpin(s);
        pinned_.clear();
    }
    const int64_t index = index_of(layer);
    int32_t* table = slot_table_host_.get<int32_t>() + index * num_experts_;
    for (const int32_t e : experts) {
        if (e < 0 || e >= num_experts_) fail("CUDA: layer ", layer, ": expert ", e, " out of range (", num_experts_, ")");
        int64_t s = table[e];
        if (s >= 0) {
            stats_.hits += ahead ? 0 : 1;
        } else {
            s = take_slot();
            slot_key_[static_cast<size_t>(s)] = index * num_experts_ + e;
            table[e] = static_cast<int32_t>(s);
            misses_.push_back(e);
            stats_.misses += ahead ? 0 : 1;
        }
        policy_.pin(s);
        pinned_.push_back(s);
        policy_.on_access(s);
    }
    return misses_;
}

void GpuExpertCache::copy_in(int64_t layer, std::span<const int32_t> misses, std::span<const std::byte* const> blocks,
                             cudaStream_t compute, bool ahead) {
    if (misses.empty()) return;
    const int64_t index = index_of(layer);
    const int32_t* table = slot_table_host_.get<int32_t>() + index * num_experts_;
    const uint64_t bytes = store_.layout().bytes;
    const cudaStream_t copies = *copy_stream_;
    if (!ahead) check_cuda(cudaEventRecord(copy_start_, copies), "cudaEventRecord");
    for (size_t i = 0; i < misses.size(); ++i)
        check_cuda(cudaMemcpyAsync(arena_.get() + static_cast<uint64_t>(table[misses[i]]) * stride_, blocks[i], bytes,
                                   cudaMemcpyHostToDevice, copies),
                   "copying experts to the GPU");
    check_cuda(cudaMemcpyAsync(slot_table_.get<int32_t>() + index * num_experts_, table,
                               static_cast<size_t>(num_experts_) * sizeof(int32_t), cudaMemcpyHostToDevice, copies),
               "updating the expert slot table");
    if (ahead) {
        check_cuda(cudaEventRecord(prefetched_, copies), "cudaEventRecord");
        stats_.bytes_prefetched += misses.size() * bytes;
        prefetch_pending_ = true;
        return;
    }
    check_cuda(cudaEventRecord(copied_, copies), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(compute, copied_, 0), "cudaStreamWaitEvent");
    stats_.bytes_copied += misses.size() * bytes;
    copies_pending_ = true;
}

void GpuExpertCache::wait_for_prefetch(cudaStream_t compute) {
    if (!prefetch_pending_) return;
    prefetch_pending_ = false;
    check_cuda(cudaStreamWaitEvent(compute, prefetched_, 0), "cudaStreamWaitEvent");
}

double GpuExpertCache::wait_copies() {
    if (!copies_pending_) return 0;
    copies_pending_ = false;
    check_cuda(cudaEventSynchronize(copied_), "copying experts to the GPU");
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, copy_start_, copied_), "cudaEventElapsedTime");
    stats_.copy_ns += static_cast<uint64_t>(static_cast<double>(ms) * 1e6);
    return static_cast<double>(ms) / 1e3;
}

void GpuExpertCache::fetch(int64_t layer, std::span<const int32_t> experts, cudaStream_t compute) {
    const std::span<const int32_t> misses = place(layer, experts);
    const auto chunk = static_cast<size_t>(store_.slots());
    std::vector<const std::byte*> blocks;
    for (size_t first = 0; first < misses.size(); first += chunk) {
        const std::span<const int32_t> part = misses.subspan(first, std::min(chunk, misses.size() - first));
        blocks.resize(part.size());
        store_.acquire(layer, part, blocks);
        copy_in(layer, part, blocks, compute);
        wait_copies();
        store_.release_all();
    }
}

}  // namespace moepack::cuda
