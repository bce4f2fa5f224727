// `moepack inspect PATH [--json] [--tensors]`: what a checkpoint holds and what its pack
// would weigh; for a pack directory, what the pack holds (pack_inspect.cpp).
#include <cstdio>
#include <memory>
#include <string>

#include "checkpoint.hpp"
#include "checkpoint_summary.hpp"
#include "commands.hpp"
#include "error.hpp"
#include "pack_plan.hpp"
#include "text_format.hpp"

namespace moepack::tools {
namespace {

struct InspectOptions {
    std::string path;
    bool json = false;
    bool tensors = false;
};

// Exact pack sizes at each expert bit width (default group size, dense weights as stored).
uint64_t pack_bytes_at(const CheckpointSummary& s, int bits) {
    PackOptions o;
    o.expert_bits = bits;
    return plan_pack(s, o).total_bytes();
}

std::string layer_pattern(const ModelConfig& c) {
    std::string s;
    for (const auto& l : c.layers) {
        char a = l.attention == AttentionKind::full ? 'F' : l.attention == AttentionKind::sliding ? 'S' : 'L';
        s += a;
        s += l.ffn == FfnKind::moe ? 'm' : 'd';
        s += ' ';
    }
    return s;
}

void print_text(const CheckpointSummary& s, const InspectOptions& opt, size_t num_files) {
    const ModelConfig& c = s.config;
    std::printf("checkpoint      %s\n", opt.path.c_str());
    std::printf("architecture    %s (family %s)\n", c.model_type.c_str(), to_string(c.family));
    std::printf("layers          %lld (%lld MoE); per layer [F full, S sliding, L linear attention; m MoE, d dense]:\n"
                "                %s\n",
                static_cast<long long>(c.num_layers), static_cast<long long>(c.num_moe_layers()),
                layer_pattern(c).c_str());
    std::printf("hidden          %lld, vocab %lld, heads %lld/%lld kv, head_dim %lld, attention %s\n",
                static_cast<long long>(c.hidden_size), static_cast<long long>(c.vocab_size),
                static_cast<long long>(c.num_heads), static_cast<long long>(c.num_kv_heads),
                static_cast<long long>(c.head_dim), to_string(c.attention));
    std::printf("experts         %lld routed, top-%lld, intermediate %lld, routing %s%s; %lld shared\n",
                static_cast<long long>(c.num_experts), static_cast<long long>(c.experts_per_token),
                static_cast<long long>(c.expert_intermediate_size), to_string(c.routing.function),
                c.routing.normalize_topk ? " (renormalised)" : "",
                static_cast<long long>(c.num_shared_experts));
    std::printf("norms / rope    %s norms, qk-norm %s; rope %s theta %g on %lld dims, scaling %s\n",
                to_string(c.norm), to_string(c.qk_norm), to_string(c.rope.style), c.rope.theta,
                static_cast<long long>(c.rope.rotary_dim), c.rope.scaling.c_str());
    std::printf("expert layout   %s; source quantization %s; dtype %s\n", to_string(s.layout),
                to_string(c.quant.kind), c.source_dtype.empty() ? "(unstated)" : c.source_dtype.c_str());
    std::printf("tensors         %zu in %zu file(s), %s\n", s.tensors.size(), num_files,
                human_bytes(s.total_bytes).c_str());
    std::printf("  non-expert    %s\n", human_bytes(s.non_expert_bytes).c_str());
    std::printf("  experts       %s (%s and %llu weights per expert)\n", human_bytes(s.expert_bytes).c_str(),
                human_bytes(s.per_expert_bytes()).c_str(),
                static_cast<unsigned long long>(s.per_expert_weight_params()));
    std::printf("  skipped       %s (vision, multi-token prediction)\n", human_bytes(s.skipped_bytes).c_str());
    std::printf("pack size       16-bit %s, 8-bit %s, 4-bit %s, 2-bit %s (group size %d)\n",
                human_bytes(pack_bytes_at(s, 16)).c_str(), human_bytes(pack_bytes_at(s, 8)).c_str(),
                human_bytes(pack_bytes_at(s, 4)).c_str(), human_bytes(pack_bytes_at(s, 2)).c_str(),
                pack::kDefaultGroupSize);
    if (!opt.tensors) return;
    std::printf("\n%-64s %-8s %-20s %12s  %s\n", "name", "dtype", "shape", "bytes", "role");
    for (const auto& t : s.tensors) {
        std::string role = to_string(t.cls.role);
        if (t.cls.role == TensorRole::expert) {
            role += std::string(" ") + to_string(t.cls.projection);
            if (t.cls.expert >= 0) role += " #" + std::to_string(t.cls.expert);
        }
        if (!t.cls.skip_reason.empty()) role += " (" + t.cls.skip_reason + ")";
        std::printf("%-64s %-8s %-20s %12llu  %s\n", t.ref.info->name.c_str(),
                    std::string(dtype_name(t.ref.info->dtype)).c_str(), shape_string(t.ref.info->shape).c_str(),
                    static_cast<unsigned long long>(t.ref.info->nbytes), role.c_str());
    }
}

}  // namespace

Command add_inspect_command(CLI::App& app) {
    auto opt = std::make_shared<InspectOptions>();
    CLI::App* cmd = app.add_subcommand("inspect", "Describe a checkpoint (architecture, normalised config, expert "
                                                  "layout, sizes, pack sizes) or a pack (files, quantization, checksums)");
    cmd->add_option("path", opt->path, "checkpoint directory, .safetensors file or pack directory")->required();
    cmd->add_flag("--json", opt->json, "print one JSON object");
    cmd->add_flag("--tensors", opt->tensors, "list every tensor with its dtype, shape, size and role");
    return [opt]() {
        if (is_pack_directory(opt->path)) return inspect_pack(opt->path, opt->json, opt->tensors);
        const Checkpoint checkpoint = Checkpoint::open(opt->path);
        const CheckpointSummary summary = summarize_checkpoint(checkpoint);
        if (opt->json) {
            auto j = to_json(summary, opt->tensors);
            j["path"] = opt->path;
            j["num_files"] = checkpoint.files().size();
            j["pack_bytes"] = {{"16", pack_bytes_at(summary, 16)}, {"8", pack_bytes_at(summary, 8)},
                               {"4", pack_bytes_at(summary, 4)}, {"2", pack_bytes_at(summary, 2)}};
            std::printf("%s\n", j.dump(2).c_str());
        } else {
            print_text(summary, *opt, checkpoint.files().size());
        }
        return 0;
    };
}

}  // namespace moepack::tools
