// Shared run options of moerun: see engine_options.hpp.
#include "engine_options.hpp"

#include <charconv>

#include "error.hpp"
#include "model_config.hpp"
#include "pack_reader.hpp"

namespace moepack::tools {

void add_run_options(CLI::App* cmd, RunOptions& o) {
    cmd->add_option("-m,--model", o.model, "pack directory")->required();
    cmd->add_option("-t,--threads", o.engine.threads, "compute threads (0: every core)")->capture_default_str();
    cmd->add_option("-c,--ctx", o.engine.context, "context size in tokens (KV cache positions)")->capture_default_str();
    cmd->add_option("--batch", o.engine.batch, "prompt tokens per forward pass")->capture_default_str();
    cmd->add_option("--expert-cache-gb,--host-cache-gb", o.expert_cache_gb,
                    "RAM for cached experts in GB (default: half the available RAM, at most all experts; with "
                    "--backend cuda, none when GPU memory holds every expert)");
    cmd->add_option("--cache-policy", o.cache_policy, "expert cache eviction: lru, lfu or lru2")->capture_default_str();
    cmd->add_flag("--direct-io", o.engine.direct_io, "read experts with O_DIRECT (bypass the page cache)");
    cmd->add_flag("--verify-experts", o.engine.verify_experts, "check each expert's checksum when first loaded");
    cmd->add_option("--io-threads", o.engine.io_threads, "parallel expert reads with --direct-io")->capture_default_str();
    cmd->add_flag("!--no-read-overlap", o.engine.overlap_reads,
                  "with --direct-io: wait for a layer's expert reads before computing any of its experts (for measurements)");
    cmd->add_option("--backend", o.backend,
                    "cpu, cuda (qwen3_moe, mixtral, olmoe, qwen3_next, qwen3_5_moe), or auto: cuda when a GPU is present and runs the model")
        ->capture_default_str();
    cmd->add_option("--gpu-cache-gb", o.gpu_cache_gb,
                    "GPU memory for experts in GB (default: what is free after the other weights and the KV cache)");
    cmd->add_option("--gpu-misses", o.gpu_misses,
                    "decode experts not in GPU memory: copy (over PCIe), cpu (computed on the CPU) or auto (shared by "
                    "measured speed)")
        ->capture_default_str();
}

std::unique_ptr<engine::Engine> open_engine(RunOptions& o) {
    o.engine.cache_policy = engine::parse_cache_policy(o.cache_policy);
    if (o.expert_cache_gb >= 0) o.engine.expert_cache_bytes = static_cast<int64_t>(o.expert_cache_gb * 1e9);
    if (o.engine.io_threads < 1) fail("--io-threads must be at least 1, got ", o.engine.io_threads);
    if (o.gpu_cache_gb >= 0) o.engine.gpu_cache_bytes = static_cast<int64_t>(o.gpu_cache_gb * 1e9);
    o.engine.gpu_misses = engine::parse_miss_handling(o.gpu_misses);
    if (o.backend == "auto") {
        o.engine.backend = engine::Backend::cpu;
        const engine::CudaBackend& cuda = engine::cuda_backend();
        if (cuda.make && cuda.available()) {
            const auto pack = Pack::open(o.model);
            const ModelConfig config = model_config_from_json(pack->manifest().at("model"), pack->path_of("manifest.json"));
            if (cuda.runs(config)) o.engine.backend = engine::Backend::cuda;
        }
    } else if (o.backend == "cpu" || o.backend == "cuda") {
        o.engine.backend = o.backend == "cuda" ? engine::Backend::cuda : engine::Backend::cpu;
    } else {
        fail("--backend: expected cpu, cuda or auto, got '", o.backend, "'");
    }
    return engine::Engine::open(o.model, o.engine);
}

std::vector<int32_t> parse_token_ids(const std::string& text) {
    std::vector<int32_t> ids;
    size_t start = 0;
    while (start <= text.size()) {
        const size_t end = std::min(text.find(',', start), text.size());
        const std::string item = text.substr(start, end - start);
        int64_t v = 0;
        const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
        if (item.empty() || ec != std::errc() || ptr != item.data() + item.size() || v < 0 || v > INT32_MAX)
            fail("--tokens: item ", ids.size(), " ('", item, "') is not a token id");
        ids.push_back(static_cast<int32_t>(v));
        start = end + 1;
    }
    return ids;
}

}  // namespace moepack::tools
