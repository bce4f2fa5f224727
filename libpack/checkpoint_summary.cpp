// Classifies a checkpoint's tensors, checks them against config.json, and totals them.
#include "checkpoint_summary.hpp"

#include <filesystem>
#include <map>
#include <set>

#include "error.hpp"

namespace moepack {
namespace {

int64_t mlx_bits(const ModelConfig& c, const std::string& tensor_name) {
    const auto dot = tensor_name.rfind('.');
    auto it = c.quant.overrides.find(tensor_name.substr(0, dot));
    return it != c.quant.overrides.end() ? it->second.first : c.quant.bits;
}

// Logical weight elements a tensor stands for (packed codes unpacked; scales count zero).
uint64_t weight_params(const ModelConfig& c, const TensorInfo& t, const TensorClass& cls) {
    if (cls.part == "weight") {
        if (t.dtype == DType::U32 && c.quant.kind == SourceQuant::mlx_affine)
            return t.numel * 32 / static_cast<uint64_t>(mlx_bits(c, t.name));
        return t.numel;
    }
    if (cls.part == "blocks") return t.numel * 2;  // two FP4 values per byte
    return 0;
}

void check_experts(const CheckpointSummary& s) {
    const ModelConfig& c = s.config;
    // (layer, projection) -> experts present with a weight (or blocks) tensor
    std::map<std::pair<int64_t, Projection>, std::set<int64_t>> present;
    std::set<int64_t> routed_layers;
    for (const auto& t : s.tensors) {
        if (t.cls.role == TensorRole::router && t.cls.part == "weight") routed_layers.insert(t.cls.layer);
        if (t.cls.role != TensorRole::expert || t.weight_params == 0) continue;
        auto& set = present[{t.cls.layer, t.cls.projection}];
        if (t.cls.expert >= 0) {
            set.insert(t.cls.expert);
        } else {
            const auto& shape = t.ref.info->shape;
            const int64_t n = shape.empty() ? 0 : shape[0];
            if (n != c.num_experts)
                fail(t.ref.file->path(), ": tensor '", t.ref.info->name, "': expected ", c.num_experts,
                     " experts in dimension 0, got ", n, " (shape ", shape_string(t.ref.info->shape), ")");
            for (int64_t e = 0; e < n; ++e) set.insert(e);
        }
    }
    const std::vector<Projection> split{Projection::gate, Projection::up, Projection::down};
    const std::vector<Projection> fused{Projection::gate_up, Projection::down};
    for (int64_t layer = 0; layer < c.num_layers; ++layer) {
        if (c.layers[static_cast<size_t>(layer)].ffn != FfnKind::moe) continue;
        if (!routed_layers.count(layer)) fail("layer ", layer, ": MoE layer has no router weight");
        const bool is_fused = present.count({layer, Projection::gate_up}) > 0;
        for (Projection p : is_fused ? fused : split) {
            auto it = present.find({layer, p});
            for (int64_t e = 0; e < c.num_experts; ++e)
                if (it == present.end() || !it->second.count(e))
                    fail("layer ", layer, ": expert ", e, " has no ", to_string(p), " projection");
        }
    }
}

}  // namespace

uint64_t CheckpointSummary::per_expert_bytes() const {
    return num_expert_instances ? expert_bytes / static_cast<uint64_t>(num_expert_instances) : 0;
}

uint64_t CheckpointSummary::per_expert_weight_params() const {
    return num_expert_instances ? expert_weight_params / static_cast<uint64_t>(num_expert_instances) : 0;
}

CheckpointSummary summarize_checkpoint(const Checkpoint& checkpoint) {
    const std::string config_path =
        (std::filesystem::path(checkpoint.directory()) / "config.json").string();
    if (!checkpoint.has_config()) fail(config_path, ": missing; the checkpoint's config.json is required");
    CheckpointSummary s;
    s.config = read_model_config(checkpoint.config(), config_path);
    for (const auto& ref : checkpoint.tensors()) {
        ClassifiedTensor t{ref, {}, 0};
        try {
            t.cls = classify_tensor(s.config, ref.info->name);
        } catch (const Error& e) {
            fail(ref.file->path(), ": ", e.what());
        }
        t.weight_params = weight_params(s.config, *ref.info, t.cls);
        s.total_bytes += ref.info->nbytes;
        switch (t.cls.role) {
            case TensorRole::expert:
                if (s.layout != ExpertLayout::none && s.layout != t.cls.layout)
                    fail(ref.file->path(), ": tensor '", ref.info->name, "' is in the ", to_string(t.cls.layout),
                         " expert layout but earlier experts are ", to_string(s.layout));
                s.layout = t.cls.layout;
                s.expert_bytes += ref.info->nbytes;
                s.expert_weight_params += t.weight_params;
                if (t.cls.part == "bias") s.expert_bias_params += ref.info->numel;
                break;
            case TensorRole::skipped:
                s.skipped_bytes += ref.info->nbytes;
                break;
            default:
                s.non_expert_bytes += ref.info->nbytes;
        }
        s.tensors.push_back(std::move(t));
    }
    s.num_expert_instances = s.config.num_moe_layers() * s.config.num_experts;
    check_experts(s);
    return s;
}

nlohmann::json to_json(const CheckpointSummary& s, bool with_tensors) {
    using nlohmann::json;
    json j = {
        {"architecture", s.config.model_type},
        {"family", to_string(s.config.family)},
        {"num_layers", s.config.num_layers},
        {"num_moe_layers", s.config.num_moe_layers()},
        {"num_experts", s.config.num_experts},
        {"experts_per_token", s.config.experts_per_token},
        {"expert_layout", to_string(s.layout)},
        {"source_quantization", to_string(s.config.quant.kind)},
        {"num_tensors", s.tensors.size()},
        {"total_bytes", s.total_bytes},
        {"non_expert_bytes", s.non_expert_bytes},
        {"expert_bytes", s.expert_bytes},
        {"skipped_bytes", s.skipped_bytes},
        {"per_expert_bytes", s.per_expert_bytes()},
        {"per_expert_params", s.per_expert_weight_params()},
        {"config", to_json(s.config)},
    };
    if (with_tensors) {
        json rows = json::array();
        for (const auto& t : s.tensors) {
            json row = {{"name", t.ref.info->name},
                        {"dtype", dtype_name(t.ref.info->dtype)},
                        {"shape", t.ref.info->shape},
                        {"bytes", t.ref.info->nbytes},
                        {"role", to_string(t.cls.role)}};
            if (t.cls.layer >= 0) row["layer"] = t.cls.layer;
            if (t.cls.role == TensorRole::expert) {
                row["projection"] = to_string(t.cls.projection);
                if (t.cls.expert >= 0) row["expert"] = t.cls.expert;
            }
            if (!t.cls.skip_reason.empty()) row["skip_reason"] = t.cls.skip_reason;
            rows.push_back(std::move(row));
        }
        j["tensors"] = std::move(rows);
    }
    return j;
}

}  // namespace moepack
