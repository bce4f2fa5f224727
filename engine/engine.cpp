// Engine: pack + dense weights + expert store + KV cache + model graph. See engine.hpp.
#include "engine.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>

#include "dense_weights.hpp"
#include "engine_impl.hpp"
#include "error.hpp"
#include "kv_cache.hpp"
#include "models/gated_deltanet.hpp"
#include "pack_reader.hpp"
#include "thread_pool.hpp"

namespace moepack::engine {

namespace {

uint64_t available_ram_bytes() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    uint64_t value = 0;
    std::string unit;
    while (in >> key >> value >> unit)
        if (key == "MemAvailable:") return value * 1024;
    return 0;
}

// GPU memory kept free for activations, quantised inputs and workspaces when sizing the
// GPU expert cache by default.
constexpr uint64_t kGpuWorkingBytes = 2'000'000'000;

uint64_t elapsed_ns(std::chrono::steady_clock::time_point start) {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
}

}  // namespace

Engine::Impl::Impl(const std::string& directory, const EngineOptions& o) : options(o) {
    pack = Pack::open(directory);
    config = model_config_from_json(pack->manifest().at("model"), pack->path_of("manifest.json") + ": model");
    if (o.context < 1) fail("context size must be at least 1, got ", o.context);
    if (o.batch < 1) fail("batch size must be at least 1, got ", o.batch);
    weights = std::make_unique<DenseWeights>(*pack);
    pool = std::make_unique<ThreadPool>(o.threads);
    std::vector<bool> recurrent;
    for (const LayerDesc& d : config.layers) recurrent.push_back(d.attention == AttentionKind::linear);
    const bool any_recurrent = std::find(recurrent.begin(), recurrent.end(), true) != recurrent.end();
    kv = std::make_unique<KvCache>(config.num_layers, o.context, config.num_kv_heads * config.head_dim, recurrent,
                                   any_recurrent ? gated_deltanet_state_floats(config) : 0);
    const CudaBackend& cuda = cuda_backend();
    if (o.backend == Backend::cuda && !cuda.make)
        fail("this build has no CUDA backend (built without nvcc, or with MOEPACK_CUDA=OFF)");
    const uint64_t all_experts = pack->has_experts() ? pack->expert_layers().size() *
                                                           static_cast<uint64_t>(pack->num_experts()) *
                                                           pack->expert_layout().stride
                                                     : 0;
    // GPU memory for experts: as asked, else what is free once the dense weights, the KV
    // cache and the working buffers have theirs
    uint64_t device_experts = 0;
    if (o.backend == Backend::cuda) {
        const uint64_t others = weights->bytes() + kv->bytes();
        const uint64_t free = cuda.free_memory();
        device_experts = o.gpu_cache_bytes >= 0 ? static_cast<uint64_t>(o.gpu_cache_bytes)
                         : free > others + kGpuWorkingBytes ? free - others - kGpuWorkingBytes
                                                            : 0;
    }
    if (config.num_moe_layers() > 0) {
        if (!pack->has_experts()) fail(directory, ": the model has MoE layers but the pack has no experts part");
        ExpertStoreOptions so;
        // A GPU graph holding every expert reads each through the store once, at open: by
        // default its RAM cache is then the least the store allows.
        const bool all_on_gpu = o.backend == Backend::cuda && device_experts >= all_experts;
        const uint64_t by_default = all_on_gpu ? 0 : std::min(all_experts, available_ram_bytes() / 2);
        so.cache_bytes = o.expert_cache_bytes >= 0 ? static_cast<uint64_t>(o.expert_cache_bytes) : by_default;
        so.min_slots = config.experts_per_token;
        so.policy = o.cache_policy;
        so.direct_io = o.direct_io;
        so.verify = o.verify_experts;
        so.io_threads = o.io_threads;
        so.overlap_reads = o.overlap_reads;
        so.compute = pool.get();
        experts = std::make_unique<ExpertStore>(*pack, so);
    }
    ModelContext context{config, *weights, experts.get(), *pool, *kv, phases, device};
    context.device_expert_bytes = device_experts;
    context.device_misses = o.gpu_misses;
    model = o.backend == Backend::cuda ? cuda.make(context) : make_model(context);
    last_logits.resize(static_cast<size_t>(config.vocab_size));
    if (o.backend == Backend::cuda) logits_pinned = cuda.pin_host(last_logits.data(), last_logits.size() * sizeof(float));
}

Engine::Impl::~Impl() {
    if (logits_pinned) cuda_backend().unpin_host(last_logits.data());
}

void Engine::Impl::check_tokens(std::span<const int32_t> ids) const {
    for (size_t i = 0; i < ids.size(); ++i)
        if (ids[i] < 0 || ids[i] >= config.vocab_size)
            fail("token ", i, ": id ", ids[i], " out of range (vocabulary of ", config.vocab_size, ")");
    if (static_cast<int64_t>(ids.size()) > options.context - position())
        fail(position() > 0 ? concat("the context holds ", position(), " tokens; ") : std::string(), ids.size(),
             " more exceed the context size of ", options.context, " (raise --ctx)");
}

void Engine::Impl::run(std::span<const int32_t> ids, std::vector<float>* all) {
    if (ids.empty()) fail("no tokens to evaluate");
    check_tokens(ids);
    const auto start = std::chrono::steady_clock::now();
    const int64_t vocab = config.vocab_size;
    if (all) all->resize(ids.size() * static_cast<size_t>(vocab));
    for (size_t first = 0; first < ids.size(); first += static_cast<size_t>(options.batch)) {
        const size_t n = std::min(ids.size() - first, static_cast<size_t>(options.batch));
        const bool last_chunk = first + n == ids.size();
        float* out = all ? all->data() + first * static_cast<size_t>(vocab) : last_logits.data();
        model->forward(ids.subspan(first, n), position(), all != nullptr, out);
        context_tokens.insert(context_tokens.end(), ids.begin() + static_cast<ptrdiff_t>(first),
                              ids.begin() + static_cast<ptrdiff_t>(first + n));
        if (all && last_chunk)
            std::copy_n(all->data() + (ids.size() - 1) * static_cast<size_t>(vocab), vocab, last_logits.data());
    }
    has_logits = true;
    const uint64_t ns = elapsed_ns(start);
    if (ids.size() == 1) {
        stats.decode_ns += ns;
        ++stats.decode_tokens;
    } else {
        stats.prompt_ns += ns;
        stats.prompt_tokens += static_cast<int64_t>(ids.size());
    }
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::open(const std::string& pack_directory, const EngineOptions& options) {
    return std::unique_ptr<Engine>(new Engine(std::make_unique<Impl>(pack_directory, options)));
}

const ModelConfig& Engine::config() const { return impl_->config; }
const Pack& Engine::pack() const { return *impl_->pack; }
const EngineOptions& Engine::options() const { return impl_->options; }
int64_t Engine::vocab_size() const { return impl_->config.vocab_size; }
int64_t Engine::context() const { return impl_->options.context; }
int64_t Engine::position() const { return impl_->position(); }
const std::vector<int32_t>& Engine::tokens() const { return impl_->context_tokens; }
uint64_t Engine::context_bytes() const { return impl_->kv->bytes_used(impl_->position()); }

std::span<const float> Engine::eval_prompt(std::span<const int32_t> tokens) {
    impl_->run(tokens, nullptr);
    return impl_->last_logits;
}

void Engine::eval_prompt(std::span<const int32_t> tokens, std::vector<float>& all) { impl_->run(tokens, &all); }

std::span<const float> Engine::eval_token(int32_t token) {
    impl_->run({&token, 1}, nullptr);
    return impl_->last_logits;
}

std::span<const float> Engine::last_logits() const {
    return impl_->has_logits ? std::span<const float>(impl_->last_logits) : std::span<const float>();
}

void Engine::reset() {
    impl_->context_tokens.clear();
    impl_->has_logits = false;
}

void Engine::truncate(int64_t tokens) {
    if (tokens < 0 || tokens > position()) fail("cannot truncate a context of ", position(), " tokens to ", tokens);
    if (tokens == position()) return;
    impl_->context_tokens.resize(static_cast<size_t>(tokens));
    impl_->has_logits = false;
    if (impl_->kv->recurrent_floats() > 0 && tokens > 0) {
        // a recurrent state cannot be rewound: the kept tokens are evaluated again from the start
        std::vector<int32_t> kept;
        kept.swap(impl_->context_tokens);
        impl_->run(kept, nullptr);
    }
}

EngineStats Engine::stats() const {
    EngineStats s = impl_->stats;
    s.phases = impl_->phases;
    s.device = impl_->device;
    if (impl_->experts) {
        s.experts = impl_->experts->stats();
        s.cache_slots = impl_->experts->slots();
        s.cache_bytes = impl_->experts->cache_bytes();
    }
    return s;
}

void Engine::reset_stats() {
    impl_->stats = {};
    impl_->phases = {};
    impl_->device.reset_counters();
    if (impl_->experts) impl_->experts->reset_stats();
}

void Engine::state_save(const std::string& path) const { impl_->save(path); }
void Engine::state_load(const std::string& path) { impl_->load(path); }

}  // namespace moepack::engine
