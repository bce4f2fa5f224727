// Pack building on the fixtures: every fixture at every bit width verifies; 16-bit experts
// read back equal to the source; MLX records are copied byte for byte; fp8 sources are
// dequantised; per-expert, fused and stacked layouts give identical packs; 2-bit from the
// source beats 2-bit from a 4-bit pack; one-plus norms are folded.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <regex>

#include "checkpoint.hpp"
#include "dtype.hpp"
#include "pack_builder.hpp"
#include "pack_plan.hpp"
#include "pack_reader.hpp"
#include "pack_verify.hpp"
#include "safetensors_writer.hpp"
#include "test_helpers.hpp"

namespace moepack {
namespace {

namespace fs = std::filesystem;

BuildResult build(const fs::path& source, const fs::path& out, int bits, bool weights = true, bool experts = true) {
    BuildRequest r;
    r.source = source.string();
    r.output = out.string();
    r.options.expert_bits = bits;
    r.options.threads = 2;
    r.weights = weights;
    r.experts = experts;
    return build_pack(r);
}

std::vector<std::byte> file_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::vector<char> c{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    std::vector<std::byte> out(c.size());
    std::memcpy(out.data(), c.data(), c.size());
    return out;
}

ExpertValues read_expert(const Pack& p, size_t layer_index, int64_t e) {
    std::vector<std::byte> block(p.expert_layout().bytes);
    p.read_expert(layer_index, e, block);
    ExpertValues v;
    decode_expert(block, p.expert_layout(), v);
    return v;
}

std::vector<float> source_tensor(const Checkpoint& ck, const std::string& name) {
    std::vector<float> v;
    ck.read_float32(ck.get(name), v);
    return v;
}

const char* const kFixtures[] = {"qwen3_moe", "qwen3_moe_fused", "qwen3_moe_mlx4", "mixtral", "mixtral_sharded",
                                 "olmoe", "qwen3_next", "qwen3_5_moe", "qwen3_5_moe_text", "deepseek_v3",
                                 "deepseek_v3_fp8", "gpt_oss", "gpt_oss_mxfp4"};

TEST(PackBuild, RowRunsReadTheirSourceRowsInOrder) {
    // A plan made of runs of another tensor's rows (as when Qwen3-Next's grouped projections
    // are split) reads exactly those rows, from any starting row (the writer reads in chunks).
    test::ScratchDir dir("row_runs");
    std::vector<float> values(10 * 3);
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i / 3);   // row index
    const std::string path = (dir.path() / "t.safetensors").string();
    write_safetensors(path, {{"w", DType::F32, {10, 3}, std::as_bytes(std::span(values))}});
    const SafetensorsFile file(path);
    DenseTensorPlan d;
    d.source.file = &file;
    d.source.weight = file.find("w");
    d.source.rows = 10;
    d.source.cols = 3;
    d.row_runs = {{7, 2}, {0, 3}, {5, 1}};
    ASSERT_EQ(d.rows(), 6u);
    const std::vector<float> order = {7, 8, 0, 1, 2, 5};
    for (uint64_t begin = 0; begin < 6; ++begin)
        for (uint64_t count = 1; begin + count <= 6; ++count) {
            std::vector<float> got(count * 3);
            d.read_rows(begin, count, got.data());
            for (uint64_t r = 0; r < count; ++r)
                for (uint64_t c = 0; c < 3; ++c)
                    ASSERT_EQ(got[r * 3 + c], order[begin + r]) << "rows " << begin << " + " << count;
        }
}

TEST(PackBuild, EveryFixtureConvertsAndVerifiesAtEveryBitWidth) {
    test::ScratchDir dir("every_fixture");
    for (const char* name : kFixtures) {
        for (int bits : {16, 8, 4, 2}) {
            const fs::path out = dir.path() / concat(name, "-", bits);
            const BuildResult r = build(test::fixture_model(name), out, bits);
            EXPECT_GT(r.pieces_written, 1) << name;
            const VerifyReport v = verify_pack(out.string(), false, 2);
            EXPECT_TRUE(v.ok()) << name << " " << bits << ": " << (v.failures.empty() ? "" : v.failures[0]);
            const auto p = Pack::open(out.string());
            EXPECT_EQ(p->expert_layout().bits, bits);
            EXPECT_FALSE(fs::exists(dir.path() / concat(name, "-", bits, ".partial")));
        }
    }
}

TEST(PackBuild, SixteenBitExpertsAreTheSourceWeightsExactly) {
    test::ScratchDir dir("exact16");
    build(test::fixture_model("qwen3_moe"), dir.path() / "p", 16);
    const auto p = Pack::open((dir.path() / "p").string());
    const Checkpoint ck = Checkpoint::open(test::fixture_model("qwen3_moe").string());
    ASSERT_EQ(p->expert_layers().size(), 2u);   // layer 1 is dense
    for (size_t li = 0; li < 2; ++li) {
        const int64_t layer = p->expert_layers()[li].layer;
        for (int64_t e : {0, 5, 7}) {
            const ExpertValues v = read_expert(*p, li, e);
            const std::string base = concat("model.layers.", layer, ".mlp.experts.", e, ".");
            EXPECT_EQ(v.gate, source_tensor(ck, base + "gate_proj.weight"));
            EXPECT_EQ(v.up, source_tensor(ck, base + "up_proj.weight"));
            EXPECT_EQ(v.down, source_tensor(ck, base + "down_proj.weight"));
        }
    }
    // non-expert tensors in source precision are the source bytes
    const PackTensor* q = p->find_tensor("layers.1.self_attn.q_proj.weight");
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(q->encoding, DenseEncoding::bf16);
    std::vector<std::byte> bytes(q->piece.bytes);
    p->read_tensor(*q, bytes);
    const auto& ref = ck.get("model.layers.1.self_attn.q_proj.weight");
    const auto src = ref.file->data(*ref.info);
    ASSERT_EQ(bytes.size(), src.size());
    EXPECT_EQ(std::memcmp(bytes.data(), src.data(), src.size()), 0);
    // dense MLP layer and router under their normalised names
    EXPECT_NE(p->find_tensor("layers.1.mlp.gate_proj.weight"), nullptr);
    EXPECT_NE(p->find_tensor("layers.0.mlp.router.weight"), nullptr);
    EXPECT_NE(p->find_tensor("embed_tokens.weight"), nullptr);
    EXPECT_NE(p->find_tensor("norm.weight"), nullptr);
}

TEST(PackBuild, GptOssFusedTransposedInterleavedExpertsAreUnscrambled) {
    test::ScratchDir dir("gpt_oss16");
    build(test::fixture_model("gpt_oss"), dir.path() / "p", 16);
    const auto p = Pack::open((dir.path() / "p").string());
    const Checkpoint ck = Checkpoint::open(test::fixture_model("gpt_oss").string());
    const auto gate_up = source_tensor(ck, "model.layers.1.mlp.experts.gate_up_proj");   // [E, H, 2I]
    const auto down = source_tensor(ck, "model.layers.1.mlp.experts.down_proj");         // [E, I, H]
    const auto bias = source_tensor(ck, "model.layers.1.mlp.experts.gate_up_proj_bias"); // [E, 2I]
    const uint64_t H = 64, I = 32, e = 2;
    const ExpertValues v = read_expert(*p, 1, static_cast<int64_t>(e));
    for (uint64_t i = 0; i < I; ++i)
        for (uint64_t h = 0; h < H; ++h) {
            ASSERT_EQ(v.gate[i * H + h], gate_up[(e * H + h) * 2 * I + 2 * i]);
            ASSERT_EQ(v.up[i * H + h], gate_up[(e * H + h) * 2 * I + 2 * i + 1]);
            ASSERT_EQ(v.down[h * I + i], down[(e * I + i) * H + h]);
        }
    for (uint64_t i = 0; i < I; ++i) {
        EXPECT_EQ(v.gate_bias[i], bias[e * 2 * I + 2 * i]);
        EXPECT_EQ(v.up_bias[i], bias[e * 2 * I + 2 * i + 1]);
    }
}

TEST(PackBuild, MlxRecordsAreCopiedByteForByte) {
    test::ScratchDir dir("mlx");
    build(test::fixture_model("qwen3_moe_mlx4"), dir.path() / "p", 4);
    const auto p = Pack::open((dir.path() / "p").string());
    const Checkpoint ck = Checkpoint::open(test::fixture_model("qwen3_moe_mlx4").string());
    const auto& l = p->expert_layout();
    ASSERT_EQ(l.group_size, 64);
    std::vector<std::byte> block(l.bytes);
    p->read_expert(1, 3, block);   // layer 2, expert 3
    auto slice = [&](const std::string& name, uint64_t bytes_per_expert) {
        const auto& t = ck.get(name);
        return t.file->data(*t.info).subspan(3 * bytes_per_expert, bytes_per_expert);
    };
    const auto& down = l.down;
    const auto codes = slice("model.layers.2.mlp.switch_mlp.down_proj.weight", down.codes_bytes());
    const auto scales = slice("model.layers.2.mlp.switch_mlp.down_proj.scales", down.scales_bytes());
    const auto biases = slice("model.layers.2.mlp.switch_mlp.down_proj.biases", down.biases_bytes());
    EXPECT_EQ(std::memcmp(block.data() + l.down_offset, codes.data(), codes.size()), 0);
    EXPECT_EQ(std::memcmp(block.data() + l.down_offset + down.scales_offset(), scales.data(), scales.size()), 0);
    EXPECT_EQ(std::memcmp(block.data() + l.down_offset + down.biases_offset(), biases.data(), biases.size()), 0);
    // non-expert MLX tensors too, at their own bits (router at 8)
    const PackTensor* router = p->find_tensor("layers.2.mlp.router.weight");
    ASSERT_NE(router, nullptr);
    EXPECT_EQ(router->encoding, DenseEncoding::affine);
    EXPECT_EQ(router->bits, 8);
    std::vector<std::byte> rb(router->piece.bytes);
    p->read_tensor(*router, rb);
    const auto rcodes = ck.get("model.layers.2.mlp.gate.weight");
    EXPECT_EQ(std::memcmp(rb.data(), rcodes.file->data(*rcodes.info).data(), rcodes.info->nbytes), 0);
}

TEST(PackBuild, Fp8SourcesAreDequantised) {
    test::ScratchDir dir("fp8");
    build(test::fixture_model("deepseek_v3_fp8"), dir.path() / "p", 16);
    const auto p = Pack::open((dir.path() / "p").string());
    const Checkpoint ck = Checkpoint::open(test::fixture_model("deepseek_v3_fp8").string());
    // expert 5 of layer 1: fp8 [144, 160] with 128x128 block scales (partial blocks)
    const ExpertValues v = read_expert(*p, 0, 5);
    const auto q = source_tensor(ck, "model.layers.1.mlp.experts.5.gate_proj.weight");
    const auto s = source_tensor(ck, "model.layers.1.mlp.experts.5.gate_proj.weight_scale_inv");   // [2, 2]
    for (uint64_t r = 0; r < 144; ++r)
        for (uint64_t c = 0; c < 160; ++c)
            ASSERT_EQ(v.gate[r * 160 + c], bf16_to_float(float_to_bf16(q[r * 160 + c] * s[(r / 128) * 2 + c / 128])))
                << r << "," << c;
    const PackTensor* t = p->find_tensor("layers.0.self_attn.q_a_proj.weight");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->encoding, DenseEncoding::bf16);
}

// The qwen3_moe experts rewritten as one stacked [E, rows, cols] tensor per projection.
void write_stacked_copy(const fs::path& dst) {
    const Checkpoint ck = Checkpoint::open(test::fixture_model("qwen3_moe").string());
    fs::create_directories(dst);
    fs::copy_file(test::fixture_model("qwen3_moe") / "config.json", dst / "config.json");
    std::vector<TensorToWrite> out;
    std::vector<std::vector<std::byte>> stacked;
    stacked.reserve(8);
    const std::regex expert(R"(model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(\w+)\.weight)");
    std::map<std::pair<std::string, std::string>, std::vector<const TensorRef*>> groups;
    for (const auto& t : ck.tensors()) {
        std::smatch m;
        if (std::regex_match(t.info->name, m, expert)) {
            auto& g = groups[{m[1], m[3]}];
            g.resize(8);
            g[std::stoul(m[2])] = &t;
        } else {
            out.push_back({t.info->name, t.info->dtype, t.info->shape, t.file->data(*t.info)});
        }
    }
    for (const auto& [key, refs] : groups) {
        std::vector<std::byte> bytes;
        for (const TensorRef* r : refs) {
            const auto d = r->file->data(*r->info);
            bytes.insert(bytes.end(), d.begin(), d.end());
        }
        stacked.push_back(std::move(bytes));
        std::vector<int64_t> shape = refs[0]->info->shape;
        shape.insert(shape.begin(), 8);
        out.push_back({concat("model.layers.", key.first, ".mlp.switch_mlp.", key.second, ".weight"), DType::BF16, shape,
                       stacked.back()});
    }
    write_safetensors((dst / "model.safetensors").string(), out);
}

TEST(PackBuild, PerExpertFusedAndStackedSourcesGiveIdenticalPacks) {
    test::ScratchDir dir("layouts");
    write_stacked_copy(dir.path() / "stacked");
    for (int bits : {16, 4, 2}) {
        const fs::path a = dir.path() / concat("per_expert", bits), b = dir.path() / concat("fused", bits),
                       c = dir.path() / concat("stacked", bits);
        build(test::fixture_model("qwen3_moe"), a, bits);
        build(test::fixture_model("qwen3_moe_fused"), b, bits);
        build(dir.path() / "stacked", c, bits);
        for (const char* f : {"weights.bin", "experts/layer-000.bin", "experts/layer-002.bin"}) {
            EXPECT_EQ(file_bytes(a / f), file_bytes(b / f)) << f << " at " << bits << " bits (fused)";
            EXPECT_EQ(file_bytes(a / f), file_bytes(c / f)) << f << " at " << bits << " bits (stacked)";
        }
    }
}

TEST(PackBuild, TwoBitFromSourceBeatsTwoBitFromFourBitPack) {
    test::ScratchDir dir("two_bit");
    build(test::fixture_model("qwen3_moe"), dir.path() / "p4", 4);
    build(test::fixture_model("qwen3_moe"), dir.path() / "p2", 2);
    build(dir.path() / "p4", dir.path() / "p2_from_4", 2, false, true);
    const auto p2 = Pack::open((dir.path() / "p2").string());
    const auto p24 = Pack::open((dir.path() / "p2_from_4").string());
    EXPECT_FALSE(p24->has_weights());
    EXPECT_EQ(p24->expert_layout().bits, 2);
    const Checkpoint ck = Checkpoint::open(test::fixture_model("qwen3_moe").string());
    double direct = 0, via4 = 0;
    for (int64_t e = 0; e < 8; ++e) {
        const auto want = source_tensor(ck, concat("model.layers.0.mlp.experts.", e, ".down_proj.weight"));
        direct += test::relative_l2(read_expert(*p2, 0, e).down, want);
        via4 += test::relative_l2(read_expert(*p24, 0, e).down, want);
    }
    // errors add roughly in quadrature, so the gain is modest (about 2 % here) but systematic
    EXPECT_LT(direct, via4 * 0.99) << direct / 8 << " vs " << via4 / 8;
    EXPECT_LT(direct / 8, 0.45);
}

TEST(PackBuild, OnePlusNormsAreFoldedExceptTheGatedNorm) {
    test::ScratchDir dir("fold");
    build(test::fixture_model("qwen3_next"), dir.path() / "p", 16);
    const auto p = Pack::open((dir.path() / "p").string());
    const Checkpoint ck = Checkpoint::open(test::fixture_model("qwen3_next").string());
    auto values = [&](const std::string& name) {
        const PackTensor* t = p->find_tensor(name);
        EXPECT_NE(t, nullptr) << name;
        EXPECT_EQ(t->encoding, DenseEncoding::f32);
        std::vector<std::byte> b(t->piece.bytes);
        p->read_tensor(*t, b);
        std::vector<float> v(b.size() / 4);
        std::memcpy(v.data(), b.data(), b.size());
        return v;
    };
    const auto folded = values("layers.0.input_layernorm.weight");
    const auto src = source_tensor(ck, "model.layers.0.input_layernorm.weight");
    for (size_t i = 0; i < src.size(); ++i) EXPECT_EQ(folded[i], 1.0f + src[i]);
    std::string linear_layer;
    for (const auto& t : p->tensors())
        if (t.name.ends_with("linear_attn.norm.weight")) linear_layer = t.name;
    ASSERT_FALSE(linear_layer.empty());
    EXPECT_EQ(values(linear_layer), source_tensor(ck, "model." + linear_layer));
}

TEST(PackBuild, DenseBitsQuantizeMatricesButNotVectors) {
    test::ScratchDir dir("dense4");
    BuildRequest r;
    r.source = test::fixture_model("qwen3_moe").string();
    r.output = (dir.path() / "p").string();
    r.options.dense_bits = 4;
    build_pack(r);
    const auto p = Pack::open(r.output);
    EXPECT_EQ(p->find_tensor("embed_tokens.weight")->bits, 4);
    EXPECT_EQ(p->find_tensor("lm_head.weight")->bits, 4);
    EXPECT_EQ(p->find_tensor("layers.0.mlp.router.weight")->bits, 8);
    EXPECT_EQ(p->find_tensor("norm.weight")->encoding, DenseEncoding::f32);
    EXPECT_TRUE(verify_pack(r.output, false, 1).ok());
}

TEST(PackBuild, TheTokenizerTravelsWithTheWeights) {
    test::ScratchDir dir("tokenizer");
    const fs::path ck = dir.path() / "checkpoint";
    fs::copy(test::fixture_model("qwen3_moe"), ck);
    for (const auto& f : fs::directory_iterator(test::fixtures_dir() / "tokenizers" / "byte_level_bpe"))
        fs::copy_file(f.path(), ck / f.path().filename());
    build(ck, dir.path() / "p", 4);
    const auto p = Pack::open((dir.path() / "p").string());
    EXPECT_EQ(p->tokenizer_file(), "tokenizer.bin");
    EXPECT_EQ(p->vocab_file(), "vocab.bin");
    EXPECT_TRUE(verify_pack((dir.path() / "p").string(), false, 1).ok());
    // without tokenizer.json the pack simply has none
    build(test::fixture_model("qwen3_moe"), dir.path() / "bare", 4);
    EXPECT_EQ(Pack::open((dir.path() / "bare").string())->tokenizer_file(), "");
    // a flipped byte in the tokenizer is found
    {
        std::fstream f(dir.path() / "p" / "tokenizer.bin", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(40);
        f.put('\x7f');
    }
    const VerifyReport v = verify_pack((dir.path() / "p").string(), false, 1);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.failures[0].find("tokenizer.bin: file checksum"), std::string::npos) << v.failures[0];
}

}  // namespace
}  // namespace moepack
