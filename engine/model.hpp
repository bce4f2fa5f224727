// The interface between the engine and a model graph. A graph binds its weights once (views
// into weights.bin, shape-checked), then runs batches of tokens through the layers, keeping
// keys and values in the KV cache and getting routed experts from the expert store.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "model_config.hpp"

namespace moepack::engine {

class DenseWeights;
class ExpertStore;
class KvCache;
class ThreadPool;

// Wall time per phase of the forward pass, accumulated in nanoseconds.
struct PhaseTimes {
    uint64_t embedding = 0;        // token embedding lookups
    uint64_t attention = 0;        // norms, q/k/v/o projections, RoPE, attention
    uint64_t routing = 0;          // router logits and top-k
    uint64_t expert_io_wait = 0;   // waiting for expert blocks from the store
    uint64_t expert_compute = 0;   // routed expert products (and dense FFN layers)
    uint64_t head = 0;             // final norm and output projection
    double flops = 0;              // floating-point operations of all products
    double expert_flops = 0;       // the part in routed experts
    uint64_t weight_bytes = 0;     // weight bytes the products streamed from memory (and recurrent states)
};

// What a GPU graph reports of its expert cache, and the copy rates it measured at open.
struct DeviceCacheStats {
    bool used = false;                  // a GPU graph runs the model
    bool all_resident = false;          // every expert uploaded at open
    int64_t slots = 0;                  // expert blocks GPU memory holds
    uint64_t bytes = 0;                 // their GPU memory
    uint64_t hits = 0, misses = 0;      // lookups of routed experts in GPU memory
    uint64_t bytes_copied = 0;          // expert blocks copied host -> GPU
    uint64_t copy_ns = 0;               // GPU time of those copies
    uint64_t cpu_experts = 0;           // misses computed on the CPU instead of copied
    // next-layer prediction: the next MoE layer's router applied to this layer's input
    uint64_t predicted = 0, predicted_routed = 0;   // experts predicted; of them, routed to
    uint64_t prefetched = 0, prefetch_used = 0;     // copied ahead; of them, routed to
    uint64_t bytes_prefetched = 0;
    double host_to_device_bytes_s = 0;  // page-locked host -> GPU copy rate
    double device_memory_bytes_s = 0;   // GPU memory copy rate (read + write counted once)
    void reset_counters() {
        hits = misses = bytes_copied = copy_ns = cpu_experts = 0;
        predicted = predicted_routed = prefetched = prefetch_used = bytes_prefetched = 0;
    }
};

// What a GPU graph does with a decode token's routed experts that are not in GPU memory:
// copy them over, compute them on the CPU from host memory, or share them between the two
// in proportion to the rates it measures (automatic).
enum class MissHandling { automatic, copy, cpu };
MissHandling parse_miss_handling(const std::string& name);   // "auto", "copy", "cpu"

struct ModelContext {
    const ModelConfig& config;
    const DenseWeights& weights;
    ExpertStore* experts;          // null when the model has no MoE layer
    ThreadPool& pool;
    KvCache& kv;
    PhaseTimes& times;
    DeviceCacheStats& device;
    uint64_t device_expert_bytes = 0;   // GPU graphs: GPU memory for routed experts
    MissHandling device_misses = MissHandling::automatic;
};

class Model {
public:
    virtual ~Model() = default;
    // Runs tokens at positions [position, position + tokens.size()). logits receives
    // [tokens.size(), vocab] when all_logits, else the last token's [vocab].
    virtual void forward(std::span<const int32_t> tokens, int64_t position, bool all_logits, float* logits) = 0;
    // A graph that keeps its context elsewhere (GPU memory) copies positions [0, positions)
    // of it to the KV cache before a state is saved, and back after one is loaded.
    virtual void context_to_host(int64_t positions) { (void)positions; }
    virtual void context_from_host(int64_t positions) { (void)positions; }
};

// Which processor runs the graph.
enum class Backend { cpu, cuda };

// The CUDA backend, registered by the program when it links it (moepack_cuda's
// register_cuda_backend()); its members are null otherwise.
struct CudaBackend {
    std::unique_ptr<Model> (*make)(const ModelContext& context) = nullptr;
    bool (*available)() = nullptr;                // a CUDA device is present
    bool (*runs)(const ModelConfig& c) = nullptr;  // its graph runs this model
    uint64_t (*free_memory)() = nullptr;          // GPU memory free now; throws without a GPU
    // Page-locks host memory that the GPU copies into often (the engine's logits), so that
    // the copies go straight there; false when it cannot (the copies then still work).
    bool (*pin_host)(void* data, size_t bytes) = nullptr;
    void (*unpin_host)(void* data) = nullptr;
};
void set_cuda_backend(const CudaBackend& backend);
const CudaBackend& cuda_backend();

// The graph for c.family; throws moepack::Error for a family or a feature this engine does
// not run yet, or for missing or misshapen weights (naming the tensor).
std::unique_ptr<Model> make_model(const ModelContext& context);

}  // namespace moepack::engine
