// Reading the normalised model description back from a pack manifest ("model" object, as
// written by to_json in model_config.cpp). The manifest is untrusted input: every key is
// type- and range-checked, and errors name the key.
#include <array>
#include <limits>

#include "error.hpp"
#include "model_config.hpp"

namespace moepack {
namespace {

using nlohmann::json;

class Reader {
public:
    Reader(const json& j, std::string label) : j_(j), label_(std::move(label)) {
        if (!j_.is_object()) fail(label_, ": expected an object");
    }
    const json& at(const char* key) const {
        auto it = j_.find(key);
        if (it == j_.end()) fail(label_, ": missing key \"", key, "\"");
        return *it;
    }
    int64_t integer(const char* key, int64_t lo, int64_t hi = std::numeric_limits<int32_t>::max()) const {
        const json& v = at(key);
        if (!v.is_number_integer()) fail(label_, ": \"", key, "\" must be an integer");
        const int64_t x = v.get<int64_t>();
        if (x < lo || x > hi) fail(label_, ": \"", key, "\" out of range: expected ", lo, "..", hi, ", got ", x);
        return x;
    }
    double number(const char* key) const {
        const json& v = at(key);
        if (!v.is_number()) fail(label_, ": \"", key, "\" must be a number");
        return v.get<double>();
    }
    bool boolean(const char* key) const {
        const json& v = at(key);
        if (!v.is_boolean()) fail(label_, ": \"", key, "\" must be true or false");
        return v.get<bool>();
    }
    std::string string(const char* key) const {
        const json& v = at(key);
        if (!v.is_string()) fail(label_, ": \"", key, "\" must be a string");
        return v.get<std::string>();
    }
    std::optional<int64_t> optional_integer(const char* key) const {
        auto it = j_.find(key);
        if (it == j_.end() || it->is_null()) return std::nullopt;
        return integer(key, 0);
    }
    template <class E, size_t N>
    E choice(const char* key, const std::array<E, N>& values) const {
        const std::string s = string(key);
        for (E v : values)
            if (s == to_string(v)) return v;
        fail(label_, ": unknown \"", key, "\" value \"", s, "\"");
    }
    Reader object(const char* key) const { return Reader(at(key), label_ + "." + key); }
    const std::string& label() const { return label_; }

private:
    const json& j_;
    std::string label_;
};

constexpr std::array kFamilies{Family::qwen3_moe,   Family::mixtral,     Family::olmoe,  Family::qwen3_next,
                               Family::qwen3_5_moe, Family::deepseek_v3, Family::gpt_oss};
constexpr std::array kAttentionKinds{AttentionKind::full, AttentionKind::sliding, AttentionKind::linear};
constexpr std::array kFfnKinds{FfnKind::dense, FfnKind::moe};
constexpr std::array kAttentionTypes{AttentionType::gqa, AttentionType::gated_gqa, AttentionType::mla};
constexpr std::array kNormFlavours{NormFlavour::plain, NormFlavour::one_plus};
constexpr std::array kQkNorms{QkNorm::none, QkNorm::per_head, QkNorm::full_width};
constexpr std::array kRopeStyles{RopeStyle::half, RopeStyle::interleaved};
constexpr std::array kRoutingFunctions{RoutingFunction::softmax_topk, RoutingFunction::topk_softmax,
                                       RoutingFunction::sigmoid_grouped};
constexpr std::array kActivations{Activation::swiglu, Activation::swiglu_clamped};
constexpr std::array kSourceQuants{SourceQuant::none, SourceQuant::fp8_block, SourceQuant::mlx_affine,
                                   SourceQuant::mxfp4};

}  // namespace

ModelConfig model_config_from_json(const json& j, const std::string& label) {
    Reader r(j, label);
    ModelConfig c;
    c.model_type = r.string("model_type");
    c.family = r.choice("family", kFamilies);
    c.source_dtype = r.string("source_dtype");
    constexpr int64_t kMaxDim = 1 << 24;
    c.num_layers = r.integer("num_layers", 1, kMaxLayers);
    c.hidden_size = r.integer("hidden_size", 1, kMaxDim);
    c.vocab_size = r.integer("vocab_size", 1, 1 << 26);
    c.max_position_embeddings = r.integer("max_position_embeddings", 0, std::numeric_limits<int64_t>::max());
    c.num_heads = r.integer("num_heads", 1, 65536);
    c.num_kv_heads = r.integer("num_kv_heads", 1, c.num_heads);
    if (c.num_heads % c.num_kv_heads != 0)
        fail(label, ": num_heads (", c.num_heads, ") is not a multiple of num_kv_heads (", c.num_kv_heads, ")");
    c.head_dim = r.integer("head_dim", 1, 65536);
    c.intermediate_size = r.integer("intermediate_size", 0, kMaxDim);
    c.expert_intermediate_size = r.integer("expert_intermediate_size", 0, kMaxDim);
    c.num_experts = r.integer("num_experts", 0, 1 << 16);
    c.experts_per_token = r.integer("experts_per_token", 0, c.num_experts);
    c.num_shared_experts = r.integer("num_shared_experts", 0, 64);
    c.shared_expert_intermediate_size = r.integer("shared_expert_intermediate_size", 0, kMaxDim);
    c.shared_expert_gated = r.boolean("shared_expert_gated");
    {
        Reader ro = r.object("routing");
        c.routing.function = ro.choice("function", kRoutingFunctions);
        c.routing.normalize_topk = ro.boolean("normalize_topk");
        c.routing.scaling_factor = ro.number("scaling_factor");
        c.routing.num_groups = ro.integer("num_groups", 1, 1 << 16);
        c.routing.groups_per_token = ro.integer("groups_per_token", 1, c.routing.num_groups);
    }
    c.rms_norm_eps = r.number("rms_norm_eps");
    c.norm = r.choice("norm", kNormFlavours);
    c.qk_norm = r.choice("qk_norm", kQkNorms);
    {
        Reader ro = r.object("rope");
        c.rope.theta = ro.number("theta");
        c.rope.style = ro.choice("style", kRopeStyles);
        c.rope.rotary_dim = ro.integer("rotary_dim", 0, 65536);
        c.rope.scaling = ro.string("scaling");
        c.rope.factor = ro.number("factor");
        c.rope.original_max_position = ro.integer("original_max_position", 0, std::numeric_limits<int64_t>::max());
        c.rope.beta_fast = ro.number("beta_fast");
        c.rope.beta_slow = ro.number("beta_slow");
        c.rope.mscale = ro.number("mscale");
        c.rope.mscale_all_dim = ro.number("mscale_all_dim");
        c.rope.truncate = ro.boolean("truncate");
        if (c.rope.rotary_dim % 2 != 0) fail(ro.label(), ": \"rotary_dim\" must be even, got ", c.rope.rotary_dim);
    }
    c.attention = r.choice("attention", kAttentionTypes);
    c.attention_bias = r.boolean("attention_bias");
    c.attention_sinks = r.boolean("attention_sinks");
    c.sliding_window = r.integer("sliding_window", 0, std::numeric_limits<int64_t>::max());
    c.activation = r.choice("activation", kActivations);
    c.swiglu_limit = r.number("swiglu_limit");
    c.expert_bias = r.boolean("expert_bias");
    c.tie_word_embeddings = r.boolean("tie_word_embeddings");
    {
        const json& eos = r.at("eos_token_ids");
        if (!eos.is_array()) fail(label, ": \"eos_token_ids\" must be an array");
        for (const json& e : eos) {
            if (!e.is_number_integer() || e.get<int64_t>() < 0)
                fail(label, ": \"eos_token_ids\" must hold non-negative integers");
            c.eos_token_ids.push_back(e.get<int64_t>());
        }
    }
    c.bos_token_id = r.optional_integer("bos_token_id");
    c.pad_token_id = r.optional_integer("pad_token_id");
    c.quant.kind = r.choice("source_quantization", kSourceQuants);
    c.num_mtp_layers = r.integer("num_mtp_layers", 0, 64);
    const json& layers = r.at("layers");
    if (!layers.is_array() || static_cast<int64_t>(layers.size()) != c.num_layers)
        fail(label, ": \"layers\" must be an array of num_layers (", c.num_layers, ") entries");
    for (size_t i = 0; i < layers.size(); ++i) {
        Reader l(layers[i], concat(label, ".layers[", i, "]"));
        c.layers.push_back({l.choice("attention", kAttentionKinds), l.choice("ffn", kFfnKinds)});
    }
    if (c.attention == AttentionType::mla) {
        Reader m = r.object("mla");
        c.mla.q_lora_rank = m.integer("q_lora_rank", 0, kMaxDim);
        c.mla.kv_lora_rank = m.integer("kv_lora_rank", 1, kMaxDim);
        c.mla.qk_nope_head_dim = m.integer("qk_nope_head_dim", 0, 65536);
        c.mla.qk_rope_head_dim = m.integer("qk_rope_head_dim", 0, 65536);
        c.mla.v_head_dim = m.integer("v_head_dim", 1, 65536);
    }
    if (j.contains("linear_attention")) {
        Reader m = r.object("linear_attention");
        c.linear.num_key_heads = m.integer("num_key_heads", 1, 65536);
        c.linear.num_value_heads = m.integer("num_value_heads", 1, 65536);
        c.linear.key_head_dim = m.integer("key_head_dim", 1, 65536);
        c.linear.value_head_dim = m.integer("value_head_dim", 1, 65536);
        c.linear.conv_kernel = m.integer("conv_kernel", 1, 64);
    }
    if (c.num_moe_layers() > 0 && (c.num_experts < 1 || c.experts_per_token < 1 || c.expert_intermediate_size < 1))
        fail(label, ": MoE layers need num_experts, experts_per_token and expert_intermediate_size > 0");
    return c;
}

}  // namespace moepack
