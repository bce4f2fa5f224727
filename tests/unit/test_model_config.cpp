// config.json normalisation: key spellings of transformers 4.x and 5.x, layer kinds,
// routing flags, and rejection of bad configs with the key named.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>

#include "model_config.hpp"
#include "tensor_roles.hpp"
#include "test_helpers.hpp"

using namespace moepack;
using namespace moepack::test;
using nlohmann::json;

namespace {

json qwen3_moe_v4() {
    return json::parse(R"({
      "model_type": "qwen3_moe", "torch_dtype": "bfloat16", "num_hidden_layers": 4, "hidden_size": 64,
      "vocab_size": 100, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,
      "intermediate_size": 96, "moe_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
      "norm_topk_prob": true, "decoder_sparse_step": 2, "mlp_only_layers": [3], "rope_theta": 1000000.0,
      "rms_norm_eps": 1e-6, "eos_token_id": [5, 6], "bos_token_id": 1})");
}

}  // namespace

TEST(ModelConfig, Transformers4And5SpellingsAgree) {
    json v4 = qwen3_moe_v4();
    json v5 = v4;
    v5.erase("torch_dtype");
    v5["dtype"] = "bfloat16";
    v5.erase("rope_theta");
    v5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
    v5.erase("num_experts");
    v5["num_local_experts"] = 8;
    const ModelConfig a = read_model_config(v4, "v4.json");
    const ModelConfig b = read_model_config(v5, "v5.json");
    EXPECT_EQ(to_json(a), to_json(b));
    EXPECT_EQ(a.source_dtype, "bfloat16");
    EXPECT_EQ(a.rope.theta, 1000000.0);
    EXPECT_EQ(a.rope.scaling, "none");
    EXPECT_EQ(a.head_dim, 24);
    EXPECT_EQ(a.rope.rotary_dim, 24);
    EXPECT_EQ(a.eos_token_ids, (std::vector<int64_t>{5, 6}));
    EXPECT_EQ(a.bos_token_id, 1);
    EXPECT_FALSE(a.pad_token_id);
    // decoder_sparse_step 2: layers 1 and 3 would be MoE, but 3 is in mlp_only_layers
    ASSERT_EQ(a.layers.size(), 4u);
    EXPECT_EQ(a.layers[0].ffn, FfnKind::dense);
    EXPECT_EQ(a.layers[1].ffn, FfnKind::moe);
    EXPECT_EQ(a.layers[2].ffn, FfnKind::dense);
    EXPECT_EQ(a.layers[3].ffn, FfnKind::dense);
    EXPECT_EQ(a.num_moe_layers(), 1);
}

TEST(ModelConfig, NestedTextConfigAndLinearAttentionFallback) {
    json text = {{"model_type", "qwen3_5_moe_text"}, {"num_hidden_layers", 8}, {"hidden_size", 32},
                 {"vocab_size", 50}, {"num_attention_heads", 2}, {"num_key_value_heads", 1},
                 {"head_dim", 16}, {"moe_intermediate_size", 8}, {"num_experts", 4},
                 {"num_experts_per_tok", 2}, {"shared_expert_intermediate_size", 8},
                 {"linear_num_key_heads", 1}, {"linear_num_value_heads", 2}, {"linear_key_head_dim", 8},
                 {"linear_value_head_dim", 8},
                 {"rope_parameters", {{"rope_theta", 1e7}, {"partial_rotary_factor", 0.25},
                                      {"mrope_section", {1, 1, 0}}, {"rope_type", "default"}}}};
    json outer = {{"model_type", "qwen3_5_moe"}, {"text_config", text}, {"tie_word_embeddings", false},
                  {"vision_config", {{"depth", 1}}}};
    const ModelConfig c = read_model_config(outer, "config.json");
    EXPECT_EQ(c.model_type, "qwen3_5_moe");
    EXPECT_EQ(c.family, Family::qwen3_5_moe);
    EXPECT_EQ(c.norm, NormFlavour::one_plus);
    EXPECT_EQ(c.attention, AttentionType::gated_gqa);
    // an MLX conversion stores the norms with the 1 added already
    json mlx = outer;
    mlx["quantization"] = {{"bits", 4}, {"group_size", 64}};
    EXPECT_EQ(read_model_config(mlx, "config.json").norm, NormFlavour::plain);
    EXPECT_EQ(c.rope.rotary_dim, 4);
    EXPECT_EQ(c.rope.theta, 1e7);
    EXPECT_TRUE(c.shared_expert_gated);
    EXPECT_EQ(c.num_shared_experts, 1);
    EXPECT_TRUE(c.routing.normalize_topk);
    for (size_t i = 0; i < 8; ++i)   // no layer_types: every 4th layer is full attention
        EXPECT_EQ(c.layers[i].attention, (i + 1) % 4 == 0 ? AttentionKind::full : AttentionKind::linear) << i;
}

TEST(ModelConfig, MixtralAlwaysRenormalisesAndOlmoeNever) {
    json m = {{"model_type", "mixtral"}, {"num_hidden_layers", 1}, {"hidden_size", 8}, {"vocab_size", 10},
              {"num_attention_heads", 2}, {"intermediate_size", 16}, {"num_local_experts", 4},
              {"num_experts_per_tok", 2}, {"norm_topk_prob", false}};
    EXPECT_TRUE(read_model_config(m, "m").routing.normalize_topk);
    EXPECT_EQ(read_model_config(m, "m").expert_intermediate_size, 16);
    EXPECT_EQ(read_model_config(m, "m").head_dim, 4);
    m["model_type"] = "olmoe";
    m.erase("norm_topk_prob");
    EXPECT_FALSE(read_model_config(m, "m").routing.normalize_topk);
    EXPECT_EQ(read_model_config(m, "m").qk_norm, QkNorm::full_width);
}

TEST(ModelConfig, DeepseekDenseLayersMlaAndYarn) {
    json d = json::parse(std::ifstream((fixture_model("deepseek_v3") / "config.json").string()));
    const ModelConfig c = read_model_config(d, "config.json");
    EXPECT_EQ(c.layers[0].ffn, FfnKind::dense);
    EXPECT_EQ(c.layers[1].ffn, FfnKind::moe);
    EXPECT_EQ(c.attention, AttentionType::mla);
    EXPECT_EQ(c.head_dim, 24);  // nope 16 + rope 8, not config's head_dim (8)
    EXPECT_EQ(c.rope.rotary_dim, 8);
    EXPECT_EQ(c.rope.style, RopeStyle::interleaved);
    EXPECT_EQ(c.rope.scaling, "yarn");
    EXPECT_EQ(c.rope.factor, 4.0);
    EXPECT_EQ(c.rope.original_max_position, 64);
    EXPECT_EQ(c.rope.mscale_all_dim, 1.0);
    EXPECT_EQ(c.routing.function, RoutingFunction::sigmoid_grouped);
    EXPECT_EQ(c.routing.scaling_factor, 2.5);
    EXPECT_EQ(c.routing.num_groups, 4);
    EXPECT_EQ(c.routing.groups_per_token, 2);
    EXPECT_EQ(c.num_shared_experts, 1);
    EXPECT_EQ(c.shared_expert_intermediate_size, 32);
    EXPECT_EQ(c.num_mtp_layers, 1);
}

TEST(ModelConfig, BadConfigsNameTheKey) {
    struct Case {
        const char* what;
        std::function<void(json&)> edit;
        const char* expected;
    };
    const std::vector<Case> cases = {
        {"unknown architecture", [](json& j) { j["model_type"] = "llama"; }, "unsupported architecture \"llama\""},
        {"no model_type", [](json& j) { j.erase("model_type"); }, "missing \"model_type\""},
        {"missing hidden_size", [](json& j) { j.erase("hidden_size"); }, "missing \"hidden_size\""},
        {"absurd layer count", [](json& j) { j["num_hidden_layers"] = 99999999; },
         "\"num_hidden_layers\": expected at most 4096, got 99999999"},
        {"string layer count", [](json& j) { j["num_hidden_layers"] = "4"; },
         "\"num_hidden_layers\" must be an integer >= 1, got \"4\""},
        {"zero heads", [](json& j) { j["num_attention_heads"] = 0; }, "\"num_attention_heads\" must be an integer >= 1"},
        {"heads not a multiple of kv heads", [](json& j) { j["num_key_value_heads"] = 3; }, "not a multiple of num_key_value_heads"},
        {"no expert count", [](json& j) { j.erase("num_experts"); }, "missing \"num_experts\""},
        {"top-k above expert count", [](json& j) { j["num_experts_per_tok"] = 9; }, "9 experts per token but only 8 experts"},
        {"layer_types of the wrong length", [](json& j) { j["layer_types"] = {"full_attention"}; }, "\"layer_types\" must list 4 layers"},
        {"linear attention in a model without it",
         [](json& j) { j["layer_types"] = {"linear_attention", "full_attention", "full_attention", "full_attention"}; },
         "layer_types[0] is \"linear_attention\""},
        {"unknown rope type", [](json& j) { j["rope_scaling"] = {{"type", "fancy"}}; }, "unsupported rope type \"fancy\""},
        {"unsupported quantization", [](json& j) { j["quantization_config"] = {{"quant_method", "gptq"}}; },
         "unsupported quantization method \"gptq\""},
        {"fp8 without block size", [](json& j) { j["quantization_config"] = {{"quant_method", "fp8"}}; },
         "needs \"weight_block_size\""},
        {"mlx bits", [](json& j) { j["quantization"] = {{"bits", 7}, {"group_size", 64}}; },
         "unsupported MLX quantization bits 7"},
        {"dense layers without intermediate_size", [](json& j) { j.erase("intermediate_size"); },
         "dense layers need \"intermediate_size\""},
    };
    for (const auto& c : cases) {
        json j = qwen3_moe_v4();
        c.edit(j);
        const std::string err = error_of([&] { read_model_config(j, "dir/config.json"); });
        EXPECT_NE(err.find(c.expected), std::string::npos) << c.what << ": got \"" << err << "\"";
        EXPECT_EQ(err.rfind("dir/config.json", 0), 0u) << c.what << ": error must name the file: " << err;
    }
}

TEST(TensorRoles, RejectsNamesOutsideTheConfig) {
    const ModelConfig c = read_model_config(qwen3_moe_v4(), "config.json");
    struct Case { const char* name; const char* expected; };
    const Case cases[] = {
        {"model.layers.1.mlp.experts.8.gate_proj.weight", "expert 8 out of range (config has 8 experts)"},
        {"model.layers.4.input_layernorm.weight", "layer 4 out of range (config has 4 layers)"},
        {"model.layers.0.mlp.experts.0.gate_proj.weight", "layer 0 is a dense layer in config.json but holds expert"},
        {"model.layers.1.mlp.gate_proj.weight", "layer 1 is an MoE layer in config.json but holds a dense MLP"},
        {"model.layers.1.mlp.experts.0.gate_proj.extra", "unrecognised tensor"},
        {"model.layers.1.feed_forward.w1.weight", "unrecognised tensor"},
        {"model.layers.x.input_layernorm.weight", "layer index is not a number"},
        {"transformer.h.0.attn.weight", "not a name of a qwen3_moe checkpoint"},
        {"model.rotary_emb.inv_freq", "not a layer, embedding, norm or head tensor"},
    };
    for (const auto& k : cases) {
        const std::string err = error_of([&] { classify_tensor(c, k.name); });
        EXPECT_NE(err.find(k.expected), std::string::npos) << k.name << ": got \"" << err << "\"";
        EXPECT_NE(err.find(k.name), std::string::npos) << "error must name the tensor: " << err;
    }
}

TEST(TensorRoles, ClassifiesEveryLayoutAndRole) {
    const ModelConfig c = read_model_config(qwen3_moe_v4(), "config.json");
    struct Case { const char* name; TensorRole role; ExpertLayout layout; Projection proj; int64_t expert; const char* part; };
    const Case cases[] = {
        {"model.layers.1.mlp.experts.7.down_proj.weight", TensorRole::expert, ExpertLayout::per_expert, Projection::down, 7, "weight"},
        {"model.layers.1.mlp.experts.2.up_proj.weight_scale_inv", TensorRole::expert, ExpertLayout::per_expert, Projection::up, 2, "weight_scale_inv"},
        {"model.layers.1.block_sparse_moe.experts.0.w1.weight", TensorRole::expert, ExpertLayout::per_expert, Projection::gate, 0, "weight"},
        {"model.layers.1.block_sparse_moe.experts.0.w3.weight", TensorRole::expert, ExpertLayout::per_expert, Projection::up, 0, "weight"},
        {"model.layers.1.mlp.experts.gate_up_proj", TensorRole::expert, ExpertLayout::fused, Projection::gate_up, -1, "weight"},
        {"model.layers.1.mlp.experts.gate_up_proj_blocks", TensorRole::expert, ExpertLayout::fused, Projection::gate_up, -1, "blocks"},
        {"model.layers.1.mlp.experts.down_proj_bias", TensorRole::expert, ExpertLayout::fused, Projection::down, -1, "bias"},
        {"model.layers.1.mlp.switch_mlp.gate_proj.scales", TensorRole::expert, ExpertLayout::mlx_stacked, Projection::gate, -1, "scales"},
        {"model.language_model.layers.1.mlp.switch_mlp.down_proj.biases", TensorRole::expert, ExpertLayout::mlx_stacked, Projection::down, -1, "biases"},
        {"model.layers.1.mlp.gate.weight", TensorRole::router, ExpertLayout::none, Projection::none, -1, "weight"},
        {"model.layers.1.mlp.router.bias", TensorRole::router, ExpertLayout::none, Projection::none, -1, "bias"},
        {"model.layers.1.mlp.gate.e_score_correction_bias", TensorRole::router, ExpertLayout::none, Projection::none, -1, "correction_bias"},
        {"model.layers.1.mlp.shared_expert_gate.weight", TensorRole::shared_expert, ExpertLayout::none, Projection::none, -1, "weight"},
        {"model.layers.1.mlp.shared_experts.down_proj.weight", TensorRole::shared_expert, ExpertLayout::none, Projection::none, -1, "down_proj.weight"},
        {"model.layers.0.mlp.down_proj.weight", TensorRole::dense_mlp, ExpertLayout::none, Projection::none, -1, "weight"},
        {"model.layers.0.self_attn.q_norm.weight", TensorRole::norm, ExpertLayout::none, Projection::none, -1, "self_attn.q_norm.weight"},
        {"model.layers.0.linear_attn.norm.weight", TensorRole::norm, ExpertLayout::none, Projection::none, -1, "linear_attn.norm.weight"},
        {"model.layers.0.linear_attn.A_log", TensorRole::attention, ExpertLayout::none, Projection::none, -1, "linear_attn.A_log"},
        {"model.layers.0.self_attn.sinks", TensorRole::attention, ExpertLayout::none, Projection::none, -1, "self_attn.sinks"},
        {"model.embed_tokens.weight", TensorRole::embedding, ExpertLayout::none, Projection::none, -1, "weight"},
        {"model.embed_tokens.scales", TensorRole::embedding, ExpertLayout::none, Projection::none, -1, "scales"},
        {"model.norm.weight", TensorRole::norm, ExpertLayout::none, Projection::none, -1, "weight"},
        {"lm_head.weight", TensorRole::head, ExpertLayout::none, Projection::none, -1, "weight"},
        {"model.visual.blocks.0.attn.qkv.weight", TensorRole::skipped, ExpertLayout::none, Projection::none, -1, ""},
        {"mtp.fc.weight", TensorRole::skipped, ExpertLayout::none, Projection::none, -1, ""},
    };
    for (const auto& k : cases) {
        TensorClass t;
        ASSERT_NO_THROW(t = classify_tensor(c, k.name)) << k.name;
        EXPECT_EQ(t.role, k.role) << k.name;
        EXPECT_EQ(t.layout, k.layout) << k.name;
        EXPECT_EQ(t.projection, k.proj) << k.name;
        EXPECT_EQ(t.expert, k.expert) << k.name;
        EXPECT_EQ(t.part, k.part) << k.name;
    }
}

namespace {

struct ReleasedModel {
    const char* config;
    const char* model_type;
    int64_t layers, moe_layers, experts, top_k, hidden, head_dim, rotary_dim, full_attention_layers;
    AttentionType attention;
    RoutingFunction routing;
    bool normalize_topk;
    SourceQuant quant;
};

// Values as published on the models' cards and in their configs.
const ReleasedModel kReleased[] = {
    {"qwen3-30b-a3b", "qwen3_moe", 48, 48, 128, 8, 2048, 128, 128, 48, AttentionType::gqa,
     RoutingFunction::softmax_topk, true, SourceQuant::none},
    {"qwen3-30b-a3b-mlx-4bit", "qwen3_moe", 48, 48, 128, 8, 2048, 128, 128, 48, AttentionType::gqa,
     RoutingFunction::softmax_topk, true, SourceQuant::mlx_affine},
    {"qwen3-next-80b-a3b", "qwen3_next", 48, 48, 512, 10, 2048, 256, 64, 12, AttentionType::gated_gqa,
     RoutingFunction::softmax_topk, true, SourceQuant::none},
    {"qwen3.5-397b-a17b", "qwen3_5_moe", 60, 60, 512, 10, 4096, 256, 64, 15, AttentionType::gated_gqa,
     RoutingFunction::softmax_topk, true, SourceQuant::none},
    {"mixtral-8x7b", "mixtral", 32, 32, 8, 2, 4096, 128, 128, 32, AttentionType::gqa,
     RoutingFunction::softmax_topk, true, SourceQuant::none},
    {"olmoe-1b-7b", "olmoe", 16, 16, 64, 8, 2048, 128, 128, 16, AttentionType::gqa,
     RoutingFunction::softmax_topk, false, SourceQuant::none},
    {"deepseek-v3", "deepseek_v3", 61, 58, 256, 8, 7168, 192, 64, 61, AttentionType::mla,
     RoutingFunction::sigmoid_grouped, true, SourceQuant::fp8_block},
    {"gpt-oss-120b", "gpt_oss", 36, 36, 128, 4, 2880, 64, 64, 18, AttentionType::gqa,
     RoutingFunction::topk_softmax, true, SourceQuant::mxfp4},
};

ModelConfig load_released_config(const std::string& name) {
    const auto path = test::fixtures_dir() / "configs" / (name + ".json");
    return read_model_config(json::parse(std::ifstream(path)), path.string());
}

}  // namespace

class ReleasedConfig : public ::testing::TestWithParam<ReleasedModel> {};

TEST_P(ReleasedConfig, NormalisesToThePublishedShape) {
    const ReleasedModel& m = GetParam();
    const ModelConfig c = load_released_config(m.config);
    EXPECT_EQ(c.model_type, m.model_type);
    EXPECT_EQ(c.num_layers, m.layers);
    EXPECT_EQ(c.num_moe_layers(), m.moe_layers);
    EXPECT_EQ(c.num_experts, m.experts);
    EXPECT_EQ(c.experts_per_token, m.top_k);
    EXPECT_EQ(c.hidden_size, m.hidden);
    EXPECT_EQ(c.head_dim, m.head_dim);
    EXPECT_EQ(c.rope.rotary_dim, m.rotary_dim);
    EXPECT_EQ(std::count_if(c.layers.begin(), c.layers.end(),
                            [](const LayerDesc& l) { return l.attention == AttentionKind::full; }),
              m.full_attention_layers);
    EXPECT_EQ(c.attention, m.attention);
    EXPECT_EQ(c.routing.function, m.routing);
    EXPECT_EQ(c.routing.normalize_topk, m.normalize_topk);
    EXPECT_EQ(c.quant.kind, m.quant);
}

INSTANTIATE_TEST_SUITE_P(Released, ReleasedConfig, ::testing::ValuesIn(kReleased), [](const auto& param_info) {
    std::string name = param_info.param.config;
    for (char& ch : name)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    return name;
});

TEST(ReleasedConfigDetails, ArchitectureSpecificValues) {
    const ModelConfig ds = load_released_config("deepseek-v3");
    EXPECT_EQ(ds.rope.scaling, "yarn");
    EXPECT_EQ(ds.rope.factor, 40.0);
    EXPECT_EQ(ds.rope.original_max_position, 4096);
    EXPECT_EQ(ds.shared_expert_intermediate_size, 2048);
    EXPECT_EQ(ds.routing.num_groups, 8);
    EXPECT_EQ(ds.routing.groups_per_token, 4);
    EXPECT_EQ(ds.mla.kv_lora_rank, 512);
    EXPECT_EQ(ds.quant.block_rows, 128);
    const ModelConfig oss = load_released_config("gpt-oss-120b");
    EXPECT_EQ(oss.sliding_window, 128);
    EXPECT_EQ(oss.layers[0].attention, AttentionKind::sliding);
    EXPECT_EQ(oss.layers[1].attention, AttentionKind::full);
    EXPECT_EQ(oss.swiglu_limit, 7.0);
    EXPECT_FALSE(oss.rope.truncate);
    EXPECT_TRUE(oss.attention_sinks);
    EXPECT_TRUE(oss.expert_bias);
    EXPECT_EQ(oss.expert_intermediate_size, 2880);
    const ModelConfig q35 = load_released_config("qwen3.5-397b-a17b");
    EXPECT_EQ(q35.rope.theta, 1e7);
    EXPECT_EQ(q35.linear.num_value_heads, 64);
    EXPECT_EQ(q35.num_mtp_layers, 1);
    EXPECT_EQ(q35.eos_token_ids, std::vector<int64_t>{248044});
    const ModelConfig mlx = load_released_config("qwen3-30b-a3b-mlx-4bit");
    EXPECT_EQ(mlx.quant.bits, 4);
    EXPECT_EQ(mlx.quant.overrides.at("model.layers.7.mlp.gate").first, 8);
}
