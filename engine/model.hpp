// The interface between the engine and a model graph. A graph binds its weights once (views
// into weights.bin, shape-checked), then runs batches of tokens through the layers, keeping
// keys and values in the KV cache and getting routed experts from the expert store.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

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

struct ModelContext {
    const ModelConfig& config;
    const DenseWeights& weights;
    ExpertStore* experts;          // null when the model has no MoE layer
    ThreadPool& pool;
    KvCache& kv;
    PhaseTimes& times;
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

// The CUDA backend's graph maker, registered by the program when it links the backend
// (moepack_cuda's register_cuda_backend()); null otherwise.
using ModelFactory = std::unique_ptr<Model> (*)(const ModelContext& context);
void set_cuda_model_factory(ModelFactory factory);
ModelFactory cuda_model_factory();

// The graph for c.family; throws moepack::Error for a family or a feature this engine does
// not run yet, or for missing or misshapen weights (naming the tensor).
std::unique_ptr<Model> make_model(const ModelContext& context);

}  // namespace moepack::engine
