// `moerun bench --model PACK [--prompt-len P --gen G]`: a warm-up prefill, then a measured
// prefill of P random tokens and G decode steps of random tokens; prints a table and a JSON
// object: speeds, bytes read from disk per token, expert cache hit rate, time per phase, peak
// RSS against the memory rule, and the ratio of the measured time per token to the bound set
// by the bytes it moved, the flops it computed and this machine's measured bandwidths and
// kernel rate. GPU runs add the GPU expert cache's hit rate, the bytes copied over PCIe and
// the rate achieved, and bound the token by its tiers: weights read from GPU memory, copies
// over PCIe, reads from disk and experts computed on the CPU, each at its measured rate.
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "commands.hpp"
#include "engine_options.hpp"
#include "error.hpp"
#include "machine_probes.hpp"
#include "pack_reader.hpp"
#include "thread_pool.hpp"

namespace moepack::tools {
namespace {

struct BenchOptions {
    RunOptions run;
    int64_t prompt_len = 512, gen = 128, warmup = 8;
    bool prefill_warmup = true;
    int read_samples = 256;
};

uint64_t peak_rss_bytes() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return static_cast<uint64_t>(u.ru_maxrss) * 1024;
}

double ms(uint64_t ns, int64_t tokens) { return tokens ? static_cast<double>(ns) / 1e6 / static_cast<double>(tokens) : 0; }

nlohmann::json phase_json(const engine::EngineStats& s, int64_t tokens) {
    return {{"embedding", ms(s.phases.embedding, tokens)},       {"attention", ms(s.phases.attention, tokens)},
            {"routing", ms(s.phases.routing, tokens)},           {"expert_io_wait", ms(s.phases.expert_io_wait, tokens)},
            {"expert_compute", ms(s.phases.expert_compute, tokens)}, {"head", ms(s.phases.head, tokens)}};
}

int run(BenchOptions& o) {
    auto engine = open_engine(o.run);
    const auto& c = engine->config();
    if (o.prompt_len < 1 || o.gen < 1) fail("--prompt-len and --gen must be at least 1");
    if (o.prompt_len + o.warmup + o.gen > engine->context())
        fail("--prompt-len + --warmup + --gen (", o.prompt_len + o.warmup + o.gen, ") exceed the context of ",
             engine->context(), " (raise --ctx)");
    std::mt19937 rng(11);
    std::vector<int32_t> prompt(static_cast<size_t>(o.prompt_len));
    for (auto& t : prompt) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(c.vocab_size));

    // A prefill of other random tokens first, not measured (as llama-bench's warm-up run):
    // the expert cache then holds what a running server's would, and the measured prefill
    // is not the process's first touch of its cache and buffers.
    if (o.prefill_warmup) {
        std::vector<int32_t> other(prompt.size());
        for (auto& t : other) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(c.vocab_size));
        engine->eval_prompt(other);
        engine->reset();
    }
    engine->reset_stats();
    engine->eval_prompt(prompt);
    const engine::EngineStats prefill = engine->stats();
    // Decode steps feed random ids, not the model's own choice: a random-weight model's
    // greedy output repeats one or two tokens, which would route every step to the same
    // experts and hide the I/O that real text causes.
    auto next = [&] { return static_cast<int32_t>(rng() % static_cast<uint32_t>(c.vocab_size)); };
    for (int64_t i = 0; i < o.warmup; ++i) engine->eval_token(next());
    engine->reset_stats();
    for (int64_t i = 0; i < o.gen; ++i) engine->eval_token(next());
    const engine::EngineStats decode = engine->stats();
    const uint64_t rss = peak_rss_bytes();   // before the probes allocate their buffers

    // the machine
    engine::ThreadPool pool(o.run.engine.threads);
    const double mem_bw = memory_read_bandwidth(pool);
    const Pack& pack = engine->pack();
    const bool moe = pack.has_experts();
    const double read_bw = moe ? expert_read_bandwidth(pack, o.run.engine.direct_io, o.run.engine.io_threads, o.read_samples) : 0;
    // kernel rates in the pack's expert encoding and in its dense encoding (that of the
    // output head, which every pack has and which follows --dense-bits as the layers do)
    const auto& el = pack.expert_layout();
    const int bits = moe ? el.bits : 16;
    const PackTensor* head = pack.find_tensor("lm_head.weight");
    if (!head) head = pack.find_tensor("embed_tokens.weight");
    const int dense_bits = head && head->encoding == DenseEncoding::affine ? head->bits : 16;
    const int dense_group = head && head->encoding == DenseEncoding::affine ? head->group_size : 0;
    const int64_t prefill_n = std::min<int64_t>(o.prompt_len, o.run.engine.batch);
    const int64_t I = moe ? static_cast<int64_t>(el.intermediate) : c.hidden_size;
    const double expert_rate = moe ? matmul_rate(pool, I, c.hidden_size, bits, el.group_size, 1) : 1;
    const double expert_prefill_rate = moe ? matmul_rate(pool, I, c.hidden_size, bits, el.group_size, prefill_n) : 1;
    const double dense_rate = matmul_rate(pool, c.hidden_size, c.hidden_size, dense_bits, dense_group, 1);
    const double dense_prefill_rate = matmul_rate(pool, c.hidden_size, c.hidden_size, dense_bits, dense_group, prefill_n);
    auto compute_time = [&](const engine::EngineStats& s, bool batched) {
        return s.phases.expert_flops / (batched ? expert_prefill_rate : expert_rate) +
               (s.phases.flops - s.phases.expert_flops) / (batched ? dense_prefill_rate : dense_rate);
    };
    const double g = static_cast<double>(o.gen);
    const double decode_s = static_cast<double>(decode.decode_ns) / 1e9 / g;
    const double bytes_disk = static_cast<double>(decode.experts.bytes_read) / g;
    // Memory traffic: the weights the products read, plus the expert blocks copied into the
    // cache (from the page cache: read and written; with O_DIRECT the device writes them).
    const double copy_factor = o.run.engine.direct_io ? 1.0 : 2.0;
    const double bytes_mem = static_cast<double>(decode.phases.weight_bytes) / g + copy_factor * bytes_disk;
    const double flops = decode.phases.flops / g;
    const double t_mem = bytes_mem / mem_bw, t_disk = read_bw > 0 ? bytes_disk / read_bw : 0;
    const double t_flop = compute_time(decode, false) / g;
    nlohmann::json bound_terms = {{"memory", t_mem * 1e3}, {"disk", t_disk * 1e3}, {"compute", t_flop * 1e3}};
    double bound = std::max({t_mem, t_disk, t_flop});
    // GPU runs: the tiers the experts come through, each at its measured rate (they overlap)
    const engine::DeviceCacheStats& gpu = decode.device;
    nlohmann::json gpu_json = nullptr;
    if (gpu.used) {
        const double expert_bytes = static_cast<double>(pack.expert_layout().bytes);
        const double t_hbm = static_cast<double>(decode.phases.weight_bytes) / g / gpu.device_memory_bytes_s;
        const double copied = static_cast<double>(gpu.bytes_copied) / g;
        const double t_pcie = (copied + static_cast<double>(gpu.bytes_prefetched) / g) / gpu.host_to_device_bytes_s;
        const double t_host = static_cast<double>(gpu.cpu_experts) / g * expert_bytes / mem_bw;
        bound_terms = {{"gpu_memory", t_hbm * 1e3}, {"pcie", t_pcie * 1e3}, {"disk", t_disk * 1e3}, {"cpu_experts_memory", t_host * 1e3}};
        bound = std::max({t_hbm, t_pcie, t_disk, t_host});
        const uint64_t gpu_lookups = gpu.hits + gpu.misses;
        gpu_json = {{"all_experts_resident", gpu.all_resident},
                    {"cache_slots", gpu.slots},
                    {"cache_bytes", gpu.bytes},
                    {"hit_rate", gpu.all_resident ? 1.0 : gpu_lookups ? static_cast<double>(gpu.hits) / static_cast<double>(gpu_lookups) : 0.0},
                    {"copied_bytes_per_token", copied},
                    {"pcie_gb_s_achieved", gpu.copy_ns ? static_cast<double>(gpu.bytes_copied) / static_cast<double>(gpu.copy_ns) : 0.0},
                    {"cpu_experts_per_token", static_cast<double>(gpu.cpu_experts) / g},
                    {"next_layer_prediction_accuracy",
                     gpu.predicted ? static_cast<double>(gpu.predicted_routed) / static_cast<double>(gpu.predicted) : 0.0},
                    {"prefetched_per_token", static_cast<double>(gpu.prefetched) / g},
                    {"prefetch_used_rate", gpu.prefetched ? static_cast<double>(gpu.prefetch_used) / static_cast<double>(gpu.prefetched) : 0.0},
                    {"prefill_copied_bytes", prefill.device.bytes_copied},
                    {"pcie_gb_s", gpu.host_to_device_bytes_s / 1e9},
                    {"gpu_memory_gb_s", gpu.device_memory_bytes_s / 1e9},
                    {"ratio_to_tier",
                     {{"gpu_memory", decode_s / t_hbm},
                      {"pcie", t_pcie > 0 ? decode_s / t_pcie : 0.0},
                      {"disk", t_disk > 0 ? decode_s / t_disk : 0.0}}}};
    }
    const double p = static_cast<double>(prefill.prompt_tokens);
    const double prefill_s = static_cast<double>(prefill.prompt_ns) / 1e9;
    const double prefill_bound = std::max({(static_cast<double>(prefill.phases.weight_bytes) +
                                            copy_factor * static_cast<double>(prefill.experts.bytes_read)) / mem_bw,
                                           read_bw > 0 ? static_cast<double>(prefill.experts.bytes_read) / read_bw : 0,
                                           compute_time(prefill, true)});
    const uint64_t lookups = decode.experts.hits + decode.experts.misses;
    const uint64_t kv_bytes = engine->context_bytes();
    uint64_t dense_file = 0;
    for (const auto& f : pack.files())
        if (f.path == "weights.bin") dense_file = f.bytes;

    nlohmann::json j = {
        {"model", o.run.model},
        {"threads", pool.size()},
        {"expert_bits", bits},
        {"prompt_tokens", prefill.prompt_tokens},
        {"decode_tokens", o.gen},
        {"prefill_tok_s", p / prefill_s},
        {"decode_tok_s", 1.0 / decode_s},
        {"decode_ms_per_token", decode_s * 1e3},
        {"disk_bytes_per_token", bytes_disk},
        {"memory_bytes_per_token", bytes_mem},
        {"flops_per_token", flops},
        {"expert_cache_hit_rate", lookups ? static_cast<double>(decode.experts.hits) / static_cast<double>(lookups) : 0.0},
        {"expert_cache_bytes", decode.cache_bytes},
        {"expert_cache_slots", decode.cache_slots},
        {"decode_phase_ms_per_token", phase_json(decode, o.gen)},
        {"prefill_phase_ms_per_token", phase_json(prefill, prefill.prompt_tokens)},
        {"peak_rss_bytes", rss},
        {"rss_rule_bytes", dense_file + decode.cache_bytes + kv_bytes},
        {"machine",
         {{"memory_read_gb_s", mem_bw / 1e9},
          {"expert_read_gb_s", read_bw / 1e9},
          {"direct_io", o.run.engine.direct_io},
          {"expert_kernel_gflop_s", expert_rate / 1e9},
          {"expert_prefill_kernel_gflop_s", expert_prefill_rate / 1e9},
          {"dense_kernel_gflop_s", dense_rate / 1e9},
          {"dense_prefill_kernel_gflop_s", dense_prefill_rate / 1e9}}},
        {"decode_bound_ms_per_token", bound * 1e3},
        {"decode_bound_terms_ms", bound_terms},
        {"gpu", gpu_json},
        {"decode_ratio_to_bound", decode_s / bound},
        {"prefill_ratio_to_bound", prefill_s / prefill_bound},
    };
    std::printf("%-28s %12.1f tok/s   (%lld tokens, ratio to bound %.2f)\n", "prefill", p / prefill_s,
                static_cast<long long>(prefill.prompt_tokens), prefill_s / prefill_bound);
    std::printf("%-28s %12.2f tok/s   (%.2f ms/token, bound %.2f ms: ratio %.2f)\n", "decode", 1.0 / decode_s,
                decode_s * 1e3, bound * 1e3, decode_s / bound);
    std::printf("%-28s %12.1f MB   (memory %.1f MB, %.2f GFLOP)\n", "disk read per token", bytes_disk / 1e6,
                bytes_mem / 1e6, flops / 1e9);
    std::printf("%-28s %12.1f %%    (%lld slots, %.2f GB)\n", "expert cache hit rate",
                100.0 * j["expert_cache_hit_rate"].get<double>(), static_cast<long long>(decode.cache_slots),
                static_cast<double>(decode.cache_bytes) / 1e9);
    for (const auto& [name, value] : j["decode_phase_ms_per_token"].items())
        std::printf("  %-26s %12.3f ms/token\n", name.c_str(), value.get<double>());
    std::printf("%-28s %12.1f MB   (rule: weights.bin + cache + KV = %.1f MB)\n", "peak RSS", static_cast<double>(rss) / 1e6,
                static_cast<double>(j["rss_rule_bytes"].get<uint64_t>()) / 1e6);
    std::printf("%-28s memory %.1f GB/s, expert reads %.2f GB/s%s, kernels %.0f / %.0f GFLOP/s (experts, dense; "
                "decode) %.0f / %.0f (prefill)\n",
                "machine", mem_bw / 1e9, read_bw / 1e9, o.run.engine.direct_io ? " (O_DIRECT)" : "", expert_rate / 1e9,
                dense_rate / 1e9, expert_prefill_rate / 1e9, dense_prefill_rate / 1e9);
    if (gpu.used)
        std::printf("%-28s %12.1f %%    (%lld slots, %.2f GB%s); copied %.1f MB/token at %.1f GB/s (link %.1f GB/s), "
                    "%.2f experts/token on the CPU\n",
                    "GPU expert cache hit rate", 100.0 * gpu_json["hit_rate"].get<double>(), static_cast<long long>(gpu.slots),
                    static_cast<double>(gpu.bytes) / 1e9, gpu.all_resident ? ", every expert" : "",
                    gpu_json["copied_bytes_per_token"].get<double>() / 1e6, gpu_json["pcie_gb_s_achieved"].get<double>(),
                    gpu.host_to_device_bytes_s / 1e9, gpu_json["cpu_experts_per_token"].get<double>());
    if (gpu.used && !gpu.all_resident)
        std::printf("%-28s %12.1f %%    (next layer's router on this layer's input; %.2f experts/token copied ahead, "
                    "%.1f %% of them used)\n",
                    "next-layer prediction", 100.0 * gpu_json["next_layer_prediction_accuracy"].get<double>(),
                    gpu_json["prefetched_per_token"].get<double>(), 100.0 * gpu_json["prefetch_used_rate"].get<double>());
    std::printf("%s\n", j.dump().c_str());
    return 0;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
    auto opt = std::make_shared<BenchOptions>();
    CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode speed against the machine's bounds");
    add_run_options(cmd, opt->run);
    cmd->add_option("--prompt-len", opt->prompt_len, "prompt tokens (random ids)")->capture_default_str();
    cmd->add_option("--gen", opt->gen, "decode steps measured")->capture_default_str();
    cmd->add_option("--warmup", opt->warmup, "decode steps before measuring")->capture_default_str();
    cmd->add_flag("!--no-prefill-warmup", opt->prefill_warmup,
                  "measure the very first prefill (by default a prefill of other tokens runs first, unmeasured)");
    cmd->add_option("--read-samples", opt->read_samples, "expert blocks read by the disk probe")->capture_default_str();
    return [opt]() { return run(*opt); };
}

}  // namespace moepack::tools
