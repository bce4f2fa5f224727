// Reads config.json into the normalised model description. One table lists what each
// architecture implies; the reader resolves the key spellings of transformers 4.x and 5.x
// (num_experts / num_local_experts / n_routed_experts, rope_theta / rope_parameters,
// torch_dtype / dtype) and the nested text_config of multimodal wrappers.
#include "model_config.hpp"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <string_view>

#include "error.hpp"

namespace moepack {
namespace {

using nlohmann::json;

// What an architecture implies beyond its config keys.
struct ArchitectureTraits {
    std::string_view model_type;
    Family family;
    NormFlavour norm;
    QkNorm qk_norm;
    AttentionType attention;
    RoutingFunction routing;
    bool normalize_topk_default;   // when config.json has no norm_topk_prob
    bool normalize_topk_always;    // ignores norm_topk_prob (Mixtral renormalises always)
    Activation activation;
    bool dense_by_sparse_step;     // mlp_only_layers / decoder_sparse_step pick dense layers
    bool dense_by_first_k;         // first_k_dense_replace / moe_layer_freq pick dense layers
    bool hybrid_linear_attention;  // layer_types or full_attention_interval mix in DeltaNet
    bool attention_bias, attention_sinks, expert_bias;
};

constexpr std::array<ArchitectureTraits, 8> kArchitectures{{
    {"qwen3_moe", Family::qwen3_moe, NormFlavour::plain, QkNorm::per_head, AttentionType::gqa,
     RoutingFunction::softmax_topk, false, false, Activation::swiglu, true, false, false, false,
     false, false},
    {"mixtral", Family::mixtral, NormFlavour::plain, QkNorm::none, AttentionType::gqa,
     RoutingFunction::softmax_topk, true, true, Activation::swiglu, false, false, false, false,
     false, false},
    {"olmoe", Family::olmoe, NormFlavour::plain, QkNorm::full_width, AttentionType::gqa,
     RoutingFunction::softmax_topk, false, false, Activation::swiglu, false, false, false, false,
     false, false},
    {"qwen3_next", Family::qwen3_next, NormFlavour::one_plus, QkNorm::per_head,
     AttentionType::gated_gqa, RoutingFunction::softmax_topk, true, false, Activation::swiglu, true,
     false, true, false, false, false},
    {"qwen3_5_moe", Family::qwen3_5_moe, NormFlavour::one_plus, QkNorm::per_head,
     AttentionType::gated_gqa, RoutingFunction::softmax_topk, true, false, Activation::swiglu, true,
     false, true, false, false, false},
    {"qwen3_5_moe_text", Family::qwen3_5_moe, NormFlavour::one_plus, QkNorm::per_head,
     AttentionType::gated_gqa, RoutingFunction::softmax_topk, true, false, Activation::swiglu, true,
     false, true, false, false, false},
    {"deepseek_v3", Family::deepseek_v3, NormFlavour::plain, QkNorm::none, AttentionType::mla,
     RoutingFunction::sigmoid_grouped, true, false, Activation::swiglu, false, true, false, false,
     false, false},
    {"gpt_oss", Family::gpt_oss, NormFlavour::plain, QkNorm::none, AttentionType::gqa,
     RoutingFunction::topk_softmax, true, false, Activation::swiglu_clamped, false, false, false,
     true, true, true},
}};

const json& empty_object() {
    static const json empty = json::object();
    return empty;
}

// Looks keys up in the text model's config first, then in the outer (wrapper) config.
// Both must outlive the ConfigKeys.
class ConfigKeys {
public:
    ConfigKeys(const json& text, const json& outer, std::string label)
        : text_(text), outer_(outer), label_(std::move(label)) {}
    ConfigKeys(const json& object, std::string label) : ConfigKeys(object, empty_object(), std::move(label)) {}

    // The first of `names` present with a non-null value; nullptr when none.
    const json* find(std::initializer_list<const char*> names) const {
        for (const json* j : {&text_, &outer_})
            for (const char* n : names)
                if (j->contains(n) && !(*j)[n].is_null()) return &(*j)[n];
        return nullptr;
    }

    int64_t integer(std::initializer_list<const char*> names, std::optional<int64_t> fallback,
                    int64_t min_value) const {
        const json* v = find(names);
        if (!v) {
            if (fallback) return *fallback;
            fail(label_, ": missing \"", *names.begin(), "\"");
        }
        if (!v->is_number_integer() || v->get<int64_t>() < min_value)
            fail(label_, ": \"", *names.begin(), "\" must be an integer >= ", min_value,
                 ", got ", v->dump());
        return v->get<int64_t>();
    }

    double number(std::initializer_list<const char*> names, double fallback) const {
        const json* v = find(names);
        if (!v) return fallback;
        if (!v->is_number())
            fail(label_, ": \"", *names.begin(), "\" must be a number, got ", v->dump());
        return v->get<double>();
    }

    bool boolean(std::initializer_list<const char*> names, bool fallback) const {
        const json* v = find(names);
        if (!v) return fallback;
        if (!v->is_boolean())
            fail(label_, ": \"", *names.begin(), "\" must be true or false, got ", v->dump());
        return v->get<bool>();
    }

    std::string string(std::initializer_list<const char*> names, std::string fallback) const {
        const json* v = find(names);
        if (!v) return fallback;
        if (!v->is_string())
            fail(label_, ": \"", *names.begin(), "\" must be a string, got ", v->dump());
        return v->get<std::string>();
    }

    std::vector<int64_t> integer_list(const char* name) const {
        const json* v = find({name});
        std::vector<int64_t> out;
        if (!v) return out;
        if (v->is_number_integer()) return {v->get<int64_t>()};
        if (!v->is_array()) fail(label_, ": \"", name, "\" must be an integer or a list, got ", v->dump());
        for (const auto& e : *v) {
            if (!e.is_number_integer())
                fail(label_, ": \"", name, "\" must hold integers, got ", e.dump());
            out.push_back(e.get<int64_t>());
        }
        return out;
    }

    const std::string& label() const { return label_; }

private:
    const json& text_;
    const json& outer_;
    std::string label_;
};

const ArchitectureTraits& traits_for(const std::string& model_type, const std::string& label) {
    for (const auto& t : kArchitectures)
        if (t.model_type == model_type) return t;
    std::string known;
    for (const auto& t : kArchitectures) known += (known.empty() ? "" : ", ") + std::string(t.model_type);
    fail(label, ": unsupported architecture \"", model_type, "\" (supported: ", known, ")");
}

RopeConfig read_rope(const ConfigKeys& keys, const ArchitectureTraits& arch, int64_t head_dim) {
    RopeConfig rope;
    // transformers 5 writes rope_parameters {rope_type, rope_theta, ...}; 4.x writes
    // rope_theta beside an optional rope_scaling {type | rope_type, factor, ...}.
    const json* params = keys.find({"rope_parameters"});
    if (params && !params->is_object())
        fail(keys.label(), ": \"rope_parameters\" must be an object, got ", params->dump());
    const json* scaling = params ? params : keys.find({"rope_scaling"});
    if (scaling && !scaling->is_object())
        fail(keys.label(), ": \"rope_scaling\" must be an object, got ", scaling->dump());
    ConfigKeys sk(scaling ? *scaling : empty_object(), keys.label() + " (rope parameters)");

    rope.theta = sk.find({"rope_theta"}) ? sk.number({"rope_theta"}, 0)
                                         : keys.number({"rope_theta"}, 10000.0);
    if (!(rope.theta > 0)) fail(keys.label(), ": rope theta must be positive, got ", rope.theta);
    std::string type = sk.string({"rope_type", "type"}, "default");
    if (type == "default" || type == "mrope") type = "none";  // mrope reduces to RoPE for text
    const std::array<std::string_view, 6> known{"none", "linear", "dynamic", "yarn", "llama3", "longrope"};
    if (std::find(known.begin(), known.end(), type) == known.end())
        fail(keys.label(), ": unsupported rope type \"", type, "\"");
    rope.scaling = type;
    rope.factor = sk.number({"factor"}, 1.0);
    rope.original_max_position = sk.integer({"original_max_position_embeddings"}, 0, 0);
    rope.beta_fast = sk.number({"beta_fast"}, 32.0);
    rope.beta_slow = sk.number({"beta_slow"}, 1.0);
    rope.mscale = sk.number({"mscale"}, 1.0);
    rope.mscale_all_dim = sk.number({"mscale_all_dim"}, 0.0);
    rope.truncate = sk.boolean({"truncate"}, true);

    const double partial = sk.find({"partial_rotary_factor"})
                               ? sk.number({"partial_rotary_factor"}, 1.0)
                               : keys.number({"partial_rotary_factor"}, 1.0);
    if (!(partial > 0 && partial <= 1))
        fail(keys.label(), ": partial_rotary_factor must be in (0, 1], got ", partial);
    rope.rotary_dim = static_cast<int64_t>(static_cast<double>(head_dim) * partial);
    rope.style = RopeStyle::half;
    if (arch.family == Family::deepseek_v3 && keys.boolean({"rope_interleave"}, true))
        rope.style = RopeStyle::interleaved;
    return rope;
}

SourceQuantization read_quantization(const ConfigKeys& keys) {
    SourceQuantization q;
    if (const json* mlx = keys.find({"quantization"})) {
        if (!mlx->is_object()) fail(keys.label(), ": \"quantization\" must be an object");
        ConfigKeys mk(*mlx, keys.label() + " (quantization)");
        q.kind = SourceQuant::mlx_affine;
        q.bits = mk.integer({"bits"}, std::nullopt, 1);
        q.group_size = mk.integer({"group_size"}, std::nullopt, 1);
        for (const auto& [module, v] : mlx->items()) {
            if (!v.is_object()) continue;
            ConfigKeys ok(v, concat(keys.label(), " (quantization of ", module, ")"));
            q.overrides[module] = {ok.integer({"bits"}, q.bits, 1), ok.integer({"group_size"}, q.group_size, 1)};
        }
        auto check_bits = [&](int64_t bits) {
            if (bits != 2 && bits != 3 && bits != 4 && bits != 5 && bits != 6 && bits != 8)
                fail(keys.label(), ": unsupported MLX quantization bits ", bits);
        };
        check_bits(q.bits);
        for (const auto& [module, bits_group] : q.overrides) check_bits(bits_group.first);
        return q;
    }
    const json* qc = keys.find({"quantization_config"});
    if (!qc) return q;
    if (!qc->is_object()) fail(keys.label(), ": \"quantization_config\" must be an object");
    ConfigKeys qk(*qc, keys.label() + " (quantization_config)");
    const std::string method = qk.string({"quant_method"}, "");
    if (method == "fp8") {
        q.kind = SourceQuant::fp8_block;
        const json* bs = qc->contains("weight_block_size") ? &(*qc)["weight_block_size"] : nullptr;
        if (!bs || !bs->is_array() || bs->size() != 2 || !(*bs)[0].is_number_integer() ||
            !(*bs)[1].is_number_integer() || (*bs)[0].get<int64_t>() <= 0 || (*bs)[1].get<int64_t>() <= 0)
            fail(keys.label(), ": fp8 quantization_config needs \"weight_block_size\": [rows, cols]");
        q.block_rows = (*bs)[0].get<int64_t>();
        q.block_cols = (*bs)[1].get<int64_t>();
        const std::string fmt = qk.string({"fmt"}, "e4m3");
        if (fmt != "e4m3") fail(keys.label(), ": unsupported fp8 format \"", fmt, "\" (expected e4m3)");
    } else if (method == "mxfp4") {
        q.kind = SourceQuant::mxfp4;
    } else {
        fail(keys.label(), ": unsupported quantization method \"", method,
             "\" (supported: fp8 block, mxfp4, MLX affine)");
    }
    return q;
}

std::vector<LayerDesc> read_layers(const ConfigKeys& keys, const ArchitectureTraits& arch,
                                   int64_t num_layers, int64_t sliding_window) {
    std::vector<LayerDesc> layers(static_cast<size_t>(num_layers));
    const json* types = keys.find({"layer_types"});
    if (types) {
        if (!types->is_array() || static_cast<int64_t>(types->size()) != num_layers)
            fail(keys.label(), ": \"layer_types\" must list ", num_layers, " layers, got ", types->dump());
        for (size_t i = 0; i < layers.size(); ++i) {
            const json& t = (*types)[i];
            const std::string s = t.is_string() ? t.get<std::string>() : t.dump();
            if (s == "full_attention") layers[i].attention = AttentionKind::full;
            else if (s == "sliding_attention") layers[i].attention = AttentionKind::sliding;
            else if (s == "linear_attention" && arch.hybrid_linear_attention)
                layers[i].attention = AttentionKind::linear;
            else fail(keys.label(), ": layer_types[", i, "] is \"", s, "\", not an attention kind of ",
                      arch.model_type);
        }
    } else if (arch.hybrid_linear_attention) {
        const int64_t interval = keys.integer({"full_attention_interval"}, 4, 1);
        for (size_t i = 0; i < layers.size(); ++i)
            layers[i].attention = (static_cast<int64_t>(i) + 1) % interval == 0 ? AttentionKind::full
                                                                               : AttentionKind::linear;
    } else if (arch.family == Family::gpt_oss) {
        for (size_t i = 0; i < layers.size(); ++i)
            layers[i].attention = i % 2 == 0 ? AttentionKind::sliding : AttentionKind::full;
    } else if (sliding_window > 0 && arch.family == Family::mixtral) {
        for (auto& l : layers) l.attention = AttentionKind::sliding;
    } else if (sliding_window > 0 && keys.boolean({"use_sliding_window"}, false)) {
        const int64_t first = keys.integer({"max_window_layers"}, num_layers, 0);
        for (size_t i = static_cast<size_t>(std::min(first, num_layers)); i < layers.size(); ++i)
            layers[i].attention = AttentionKind::sliding;
    }

    if (arch.dense_by_sparse_step) {
        const int64_t step = keys.integer({"decoder_sparse_step"}, 1, 1);
        const auto dense = keys.integer_list("mlp_only_layers");
        for (size_t i = 0; i < layers.size(); ++i) {
            const auto li = static_cast<int64_t>(i);
            const bool is_dense = std::find(dense.begin(), dense.end(), li) != dense.end() ||
                                  (li + 1) % step != 0;
            layers[i].ffn = is_dense ? FfnKind::dense : FfnKind::moe;
        }
    } else if (arch.dense_by_first_k) {
        const int64_t first_k = keys.integer({"first_k_dense_replace"}, 0, 0);
        const int64_t freq = keys.integer({"moe_layer_freq"}, 1, 1);
        for (size_t i = 0; i < layers.size(); ++i) {
            const auto li = static_cast<int64_t>(i);
            layers[i].ffn = (li >= first_k && li % freq == 0) ? FfnKind::moe : FfnKind::dense;
        }
    }
    return layers;
}

}  // namespace

int64_t ModelConfig::num_moe_layers() const {
    return std::count_if(layers.begin(), layers.end(),
                         [](const LayerDesc& l) { return l.ffn == FfnKind::moe; });
}

std::vector<std::string> supported_model_types() {
    std::vector<std::string> out;
    for (const auto& t : kArchitectures) out.emplace_back(t.model_type);
    return out;
}

ModelConfig read_model_config(const json& config, const std::string& label) {
    if (!config.is_object()) fail(label, ": expected a JSON object");
    const json* nested = config.contains("text_config") ? &config["text_config"] : nullptr;
    if (nested && !nested->is_object()) fail(label, ": \"text_config\" must be an object");
    ConfigKeys keys(nested ? *nested : config, nested ? config : empty_object(), label);

    // The wrapper's model_type names the product ("qwen3_5_moe"); the text model's own
    // model_type ("qwen3_5_moe_text") describes the same layers.
    std::string model_type = ConfigKeys(config, label).string({"model_type"}, "");
    if (model_type.empty()) fail(label, ": missing \"model_type\"");
    const ArchitectureTraits& arch = traits_for(model_type, label);

    ModelConfig c;
    c.model_type = model_type;
    c.family = arch.family;
    c.source_dtype = keys.string({"dtype", "torch_dtype"}, "");
    c.num_layers = keys.integer({"num_hidden_layers"}, std::nullopt, 1);
    if (c.num_layers > kMaxLayers)
        fail(keys.label(), ": \"num_hidden_layers\": expected at most ", kMaxLayers, ", got ", c.num_layers);
    c.hidden_size = keys.integer({"hidden_size"}, std::nullopt, 1);
    c.vocab_size = keys.integer({"vocab_size"}, std::nullopt, 1);
    c.max_position_embeddings = keys.integer({"max_position_embeddings"}, 0, 0);
    c.num_heads = keys.integer({"num_attention_heads"}, std::nullopt, 1);
    c.num_kv_heads = keys.integer({"num_key_value_heads"}, c.num_heads, 1);
    if (c.num_heads % c.num_kv_heads != 0)
        fail(label, ": num_attention_heads ", c.num_heads, " is not a multiple of num_key_value_heads ",
             c.num_kv_heads);
    c.rms_norm_eps = keys.number({"rms_norm_eps"}, 1e-6);
    c.tie_word_embeddings = keys.boolean({"tie_word_embeddings"}, false);
    c.norm = arch.norm;
    c.qk_norm = arch.qk_norm;
    c.attention = arch.attention;
    c.activation = arch.activation;
    c.attention_bias = keys.boolean({"attention_bias"}, arch.attention_bias);
    c.attention_sinks = arch.attention_sinks;
    c.expert_bias = arch.expert_bias;
    if (arch.activation == Activation::swiglu_clamped) c.swiglu_limit = keys.number({"swiglu_limit"}, 7.0);

    if (arch.attention == AttentionType::mla) {
        c.mla.q_lora_rank = keys.integer({"q_lora_rank"}, 0, 0);
        c.mla.kv_lora_rank = keys.integer({"kv_lora_rank"}, std::nullopt, 1);
        c.mla.qk_nope_head_dim = keys.integer({"qk_nope_head_dim"}, std::nullopt, 1);
        c.mla.qk_rope_head_dim = keys.integer({"qk_rope_head_dim"}, std::nullopt, 1);
        c.mla.v_head_dim = keys.integer({"v_head_dim"}, std::nullopt, 1);
        // transformers writes head_dim = qk_rope_head_dim here; the query/key width is nope + rope.
        c.head_dim = c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim;
    } else {
        if (c.hidden_size % c.num_heads != 0 && !keys.find({"head_dim"}))
            fail(label, ": missing \"head_dim\" and hidden_size ", c.hidden_size,
                 " is not a multiple of num_attention_heads ", c.num_heads);
        c.head_dim = keys.integer({"head_dim"}, c.hidden_size / c.num_heads, 1);
    }
    c.rope = read_rope(keys, arch, c.head_dim);
    if (arch.attention == AttentionType::mla) c.rope.rotary_dim = c.mla.qk_rope_head_dim;

    c.num_experts = keys.integer({"num_experts", "num_local_experts", "n_routed_experts"}, std::nullopt, 1);
    c.experts_per_token =
        keys.integer({"num_experts_per_tok", "experts_per_token", "num_experts_per_token"}, std::nullopt, 1);
    if (c.experts_per_token > c.num_experts)
        fail(label, ": ", c.experts_per_token, " experts per token but only ", c.num_experts, " experts");
    c.intermediate_size = keys.integer({"intermediate_size"}, 0, 0);
    c.expert_intermediate_size = keys.integer({"moe_intermediate_size"}, c.intermediate_size, 1);
    if (c.expert_intermediate_size <= 0) fail(label, ": missing \"moe_intermediate_size\"");

    c.routing.function = arch.routing;
    c.routing.normalize_topk =
        arch.normalize_topk_always || keys.boolean({"norm_topk_prob"}, arch.normalize_topk_default);
    if (arch.routing == RoutingFunction::sigmoid_grouped) {
        c.routing.scaling_factor = keys.number({"routed_scaling_factor"}, 1.0);
        c.routing.num_groups = keys.integer({"n_group"}, 1, 1);
        c.routing.groups_per_token = keys.integer({"topk_group"}, 1, 1);
        if (c.num_experts % c.routing.num_groups != 0 || c.routing.groups_per_token > c.routing.num_groups)
            fail(label, ": ", c.num_experts, " experts cannot form ", c.routing.num_groups,
                 " groups with topk_group ", c.routing.groups_per_token);
        c.num_shared_experts = keys.integer({"n_shared_experts"}, 0, 0);
        c.shared_expert_intermediate_size = c.num_shared_experts * c.expert_intermediate_size;
    } else if (arch.hybrid_linear_attention) {
        c.shared_expert_intermediate_size = keys.integer({"shared_expert_intermediate_size"}, 0, 0);
        c.num_shared_experts = c.shared_expert_intermediate_size > 0 ? 1 : 0;
        c.shared_expert_gated = c.num_shared_experts > 0;
    }

    if (arch.hybrid_linear_attention) {
        c.linear.num_key_heads = keys.integer({"linear_num_key_heads"}, std::nullopt, 1);
        c.linear.num_value_heads = keys.integer({"linear_num_value_heads"}, std::nullopt, 1);
        c.linear.key_head_dim = keys.integer({"linear_key_head_dim"}, std::nullopt, 1);
        c.linear.value_head_dim = keys.integer({"linear_value_head_dim"}, std::nullopt, 1);
        c.linear.conv_kernel = keys.integer({"linear_conv_kernel_dim"}, 4, 1);
        if (c.linear.num_value_heads % c.linear.num_key_heads != 0)
            fail(label, ": linear_num_value_heads ", c.linear.num_value_heads,
                 " is not a multiple of linear_num_key_heads ", c.linear.num_key_heads);
        c.num_mtp_layers = keys.integer({"mtp_num_hidden_layers"}, 0, 0);
    }
    if (arch.family == Family::deepseek_v3) c.num_mtp_layers = keys.integer({"num_nextn_predict_layers"}, 0, 0);

    const json* window = keys.find({"sliding_window"});
    c.sliding_window = window && window->is_number_integer() ? window->get<int64_t>() : 0;
    c.layers = read_layers(keys, arch, c.num_layers, c.sliding_window);
    if (std::none_of(c.layers.begin(), c.layers.end(),
                     [](const LayerDesc& l) { return l.attention == AttentionKind::sliding; }))
        c.sliding_window = 0;
    if (c.num_moe_layers() > 0 && std::any_of(c.layers.begin(), c.layers.end(), [](const LayerDesc& l) {
            return l.ffn == FfnKind::dense;
        }) && c.intermediate_size <= 0)
        fail(label, ": dense layers need \"intermediate_size\"");

    c.bos_token_id = keys.find({"bos_token_id"}) ? std::optional(keys.integer({"bos_token_id"}, 0, 0))
                                                 : std::nullopt;
    c.pad_token_id = keys.find({"pad_token_id"}) ? std::optional(keys.integer({"pad_token_id"}, 0, 0))
                                                 : std::nullopt;
    c.eos_token_ids = keys.integer_list("eos_token_id");
    c.quant = read_quantization(keys);
    // MLX's conversion of Qwen3-Next / Qwen3.5 stores the (1 + w) norms with the 1 added
    // (its RMSNorm multiplies by w), so they are plain norms in such a checkpoint.
    if (c.quant.kind == SourceQuant::mlx_affine && c.norm == NormFlavour::one_plus) c.norm = NormFlavour::plain;
    return c;
}

const char* to_string(Family v) {
    switch (v) {
        case Family::qwen3_moe: return "qwen3_moe";
        case Family::mixtral: return "mixtral";
        case Family::olmoe: return "olmoe";
        case Family::qwen3_next: return "qwen3_next";
        case Family::qwen3_5_moe: return "qwen3_5_moe";
        case Family::deepseek_v3: return "deepseek_v3";
        case Family::gpt_oss: return "gpt_oss";
    }
    return "?";
}
const char* to_string(AttentionKind v) {
    switch (v) {
        case AttentionKind::full: return "full";
        case AttentionKind::sliding: return "sliding";
        case AttentionKind::linear: return "linear";
    }
    return "?";
}
const char* to_string(FfnKind v) { return v == FfnKind::dense ? "dense" : "moe"; }
const char* to_string(AttentionType v) {
    switch (v) {
        case AttentionType::gqa: return "gqa";
        case AttentionType::gated_gqa: return "gated_gqa";
        case AttentionType::mla: return "mla";
    }
    return "?";
}
const char* to_string(NormFlavour v) { return v == NormFlavour::plain ? "plain" : "one_plus"; }
const char* to_string(QkNorm v) {
    switch (v) {
        case QkNorm::none: return "none";
        case QkNorm::per_head: return "per_head";
        case QkNorm::full_width: return "full_width";
    }
    return "?";
}
const char* to_string(RopeStyle v) { return v == RopeStyle::half ? "half" : "interleaved"; }
const char* to_string(RoutingFunction v) {
    switch (v) {
        case RoutingFunction::softmax_topk: return "softmax_topk";
        case RoutingFunction::topk_softmax: return "topk_softmax";
        case RoutingFunction::sigmoid_grouped: return "sigmoid_grouped";
    }
    return "?";
}
const char* to_string(Activation v) { return v == Activation::swiglu ? "swiglu" : "swiglu_clamped"; }
const char* to_string(SourceQuant v) {
    switch (v) {
        case SourceQuant::none: return "none";
        case SourceQuant::fp8_block: return "fp8_block";
        case SourceQuant::mlx_affine: return "mlx_affine";
        case SourceQuant::mxfp4: return "mxfp4";
    }
    return "?";
}

json to_json(const ModelConfig& c) {
    json layers = json::array();
    for (const auto& l : c.layers) layers.push_back({{"attention", to_string(l.attention)}, {"ffn", to_string(l.ffn)}});
    json j = {
        {"model_type", c.model_type},
        {"family", to_string(c.family)},
        {"source_dtype", c.source_dtype},
        {"num_layers", c.num_layers},
        {"hidden_size", c.hidden_size},
        {"vocab_size", c.vocab_size},
        {"max_position_embeddings", c.max_position_embeddings},
        {"num_heads", c.num_heads},
        {"num_kv_heads", c.num_kv_heads},
        {"head_dim", c.head_dim},
        {"intermediate_size", c.intermediate_size},
        {"expert_intermediate_size", c.expert_intermediate_size},
        {"num_experts", c.num_experts},
        {"experts_per_token", c.experts_per_token},
        {"num_shared_experts", c.num_shared_experts},
        {"shared_expert_intermediate_size", c.shared_expert_intermediate_size},
        {"shared_expert_gated", c.shared_expert_gated},
        {"routing",
         {{"function", to_string(c.routing.function)},
          {"normalize_topk", c.routing.normalize_topk},
          {"scaling_factor", c.routing.scaling_factor},
          {"num_groups", c.routing.num_groups},
          {"groups_per_token", c.routing.groups_per_token}}},
        {"rms_norm_eps", c.rms_norm_eps},
        {"norm", to_string(c.norm)},
        {"qk_norm", to_string(c.qk_norm)},
        {"rope",
         {{"theta", c.rope.theta},
          {"style", to_string(c.rope.style)},
          {"rotary_dim", c.rope.rotary_dim},
          {"scaling", c.rope.scaling},
          {"factor", c.rope.factor},
          {"original_max_position", c.rope.original_max_position},
          {"beta_fast", c.rope.beta_fast},
          {"beta_slow", c.rope.beta_slow},
          {"mscale", c.rope.mscale},
          {"mscale_all_dim", c.rope.mscale_all_dim},
          {"truncate", c.rope.truncate}}},
        {"attention", to_string(c.attention)},
        {"attention_bias", c.attention_bias},
        {"attention_sinks", c.attention_sinks},
        {"sliding_window", c.sliding_window},
        {"activation", to_string(c.activation)},
        {"swiglu_limit", c.swiglu_limit},
        {"expert_bias", c.expert_bias},
        {"tie_word_embeddings", c.tie_word_embeddings},
        {"eos_token_ids", c.eos_token_ids},
        {"source_quantization", to_string(c.quant.kind)},
        {"num_mtp_layers", c.num_mtp_layers},
        {"layers", layers},
    };
    j["bos_token_id"] = c.bos_token_id ? json(*c.bos_token_id) : json(nullptr);
    j["pad_token_id"] = c.pad_token_id ? json(*c.pad_token_id) : json(nullptr);
    if (c.attention == AttentionType::mla)
        j["mla"] = {{"q_lora_rank", c.mla.q_lora_rank},         {"kv_lora_rank", c.mla.kv_lora_rank},
                    {"qk_nope_head_dim", c.mla.qk_nope_head_dim}, {"qk_rope_head_dim", c.mla.qk_rope_head_dim},
                    {"v_head_dim", c.mla.v_head_dim}};
    if (c.linear.num_key_heads > 0)
        j["linear_attention"] = {{"num_key_heads", c.linear.num_key_heads},
                                 {"num_value_heads", c.linear.num_value_heads},
                                 {"key_head_dim", c.linear.key_head_dim},
                                 {"value_head_dim", c.linear.value_head_dim},
                                 {"conv_kernel", c.linear.conv_kernel}};
    if (c.quant.kind == SourceQuant::fp8_block) j["source_block_size"] = {c.quant.block_rows, c.quant.block_cols};
    if (c.quant.kind == SourceQuant::mlx_affine) {
        j["source_bits"] = c.quant.bits;
        j["source_group_size"] = c.quant.group_size;
    }
    return j;
}

}  // namespace moepack
