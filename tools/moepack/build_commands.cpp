// `moepack convert`, `extract-weights` and `repack-experts`: one builder (libpack's
// build_pack) behind three subcommands that differ only in which parts they write.
#include <sys/resource.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "commands.hpp"
#include "error.hpp"
#include "pack_builder.hpp"
#include "progress.hpp"
#include "text_format.hpp"

namespace moepack::tools {
namespace {

struct BuildOptions {
    std::string source, output;
    int expert_bits = 4, dense_bits = 16, group_size = pack::kDefaultGroupSize, threads = 0;
    bool minmax = false, resume = false, force = false;
};

enum class Parts { all, weights, experts };

Command add_build_command(CLI::App& app, const char* name, const char* description, Parts parts) {
    auto opt = std::make_shared<BuildOptions>();
    CLI::App* cmd = app.add_subcommand(name, description);
    cmd->add_option("source", opt->source,
                    parts == Parts::experts ? "checkpoint directory or .safetensors file, or a pack to re-quantize"
                                            : "checkpoint directory or .safetensors file")
        ->required();
    cmd->add_option("-o,--output", opt->output, "pack directory to write")->required();
    if (parts != Parts::weights) {
        cmd->add_option("--bits", opt->expert_bits, "expert bits: 2, 4, 8 or 16 (bf16, exact)")
            ->check(CLI::IsMember({2, 4, 8, 16}))
            ->capture_default_str();
    }
    if (parts != Parts::experts) {
        cmd->add_option("--dense-bits", opt->dense_bits,
                        "non-expert weights: 16 keeps the source precision; 8 or 4 quantizes matrices "
                        "(embeddings and head included; routers stay at 8 or more)")
            ->check(CLI::IsMember({4, 8, 16}))
            ->capture_default_str();
    }
    cmd->add_option("--group-size", opt->group_size, "values per quantization group: 32, 64 or 128")
        ->check(CLI::IsMember({32, 64, 128}))
        ->capture_default_str();
    cmd->add_flag("--minmax", opt->minmax, "plain min/max ranges instead of the error-minimising search");
    cmd->add_option("--threads", opt->threads, "worker threads (default: all cores)")->check(CLI::NonNegativeNumber);
    cmd->add_flag("--resume", opt->resume, "reuse the verified finished pieces of an interrupted run (OUT.partial)");
    cmd->add_flag("--force", opt->force, "replace an existing pack at OUT");
    return [opt, parts, name]() {
        BuildRequest r;
        r.source = opt->source;
        r.output = opt->output;
        r.options.expert_bits = opt->expert_bits;
        r.options.dense_bits = opt->dense_bits;
        r.options.group_size = opt->group_size;
        r.options.threads = opt->threads;
        r.options.method = opt->minmax ? QuantMethod::minmax : QuantMethod::search;
        r.weights = parts != Parts::experts;
        r.experts = parts != Parts::weights;
        r.resume = opt->resume;
        r.force = opt->force;
        ProgressLine line(name);
        r.progress = [&line](uint64_t done, uint64_t total) { line.update(done, total); };
        BuildResult result;
        try {
            result = build_pack(r);
        } catch (const Error& e) {
            std::string hint;
            if (std::filesystem::exists(staging_path(opt->output)))
                hint = concat(" (finished pieces are kept in ", staging_path(opt->output), "; rerun with --resume)");
            fail(e.what(), hint);
        }
        line.finish(result.source_bytes);
        rusage usage{};
        ::getrusage(RUSAGE_SELF, &usage);
        std::printf("wrote %s: %s in %d piece(s)%s; %s of source in %.2f s; peak RSS %s\n", result.output.c_str(),
                    human_bytes(result.pack_bytes).c_str(), result.pieces_written,
                    result.pieces_reused ? concat(", reused ", result.pieces_reused, " finished piece(s)").c_str() : "",
                    human_bytes(result.source_bytes).c_str(), line.elapsed_seconds(),
                    human_bytes(static_cast<uint64_t>(usage.ru_maxrss) * 1024).c_str());
        return 0;
    };
}

}  // namespace

Command add_convert_command(CLI::App& app) {
    return add_build_command(app, "convert",
                             "Convert a checkpoint into a pack: non-expert weights, re-quantized experts, config",
                             Parts::all);
}

Command add_extract_weights_command(CLI::App& app) {
    return add_build_command(app, "extract-weights",
                             "Write the non-expert weights of a checkpoint as a pack (or add them to its expert pack)",
                             Parts::weights);
}

Command add_repack_experts_command(CLI::App& app) {
    return add_build_command(app, "repack-experts",
                             "Write the routed experts of a checkpoint or pack, re-quantized, as a pack (or add them "
                             "to its weights pack)",
                             Parts::experts);
}

}  // namespace moepack::tools
