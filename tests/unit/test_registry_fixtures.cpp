// The registry over every reference checkpoint (written by transformers, or re-encoded as
// MLX / fp8 / MXFP4 / fused / sharded): architecture, layer and expert counts, layout,
// per-expert sizes, and write-read round trips of every fixture through the writer.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "checkpoint.hpp"
#include "checkpoint_summary.hpp"
#include "pack_plan.hpp"
#include "safetensors_writer.hpp"
#include "test_helpers.hpp"

using namespace moepack;
using namespace moepack::test;
namespace fs = std::filesystem;

namespace {

struct Expected {
    const char* fixture;
    const char* architecture;
    int64_t layers, moe_layers, experts, top_k;
    ExpertLayout layout;
    SourceQuant quant;
    uint64_t per_expert_params;   // 3 * hidden * expert_intermediate
    bool has_skipped;             // vision / MTP tensors present
};

const Expected kFixtures[] = {
    {"qwen3_moe", "qwen3_moe", 3, 2, 8, 3, ExpertLayout::per_expert, SourceQuant::none, 3 * 64 * 32, false},
    {"qwen3_moe_fused", "qwen3_moe", 3, 2, 8, 3, ExpertLayout::fused, SourceQuant::none, 3 * 64 * 32, false},
    {"qwen3_moe_mlx4", "qwen3_moe", 3, 2, 8, 3, ExpertLayout::mlx_stacked, SourceQuant::mlx_affine, 3 * 128 * 64, false},
    {"mixtral", "mixtral", 2, 2, 4, 2, ExpertLayout::per_expert, SourceQuant::none, 3 * 64 * 48, false},
    {"mixtral_sharded", "mixtral", 2, 2, 4, 2, ExpertLayout::per_expert, SourceQuant::none, 3 * 64 * 48, false},
    {"olmoe", "olmoe", 2, 2, 8, 3, ExpertLayout::per_expert, SourceQuant::none, 3 * 64 * 40, false},
    {"qwen3_next", "qwen3_next", 4, 3, 8, 3, ExpertLayout::per_expert, SourceQuant::none, 3 * 64 * 32, false},
    {"qwen3_5_moe", "qwen3_5_moe", 4, 4, 8, 3, ExpertLayout::fused, SourceQuant::none, 3 * 64 * 32, true},
    {"qwen3_5_moe_text", "qwen3_5_moe_text", 4, 4, 8, 3, ExpertLayout::per_expert, SourceQuant::none, 3 * 64 * 32, false},
    {"deepseek_v3", "deepseek_v3", 3, 2, 8, 2, ExpertLayout::per_expert, SourceQuant::none, 3 * 64 * 32, false},
    {"deepseek_v3_fp8", "deepseek_v3", 2, 1, 8, 2, ExpertLayout::per_expert, SourceQuant::fp8_block, 3 * 160 * 144, true},
    {"gpt_oss", "gpt_oss", 2, 2, 4, 2, ExpertLayout::fused, SourceQuant::none, 3 * 64 * 32, false},
    {"gpt_oss_mxfp4", "gpt_oss", 2, 2, 4, 2, ExpertLayout::fused, SourceQuant::mxfp4, 3 * 64 * 32, false},
};

// Copies `src` into `dst` through the writer, dropping tensors for which `drop` is true.
void rewrite_checkpoint(const Checkpoint& src, const fs::path& dst,
                        const std::function<bool(const std::string&)>& drop = nullptr) {
    fs::create_directories(dst);
    fs::copy_file(fs::path(src.directory()) / "config.json", dst / "config.json");
    std::vector<TensorToWrite> tensors;
    for (const auto& t : src.tensors()) {
        if (drop && drop(t.info->name)) continue;
        tensors.push_back({t.info->name, t.info->dtype, t.info->shape, t.file->data(*t.info)});
    }
    write_safetensors((dst / "model.safetensors").string(), tensors, {{"format", "pt"}}, true);
}

}  // namespace

class RegistryFixture : public ::testing::TestWithParam<Expected> {};

TEST_P(RegistryFixture, SummaryMatchesTheModel) {
    const Expected& e = GetParam();
    const Checkpoint ck = Checkpoint::open(fixture_model(e.fixture).string());
    const CheckpointSummary s = summarize_checkpoint(ck);
    EXPECT_EQ(s.config.model_type, e.architecture);
    EXPECT_EQ(s.config.num_layers, e.layers);
    EXPECT_EQ(s.config.num_moe_layers(), e.moe_layers);
    EXPECT_EQ(s.config.num_experts, e.experts);
    EXPECT_EQ(s.config.experts_per_token, e.top_k);
    EXPECT_EQ(s.layout, e.layout);
    EXPECT_EQ(s.config.quant.kind, e.quant);
    EXPECT_EQ(s.per_expert_weight_params(), e.per_expert_params);
    EXPECT_EQ(s.skipped_bytes > 0, e.has_skipped);
    EXPECT_EQ(s.total_bytes, s.expert_bytes + s.non_expert_bytes + s.skipped_bytes);
    EXPECT_EQ(s.tensors.size(), ck.tensors().size());
    // every fixture can be planned; packs shrink with the bit width and 16-bit experts weigh
    // 2 bytes per weight (tiny experts round up to one 4 KiB block at 4 and 2 bits)
    auto plan_at = [&](int bits) {
        PackOptions o;
        o.expert_bits = bits;
        return plan_pack(s, o);
    };
    EXPECT_GT(plan_at(16).total_bytes(), plan_at(8).total_bytes());
    EXPECT_GE(plan_at(8).total_bytes(), plan_at(4).total_bytes());
    EXPECT_GE(plan_at(4).total_bytes(), plan_at(2).total_bytes());
    const PackPlan p16 = plan_at(16);
    EXPECT_GE(p16.total_bytes() - p16.weights_file_bytes,
              e.per_expert_params * 2 * static_cast<uint64_t>(e.moe_layers * e.experts));
    EXPECT_EQ(p16.layers.size(), static_cast<size_t>(e.moe_layers));
    const auto j = to_json(s, true);
    EXPECT_EQ(j["architecture"], e.architecture);
    EXPECT_EQ(j["expert_layout"], to_string(e.layout));
    EXPECT_EQ(j["num_tensors"], ck.tensors().size());
    EXPECT_EQ(j["tensors"].size(), ck.tensors().size());
}

TEST_P(RegistryFixture, WriterRoundTripKeepsEveryByte) {
    const Expected& e = GetParam();
    const Checkpoint ck = Checkpoint::open(fixture_model(e.fixture).string());
    ScratchDir scratch(std::string("roundtrip_") + e.fixture);
    rewrite_checkpoint(ck, scratch.path() / "ck");
    const Checkpoint back = Checkpoint::open((scratch.path() / "ck").string());
    ASSERT_EQ(back.tensors().size(), ck.tensors().size());
    for (size_t i = 0; i < ck.tensors().size(); ++i) {
        const auto& a = ck.tensors()[i];
        const auto& b = back.tensors()[i];
        ASSERT_EQ(a.info->name, b.info->name);
        EXPECT_EQ(a.info->dtype, b.info->dtype);
        EXPECT_EQ(a.info->shape, b.info->shape);
        ASSERT_EQ(a.info->nbytes, b.info->nbytes);
        EXPECT_EQ(std::memcmp(a.file->data(*a.info).data(), b.file->data(*b.info).data(), a.info->nbytes), 0)
            << a.info->name;
    }
    EXPECT_EQ(to_json(summarize_checkpoint(back), false), to_json(summarize_checkpoint(ck), false));
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, RegistryFixture, ::testing::ValuesIn(kFixtures),
                         [](const auto& param_info) { return std::string(param_info.param.fixture); });

TEST(RegistryChecks, MissingExpertProjectionIsNamed) {
    const Checkpoint ck = Checkpoint::open(fixture_model("olmoe").string());
    ScratchDir scratch("missing_expert");
    rewrite_checkpoint(ck, scratch.path() / "ck",
                       [](const std::string& n) { return n == "model.layers.1.mlp.experts.5.down_proj.weight"; });
    const Checkpoint damaged = Checkpoint::open((scratch.path() / "ck").string());
    const std::string err = error_of([&] { summarize_checkpoint(damaged); });
    EXPECT_NE(err.find("layer 1: expert 5 has no down projection"), std::string::npos) << err;
}

TEST(RegistryChecks, MissingRouterIsNamed) {
    const Checkpoint ck = Checkpoint::open(fixture_model("mixtral").string());
    ScratchDir scratch("missing_router");
    rewrite_checkpoint(ck, scratch.path() / "ck",
                       [](const std::string& n) { return n == "model.layers.0.block_sparse_moe.gate.weight"; });
    const std::string err = error_of([&] { summarize_checkpoint(Checkpoint::open((scratch.path() / "ck").string())); });
    EXPECT_NE(err.find("layer 0: MoE layer has no router weight"), std::string::npos) << err;
}

TEST(RegistryChecks, StackedExpertCountMustMatchConfig) {
    const Checkpoint ck = Checkpoint::open(fixture_model("gpt_oss").string());
    ScratchDir scratch("expert_count");
    rewrite_checkpoint(ck, scratch.path() / "ck");
    // claim 8 experts while the stacked tensors hold 4
    std::ifstream in(scratch.path() / "ck" / "config.json");
    auto cfg = nlohmann::json::parse(in);
    cfg["num_local_experts"] = 8;
    std::ofstream(scratch.path() / "ck" / "config.json") << cfg.dump();
    const std::string err = error_of([&] { summarize_checkpoint(Checkpoint::open((scratch.path() / "ck").string())); });
    EXPECT_NE(err.find("expected 8 experts in dimension 0, got 4"), std::string::npos) << err;
    EXPECT_NE(err.find("model.layers.0.mlp.experts."), std::string::npos) << err;
}

TEST(RegistryChecks, MixedExpertLayoutsAreRejected) {
    const Checkpoint fused = Checkpoint::open(fixture_model("qwen3_moe_fused").string());
    const Checkpoint per_expert = Checkpoint::open(fixture_model("qwen3_moe").string());
    ScratchDir scratch("mixed_layout");
    fs::copy_file(fs::path(fused.directory()) / "config.json", scratch.path() / "config.json");
    std::vector<TensorToWrite> tensors;
    for (const auto& t : fused.tensors())
        tensors.push_back({t.info->name, t.info->dtype, t.info->shape, t.file->data(*t.info)});
    const TensorRef& extra = per_expert.get("model.layers.2.mlp.experts.0.gate_proj.weight");
    tensors.push_back({extra.info->name, extra.info->dtype, extra.info->shape, extra.file->data(*extra.info)});
    write_safetensors((scratch.path() / "model.safetensors").string(), tensors);
    const std::string err = error_of([&] { summarize_checkpoint(Checkpoint::open(scratch.path().string())); });
    EXPECT_NE(err.find("expert layout but earlier experts are"), std::string::npos) << err;
    EXPECT_NE(err.find("model.layers.2.mlp.experts"), std::string::npos) << err;
}

TEST(RegistryChecks, MissingConfigIsNamed) {
    ScratchDir scratch("no_config");
    const std::vector<std::byte> one(4);
    write_safetensors((scratch.path() / "model.safetensors").string(), {{"t", DType::F32, {1}, one}});
    const std::string err = error_of([&] { summarize_checkpoint(Checkpoint::open(scratch.path().string())); });
    EXPECT_NE(err.find("config.json: missing"), std::string::npos) << err;
}

TEST(RegistryChecks, SkipsVisionAndMtpTensors) {
    const Checkpoint qwen = Checkpoint::open(fixture_model("qwen3_5_moe").string());
    const CheckpointSummary s = summarize_checkpoint(qwen);
    int visual = 0, mtp = 0;
    for (const auto& t : s.tensors) {
        const std::string& n = t.ref.info->name;
        if (n.rfind("model.visual.", 0) == 0) {
            EXPECT_EQ(t.cls.role, TensorRole::skipped) << n;
            ++visual;
        }
        if (n.rfind("mtp.", 0) == 0) {
            EXPECT_EQ(t.cls.role, TensorRole::skipped) << n;
            ++mtp;
        }
    }
    EXPECT_GT(visual, 0);
    EXPECT_GT(mtp, 0);
    const Checkpoint deepseek = Checkpoint::open(fixture_model("deepseek_v3_fp8").string());
    const CheckpointSummary d = summarize_checkpoint(deepseek);
    int mtp_layer = 0;
    for (const auto& t : d.tensors)
        if (t.cls.layer == 2) {
            EXPECT_EQ(t.cls.role, TensorRole::skipped) << t.ref.info->name;
            ++mtp_layer;
        }
    EXPECT_GT(mtp_layer, 0);
}
