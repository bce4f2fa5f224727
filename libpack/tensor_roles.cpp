// Tensor-name classification for all supported architectures and expert layouts.
#include "tensor_roles.hpp"

#include <array>
#include <charconv>
#include <optional>

#include "error.hpp"

namespace moepack {
namespace {

// Prefixes of the text model (multimodal wrappers nest it) and of what is never packed.
constexpr std::array<std::string_view, 3> kTextPrefixes{"model.language_model.", "language_model.model.",
                                                        "model."};
constexpr std::array<std::string_view, 3> kHeadPrefixes{"lm_head.", "language_model.lm_head.",
                                                        "model.language_model.lm_head."};
struct SkipRule {
    std::string_view prefix;
    std::string_view reason;
};
constexpr std::array<SkipRule, 7> kSkipped{{
    {"model.visual.", "vision tower"},
    {"visual.", "vision tower"},
    {"vision_tower.", "vision tower"},
    {"model.vision_tower.", "vision tower"},
    {"mtp.", "multi-token prediction"},
    {"model.mtp.", "multi-token prediction"},
    {"multi_modal_projector.", "vision projector"},
}};

bool consume(std::string_view& s, std::string_view prefix) {
    if (s.substr(0, prefix.size()) != prefix) return false;
    s.remove_prefix(prefix.size());
    return true;
}

// Reads "<digits>." from the front of `s`.
std::optional<int64_t> consume_index(std::string_view& s) {
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || ptr == s.data() || ptr == s.data() + s.size() || *ptr != '.') return std::nullopt;
    s.remove_prefix(static_cast<size_t>(ptr - s.data()) + 1);
    return v;
}

std::optional<Projection> projection_of(std::string_view module) {
    if (module == "gate_proj" || module == "w1") return Projection::gate;
    if (module == "up_proj" || module == "w3") return Projection::up;
    if (module == "down_proj" || module == "w2") return Projection::down;
    return std::nullopt;
}

bool is_quant_part(std::string_view part) {
    return part == "weight" || part == "scales" || part == "biases" || part == "weight_scale_inv" ||
           part == "bias";
}

// The last dotted component that names a norm module ("input_layernorm.weight", "q_norm.weight").
bool is_norm(std::string_view rest) {
    const auto part_dot = rest.rfind('.');
    if (part_dot == std::string_view::npos) return false;
    std::string_view module = rest.substr(0, part_dot);
    const auto module_dot = module.rfind('.');
    if (module_dot != std::string_view::npos) module.remove_prefix(module_dot + 1);
    return module.ends_with("norm");
}

// Experts and routers of an MoE block; `rest` follows "mlp." or "block_sparse_moe.".
std::optional<TensorClass> classify_moe(std::string_view rest) {
    TensorClass c;
    std::string_view r = rest;
    if (consume(r, "experts.")) {
        c.role = TensorRole::expert;
        if (auto e = consume_index(r)) {   // per_expert: experts.{e}.{proj}.{part}
            const auto dot = r.find('.');
            if (dot == std::string_view::npos) return std::nullopt;
            auto proj = projection_of(r.substr(0, dot));
            const auto part = r.substr(dot + 1);
            if (!proj || !is_quant_part(part)) return std::nullopt;
            c.layout = ExpertLayout::per_expert;
            c.expert = *e;
            c.projection = *proj;
            c.part = std::string(part);
            return c;
        }
        // fused: experts.{gate_up_proj|down_proj}[_bias|_blocks|_scales|.weight|.bias]
        for (auto [stem, proj] : {std::pair{std::string_view("gate_up_proj"), Projection::gate_up},
                                  std::pair{std::string_view("down_proj"), Projection::down}}) {
            std::string_view s = r;
            if (!consume(s, stem)) continue;
            std::string_view part;
            if (s.empty()) part = "weight";
            else if (s == "_bias" || s == ".bias") part = "bias";
            else if (s == "_blocks") part = "blocks";
            else if (s == "_scales") part = "scales";
            else if (s == ".weight") part = "weight";
            else return std::nullopt;
            c.layout = ExpertLayout::fused;
            c.projection = proj;
            c.part = std::string(part);
            return c;
        }
        return std::nullopt;
    }
    if (consume(r, "switch_mlp.")) {
        const auto dot = r.find('.');
        if (dot == std::string_view::npos) return std::nullopt;
        auto proj = projection_of(r.substr(0, dot));
        const auto part = r.substr(dot + 1);
        if (!proj || !is_quant_part(part)) return std::nullopt;
        c.role = TensorRole::expert;
        c.layout = ExpertLayout::mlx_stacked;
        c.projection = *proj;
        c.part = std::string(part);
        return c;
    }
    std::string_view g = r;
    if (consume(g, "gate.") || consume(g, "router.")) {
        if (g == "e_score_correction_bias") c.part = "correction_bias";
        else if (is_quant_part(g)) c.part = std::string(g);
        else return std::nullopt;
        c.role = TensorRole::router;
        return c;
    }
    if (consume(g, "shared_expert.") || consume(g, "shared_experts.") || consume(g, "shared_expert_gate.")) {
        c.role = TensorRole::shared_expert;
        c.part = std::string(g);
        return c;
    }
    const auto dot = r.find('.');
    if (dot != std::string_view::npos && projection_of(r.substr(0, dot)) && is_quant_part(r.substr(dot + 1))) {
        c.role = TensorRole::dense_mlp;
        c.part = std::string(r.substr(dot + 1));
        return c;
    }
    return std::nullopt;
}

}  // namespace

TensorClass classify_tensor(const ModelConfig& config, std::string_view name) {
    const std::string full(name);
    for (const auto& rule : kSkipped) {
        if (name.substr(0, rule.prefix.size()) == rule.prefix) {
            TensorClass c;
            c.role = TensorRole::skipped;
            c.skip_reason = std::string(rule.reason);
            return c;
        }
    }
    for (auto prefix : kHeadPrefixes) {
        std::string_view r = name;
        if (consume(r, prefix)) {
            TensorClass c;
            c.role = TensorRole::head;
            c.part = std::string(r);
            return c;
        }
    }
    std::string_view r = name;
    bool has_prefix = false;
    for (auto prefix : kTextPrefixes)
        if (consume(r, prefix)) {
            has_prefix = true;
            break;
        }
    if (!has_prefix) fail("tensor '", full, "': not a name of a ", config.model_type, " checkpoint");

    TensorClass c;
    if (r == "norm.weight" || r == "norm.bias") {
        c.role = TensorRole::norm;
        c.part = std::string(r.substr(5));
        return c;
    }
    std::string_view e = r;
    if (consume(e, "embed_tokens.")) {
        c.role = TensorRole::embedding;
        c.part = std::string(e);
        return c;
    }
    if (!consume(r, "layers."))
        fail("tensor '", full, "': not a layer, embedding, norm or head tensor of ", config.model_type);
    auto layer = consume_index(r);
    if (!layer) fail("tensor '", full, "': layer index is not a number");
    if (*layer >= config.num_layers) {
        if (*layer < config.num_layers + config.num_mtp_layers) {
            c.role = TensorRole::skipped;
            c.layer = *layer;
            c.skip_reason = "multi-token prediction";
            return c;
        }
        fail("tensor '", full, "': layer ", *layer, " out of range (config has ", config.num_layers,
             " layers", config.num_mtp_layers ? concat(" + ", config.num_mtp_layers, " MTP") : std::string(),
             ")");
    }
    c.layer = *layer;
    const LayerDesc& desc = config.layers[static_cast<size_t>(*layer)];

    if (is_norm(r)) {
        c.role = TensorRole::norm;
        c.part = std::string(r);
        return c;
    }
    std::string_view a = r;
    if (consume(a, "self_attn.") || consume(a, "linear_attn.")) {
        c.role = TensorRole::attention;
        c.part = std::string(r);
        return c;
    }
    std::string_view m = r;
    if (consume(m, "mlp.") || consume(m, "block_sparse_moe.")) {
        if (auto moe = classify_moe(m)) {
            moe->layer = c.layer;
            const bool moe_only = moe->role == TensorRole::expert || moe->role == TensorRole::router;
            if (moe_only && desc.ffn == FfnKind::dense)
                fail("tensor '", full, "': layer ", c.layer, " is a dense layer in config.json but holds ",
                     to_string(moe->role), " weights");
            if (moe->role == TensorRole::dense_mlp && desc.ffn == FfnKind::moe)
                fail("tensor '", full, "': layer ", c.layer,
                     " is an MoE layer in config.json but holds a dense MLP");
            if (moe->expert >= config.num_experts)
                fail("tensor '", full, "': expert ", moe->expert, " out of range (config has ",
                     config.num_experts, " experts)");
            return *moe;
        }
    }
    fail("tensor '", full, "': unrecognised tensor of a ", config.model_type, " layer");
}

const char* to_string(TensorRole v) {
    switch (v) {
        case TensorRole::expert: return "expert";
        case TensorRole::router: return "router";
        case TensorRole::shared_expert: return "shared_expert";
        case TensorRole::attention: return "attention";
        case TensorRole::norm: return "norm";
        case TensorRole::dense_mlp: return "dense_mlp";
        case TensorRole::embedding: return "embedding";
        case TensorRole::head: return "head";
        case TensorRole::skipped: return "skipped";
    }
    return "?";
}

const char* to_string(ExpertLayout v) {
    switch (v) {
        case ExpertLayout::none: return "none";
        case ExpertLayout::per_expert: return "per_expert";
        case ExpertLayout::fused: return "fused";
        case ExpertLayout::mlx_stacked: return "mlx_stacked";
    }
    return "?";
}

const char* to_string(Projection v) {
    switch (v) {
        case Projection::none: return "none";
        case Projection::gate: return "gate";
        case Projection::up: return "up";
        case Projection::down: return "down";
        case Projection::gate_up: return "gate_up";
    }
    return "?";
}

}  // namespace moepack
