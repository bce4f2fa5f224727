// The normalised model description: what every architecture's config.json means, in one
// form. Everything downstream (pack writer, engine) reads this, never config.json.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace moepack {

enum class Family { qwen3_moe, mixtral, olmoe, qwen3_next, qwen3_5_moe, deepseek_v3, gpt_oss };

enum class AttentionKind { full, sliding, linear };   // per layer
enum class FfnKind { dense, moe };                     // per layer
enum class AttentionType { gqa, gated_gqa, mla };      // the model's full-attention form
enum class NormFlavour { plain, one_plus };            // w * x̂ or (1 + w) * x̂
enum class QkNorm { none, per_head, full_width };      // RMSNorm of q and k before RoPE
enum class RopeStyle { half, interleaved };            // pairs (i, i + d/2) or (2i, 2i + 1)
// softmax_topk: softmax over all experts, then top-k. topk_softmax: top-k of the logits,
// softmax over those k. sigmoid_grouped: DeepSeek-V3's grouped sigmoid selection.
enum class RoutingFunction { softmax_topk, topk_softmax, sigmoid_grouped };
enum class Activation { swiglu, swiglu_clamped };       // clamped: GPT-OSS's variant
enum class SourceQuant { none, fp8_block, mlx_affine, mxfp4 };

// The most decoder layers a model may declare (config.json and pack manifests alike).
inline constexpr int64_t kMaxLayers = 4096;

struct LayerDesc {
    AttentionKind attention = AttentionKind::full;
    FfnKind ffn = FfnKind::moe;
};

struct RoutingConfig {
    RoutingFunction function = RoutingFunction::softmax_topk;
    bool normalize_topk = false;
    double scaling_factor = 1.0;
    int64_t num_groups = 1;         // sigmoid_grouped: n_group
    int64_t groups_per_token = 1;   // sigmoid_grouped: topk_group
};

struct RopeConfig {
    double theta = 10000.0;
    RopeStyle style = RopeStyle::half;
    int64_t rotary_dim = 0;               // leading dims of each head that rotate
    std::string scaling = "none";         // none | linear | dynamic | yarn | llama3 | longrope
    double factor = 1.0;
    int64_t original_max_position = 0;
    double beta_fast = 32.0, beta_slow = 1.0;
    double mscale = 1.0, mscale_all_dim = 0.0;
    bool truncate = true;                 // yarn: round the correction range
};

struct LinearAttentionConfig {   // Gated DeltaNet (qwen3_next, qwen3_5_moe)
    int64_t num_key_heads = 0, num_value_heads = 0;
    int64_t key_head_dim = 0, value_head_dim = 0;
    int64_t conv_kernel = 0;
};

struct MlaConfig {               // DeepSeek-V3 multi-head latent attention
    int64_t q_lora_rank = 0, kv_lora_rank = 0;
    int64_t qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
};

struct SourceQuantization {
    SourceQuant kind = SourceQuant::none;
    int64_t block_rows = 0, block_cols = 0;   // fp8_block
    int64_t bits = 0, group_size = 0;         // mlx_affine defaults
    // mlx_affine per-module overrides: module path -> {bits, group_size}
    std::map<std::string, std::pair<int64_t, int64_t>> overrides;
};

struct ModelConfig {
    std::string model_type;   // as config.json spells it, e.g. "qwen3_5_moe_text"
    Family family = Family::qwen3_moe;
    std::string source_dtype; // "bfloat16", ... ("" when unstated)

    int64_t num_layers = 0, hidden_size = 0, vocab_size = 0, max_position_embeddings = 0;
    int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0;
    int64_t intermediate_size = 0;         // dense MLP layers
    int64_t expert_intermediate_size = 0;  // one routed expert
    int64_t num_experts = 0, experts_per_token = 0;
    int64_t num_shared_experts = 0, shared_expert_intermediate_size = 0;
    bool shared_expert_gated = false;      // sigmoid(shared_expert_gate . x) scales it
    RoutingConfig routing;

    double rms_norm_eps = 1e-6;
    NormFlavour norm = NormFlavour::plain;
    QkNorm qk_norm = QkNorm::none;
    RopeConfig rope;
    AttentionType attention = AttentionType::gqa;
    bool attention_bias = false;
    bool attention_sinks = false;
    int64_t sliding_window = 0;            // 0: none
    LinearAttentionConfig linear;
    MlaConfig mla;
    Activation activation = Activation::swiglu;
    double swiglu_limit = 0.0;             // swiglu_clamped
    bool expert_bias = false;              // biases on expert projections
    bool tie_word_embeddings = false;

    std::optional<int64_t> bos_token_id, pad_token_id;
    std::vector<int64_t> eos_token_ids;

    SourceQuantization quant;
    int64_t num_mtp_layers = 0;            // multi-token-prediction layers, skipped
    std::vector<LayerDesc> layers;

    int64_t num_moe_layers() const;
};

// Reads config.json (transformers 4.x and 5.x spellings, nested text_config) into the
// normalised description. `label` names the file in errors. Throws moepack::Error for an
// unknown architecture, a missing or malformed key, or inconsistent values.
ModelConfig read_model_config(const nlohmann::json& config, const std::string& label);

// The model_type strings read_model_config accepts.
std::vector<std::string> supported_model_types();

const char* to_string(Family v);
const char* to_string(AttentionKind v);
const char* to_string(FfnKind v);
const char* to_string(AttentionType v);
const char* to_string(NormFlavour v);
const char* to_string(QkNorm v);
const char* to_string(RopeStyle v);
const char* to_string(RoutingFunction v);
const char* to_string(Activation v);
const char* to_string(SourceQuant v);

nlohmann::json to_json(const ModelConfig& c);
// The inverse of to_json (a pack manifest's "model"): throws moepack::Error naming `label`
// and the key for a missing, mistyped or out-of-range value.
ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& label);

}  // namespace moepack
