// Checkpoint opening: single files, directories, sharded indexes, and their failure modes.
#include <gtest/gtest.h>

#include <fstream>

#include "checkpoint.hpp"
#include "safetensors_writer.hpp"
#include "test_helpers.hpp"

using namespace moepack;
using namespace moepack::test;
namespace fs = std::filesystem;

namespace {

void write_text(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

void copy_sharded(const fs::path& to) {
    fs::copy(fixture_model("mixtral_sharded"), to, fs::copy_options::recursive);
}

std::string read_text(const fs::path& p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), {}};
}

void replace_in_file(const fs::path& p, const std::string& from, const std::string& to) {
    std::string s = read_text(p);
    const auto pos = s.find(from);
    ASSERT_NE(pos, std::string::npos) << from;
    s.replace(pos, from.size(), to);
    write_text(p, s);
}

}  // namespace

TEST(Checkpoint, ShardedAndSingleFileHoldTheSameTensors) {
    const Checkpoint single = Checkpoint::open(fixture_model("mixtral").string());
    const Checkpoint sharded = Checkpoint::open(fixture_model("mixtral_sharded").string());
    EXPECT_EQ(single.files().size(), 1u);
    EXPECT_EQ(sharded.files().size(), 5u);
    ASSERT_EQ(single.tensors().size(), sharded.tensors().size());
    std::vector<float> a, b;
    for (size_t i = 0; i < single.tensors().size(); ++i) {
        const auto& ta = single.tensors()[i];
        const auto& tb = sharded.tensors()[i];
        ASSERT_EQ(ta.info->name, tb.info->name);
        single.read_float32(ta, a);
        sharded.read_float32(tb, b);
        EXPECT_EQ(a, b) << ta.info->name;
    }
    EXPECT_TRUE(sharded.has_config());
    EXPECT_EQ(sharded.config()["model_type"], "mixtral");
}

TEST(Checkpoint, SingleFilePathFindsConfigBesideIt) {
    const Checkpoint ck = Checkpoint::open((fixture_model("olmoe") / "model.safetensors").string());
    EXPECT_TRUE(ck.has_config());
    EXPECT_NE(ck.find("model.embed_tokens.weight"), nullptr);
    EXPECT_EQ(ck.find("model.embed_tokens.bias"), nullptr);
    EXPECT_NE(error_of([&] { ck.get("nope"); }).find("checkpoint has no tensor 'nope'"), std::string::npos);
}

TEST(Checkpoint, ShardedFailureModes) {
    struct Case {
        const char* what;
        std::function<void(const fs::path&)> damage;
        const char* expected;
    };
    const std::vector<Case> cases = {
        {"missing shard", [](const fs::path& d) { fs::remove(d / "model-00003-of-00005.safetensors"); },
         "shard 'model-00003-of-00005.safetensors'"},
        {"index names a tensor its shard lacks",
         [](const fs::path& d) {
             replace_in_file(d / "model.safetensors.index.json", "\"model.norm.weight\"", "\"model.norm.weight\": \"model-00001-of-00005.safetensors\", \"model.ghost.weight\"");
         },
         "is mapped to shard"},
        {"shard holds a tensor the index does not map",
         [](const fs::path& d) {
             const fs::path index = d / "model.safetensors.index.json";
             auto j = nlohmann::json::parse(read_text(index));
             j["weight_map"].erase("model.embed_tokens.weight");
             write_text(index, j.dump());
         },
         "is not mapped to this shard"},
        {"index is not JSON", [](const fs::path& d) { write_text(d / "model.safetensors.index.json", "{oops"); },
         "model.safetensors.index.json: not valid UTF-8 JSON"},
        {"index without weight_map", [](const fs::path& d) { write_text(d / "model.safetensors.index.json", "{}"); },
         "missing the \"weight_map\" object"},
        {"shard name escapes the directory",
         [](const fs::path& d) {
             write_text(d / "model.safetensors.index.json", R"({"weight_map":{"a":"../a.safetensors"}})");
         },
         "invalid shard name"},
        {"corrupt config.json", [](const fs::path& d) { write_text(d / "config.json", "[1,"); },
         "config.json: not valid UTF-8 JSON"},
        {"truncated shard",
         [](const fs::path& d) { fs::resize_file(d / "model-00002-of-00005.safetensors", 1000); },
         "model-00002-of-00005.safetensors: "},
    };
    for (const auto& c : cases) {
        ScratchDir scratch("sharded");
        const fs::path dir = scratch.path() / "ck";
        copy_sharded(dir);
        c.damage(dir);
        const std::string err = error_of([&] { Checkpoint::open(dir.string()); });
        EXPECT_NE(err.find(c.expected), std::string::npos) << c.what << ": got \"" << err << "\"";
    }
}

TEST(Checkpoint, DirectoryFailureModes) {
    ScratchDir scratch("dir");
    EXPECT_NE(error_of([&] { Checkpoint::open((scratch.path() / "absent").string()); })
                  .find("no such file or directory"),
              std::string::npos);
    EXPECT_NE(error_of([&] { Checkpoint::open(scratch.path().string()); }).find("no .safetensors files"),
              std::string::npos);
    // the same tensor in two unindexed files
    const std::vector<std::byte> one(4);
    write_safetensors((scratch.path() / "a.safetensors").string(), {{"t", DType::F32, {1}, one}});
    write_safetensors((scratch.path() / "b.safetensors").string(), {{"t", DType::F32, {1}, one}});
    const std::string err = error_of([&] { Checkpoint::open(scratch.path().string()); });
    EXPECT_NE(err.find("tensor 't' is also in"), std::string::npos) << err;
}

TEST(Checkpoint, ReadFloatRejectsIntegerTensors) {
    const Checkpoint ck = Checkpoint::open(fixture_model("gpt_oss_mxfp4").string());
    const TensorRef* blocks = ck.find("model.layers.0.mlp.experts.down_proj_blocks");
    ASSERT_NE(blocks, nullptr);
    std::vector<float> out;
    EXPECT_NE(error_of([&] { ck.read_float32(*blocks, out); }).find("is U8, expected a floating type"),
              std::string::npos);
}
