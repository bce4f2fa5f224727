// Pack safety: verify names every flipped byte's location, damaged manifests are rejected
// with the entry named, interrupted conversions leave no pack and resume reuses finished
// pieces, existing output needs --force, a full disk gives an error and no pack.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <regex>

#include "pack_builder.hpp"
#include "pack_reader.hpp"
#include "pack_verify.hpp"
#include "test_helpers.hpp"

namespace moepack {
namespace {

namespace fs = std::filesystem;

BuildRequest request(const fs::path& source, const fs::path& out, int bits = 4) {
    BuildRequest r;
    r.source = source.string();
    r.output = out.string();
    r.options.expert_bits = bits;
    r.options.threads = 2;
    return r;
}

void flip_byte(const fs::path& file, uint64_t offset) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    char c;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(offset));
    f.put(static_cast<char>(c ^ 0x10));
}

std::string all_failures(const VerifyReport& r) {
    std::string s;
    for (const auto& f : r.failures) s += f + "\n";
    return s;
}

class PackSafety : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = std::make_unique<test::ScratchDir>(::testing::UnitTest::GetInstance()->current_test_info()->name());
        pack_ = dir_->path() / "pack";
        build_pack(request(test::fixture_model("qwen3_moe"), pack_));
    }
    std::unique_ptr<test::ScratchDir> dir_;
    fs::path pack_;
};

struct FlipCase {
    const char* what;
    std::function<std::pair<std::string, uint64_t>(const Pack&)> where;   // file, offset
    const char* expected;                                                 // regex on the failures
};

TEST_F(PackSafety, VerifyNamesTheLocationOfAFlippedByteInEveryKindOfFile) {
    const FlipCase cases[] = {
        {"tensor data", [](const Pack& p) { const auto* t = p.find_tensor("layers.2.self_attn.o_proj.weight");
                                            return std::pair{std::string("weights.bin"), t->piece.offset + 5}; },
         "weights.bin: tensor 'layers.2.self_attn.o_proj.weight' \\(bytes [0-9]+\\.\\.[0-9]+\\): checksum"},
        {"weights header", [](const Pack&) { return std::pair{std::string("weights.bin"), uint64_t{17}}; },
         "weights.bin: header byte 17 is 0x"},
        {"weights padding", [](const Pack& p) {
             for (size_t i = 0; i + 1 < p.tensors().size(); ++i) {
                 const auto& t = p.tensors()[i];
                 if (t.piece.offset + t.piece.bytes < p.tensors()[i + 1].piece.offset)
                     return std::pair{std::string("weights.bin"), t.piece.offset + t.piece.bytes};
             }
             return std::pair{std::string("weights.bin"), uint64_t{0}}; },
         "weights.bin: padding byte at offset [0-9]+ is not zero"},
        {"expert data", [](const Pack& p) { return std::pair{p.expert_layers()[1].file, p.expert_layers()[1].experts[5].offset + 100}; },
         "layer-002.bin: layer 2 expert 5 \\(bytes"},
        {"expert header", [](const Pack& p) { return std::pair{p.expert_layers()[0].file, uint64_t{16}}; },
         "layer-000.bin: header byte 16 is 0x"},
        {"expert padding", [](const Pack& p) { const auto& e = p.expert_layers()[0].experts[3];
                                               return std::pair{p.expert_layers()[0].file, e.offset + e.bytes + 1}; },
         "layer-000.bin: padding byte at offset [0-9]+ is not zero"},
        {"config", [](const Pack&) { return std::pair{std::string("config.json"), uint64_t{3}}; },
         "config.json: file checksum [0-9a-f]{16}, expected [0-9a-f]{16}"},
    };
    for (const auto& c : cases) {
        build_pack([&] { auto r = request(test::fixture_model("qwen3_moe"), pack_); r.force = true; return r; }());
        ASSERT_TRUE(verify_pack(pack_.string(), false, 2).ok());
        std::pair<std::string, uint64_t> at;
        {
            const auto p = Pack::open(pack_.string());
            at = c.where(*p);
        }
        ASSERT_NE(at.second, 0u) << c.what;
        flip_byte(pack_ / at.first, at.second);
        const VerifyReport r = verify_pack(pack_.string(), false, 2);
        EXPECT_FALSE(r.ok()) << c.what;
        EXPECT_TRUE(std::regex_search(all_failures(r), std::regex(c.expected))) << c.what << ":\n" << all_failures(r);
    }
}

TEST_F(PackSafety, QuickVerifyChecksSizesAndHeadersOnly) {
    const auto layer = Pack::open(pack_.string())->expert_layers()[0].file;
    flip_byte(pack_ / layer, 4096 + 10);   // expert data: only a full verify sees it
    EXPECT_TRUE(verify_pack(pack_.string(), true, 1).ok());
    EXPECT_FALSE(verify_pack(pack_.string(), false, 1).ok());
    fs::resize_file(pack_ / layer, fs::file_size(pack_ / layer) - 1);
    const VerifyReport r = verify_pack(pack_.string(), true, 1);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(std::regex_search(all_failures(r), std::regex("layer-000.bin: size: expected [0-9]+ bytes \\(manifest\\)")))
        << all_failures(r);
}

// Rewrites manifest.json through `edit` and returns Pack::open's error.
std::string open_error_after(const fs::path& pack, const std::function<void(nlohmann::json&)>& edit) {
    const fs::path mpath = pack / "manifest.json";
    std::ifstream in(mpath);
    nlohmann::json m = nlohmann::json::parse(in);
    in.close();
    const nlohmann::json original = m;
    edit(m);
    std::ofstream(mpath) << m.dump();
    std::string error = test::error_of([&] { Pack::open(pack.string()); });
    std::ofstream(mpath) << original.dump();
    return error;
}

TEST_F(PackSafety, DamagedManifestsAreRejectedNamingTheEntry) {
    struct Case {
        const char* what;
        std::function<void(nlohmann::json&)> edit;
        const char* expected;
    };
    const Case cases[] = {
        {"future version", [](auto& m) { m["format_version"] = 2; },
         "pack format version 2 is newer than this moepack reads \\(1\\)"},
        {"not moepack", [](auto& m) { m["format"] = "gguf"; }, "\"format\" is not \"moepack\""},
        {"escaping path", [](auto& m) { m["files"][0]["path"] = "../etc/passwd"; }, "leaves the pack directory"},
        {"absolute path", [](auto& m) { m["files"][0]["path"] = "/etc/passwd"; }, "is not a relative path"},
        {"missing file", [](auto& m) { m["files"][1]["path"] = "experts/layer-009.bin"; }, "missing pack file"},
        {"wrong file size", [](auto& m) { m["files"][1]["bytes"] = 12; }, "size: expected 12 bytes \\(manifest\\)"},
        {"bad checksum text", [](auto& m) { m["files"][0]["xxh3"] = "xyz"; }, "checksum must be 16 hex digits"},
        {"expert offset", [](auto& m) { m["experts"]["layers"][0]["experts"][2]["offset"] = 4096; },
         "layer 0 expert 2: offset/bytes: expected [0-9]+/[0-9]+, got 4096/"},
        {"expert count", [](auto& m) { m["experts"]["layers"][0]["experts"].erase(7); }, "expected 8 experts, got 7"},
        {"tensor bytes", [](auto& m) { m["weights"]["tensors"][0]["bytes"] = 1; }, "tensor '.*': bytes: expected [0-9]+, got 1"},
        {"tensor beyond file", [](auto& m) { m["weights"]["tensors"].back()["offset"] = uint64_t{1} << 40; },
         "beyond the file's [0-9]+ bytes"},
        {"unknown encoding", [](auto& m) { m["weights"]["tensors"][0]["encoding"] = "q4_k"; }, "unknown encoding \"q4_k\""},
        {"negative size", [](auto& m) { m["files"][0]["bytes"] = -5; }, "expected a non-negative integer, got -5"},
        {"bits", [](auto& m) { m["experts"]["bits"] = 3; }, "unsupported bits 3"},
        {"huge shape", [](auto& m) { m["weights"]["tensors"][0]["shape"] = {1 << 30, 1 << 30}; }, "shape out of range"},
    };
    for (const auto& c : cases) {
        const std::string e = open_error_after(pack_, c.edit);
        EXPECT_TRUE(std::regex_search(e, std::regex(c.expected))) << c.what << ": " << e;
    }
    EXPECT_NO_THROW(Pack::open(pack_.string()));
}

TEST_F(PackSafety, ExistingOutputNeedsForce) {
    const std::string e = test::error_of([&] { build_pack(request(test::fixture_model("qwen3_moe"), pack_, 2)); });
    EXPECT_TRUE(std::regex_search(e, std::regex("a pack already exists there with the part being written; pass --force")))
        << e;
    EXPECT_EQ(Pack::open(pack_.string())->expert_layout().bits, 4);   // untouched
    auto r = request(test::fixture_model("qwen3_moe"), pack_, 2);
    r.force = true;
    build_pack(r);
    EXPECT_EQ(Pack::open(pack_.string())->expert_layout().bits, 2);
    EXPECT_FALSE(fs::exists(pack_.string() + ".replaced"));
    // a file that is not a pack is never replaced without force
    std::ofstream(dir_->path() / "file") << "x";
    const std::string e2 = test::error_of([&] { build_pack(request(test::fixture_model("qwen3_moe"), dir_->path() / "file")); });
    EXPECT_TRUE(std::regex_search(e2, std::regex("file: already exists; pass --force"))) << e2;
}

TEST_F(PackSafety, WeightsAndExpertsPartsMergeIntoOnePack) {
    const fs::path out = dir_->path() / "parts";
    auto w = request(test::fixture_model("qwen3_moe"), out);
    w.experts = false;
    build_pack(w);
    EXPECT_FALSE(Pack::open(out.string())->has_experts());
    auto x = request(test::fixture_model("qwen3_moe"), out);
    x.weights = false;
    build_pack(x);
    const auto p = Pack::open(out.string());
    EXPECT_TRUE(p->has_weights());
    EXPECT_TRUE(p->has_experts());
    EXPECT_TRUE(verify_pack(out.string(), false, 2).ok());
    // a part from another checkpoint is refused
    auto other = request(test::fixture_model("olmoe"), dir_->path() / "olmoe_weights");
    other.experts = false;
    build_pack(other);
    auto mixed = request(test::fixture_model("qwen3_moe"), dir_->path() / "olmoe_weights");
    mixed.weights = false;
    const std::string e = test::error_of([&] { build_pack(mixed); });
    EXPECT_TRUE(std::regex_search(e, std::regex("a pack already exists there from another source"))) << e;
}

// Runs `fn` in a child process; returns its exit status (or 128 + signal).
int in_child(const std::function<void()>& fn) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        fn();
        ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<char> bytes_of(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST_F(PackSafety, InterruptedConvertLeavesNoPackAndResumeReusesFinishedPieces) {
    const fs::path out = dir_->path() / "interrupted";
    const int status = in_child([&] {
        auto r = request(test::fixture_model("qwen3_moe"), out);
        r.after_piece = [finished = 0](const std::string&) mutable {
            if (++finished == 2) ::raise(SIGKILL);   // weights and experts are written concurrently
        };
        build_pack(r);
    });
    ASSERT_EQ(status, 128 + SIGKILL);
    EXPECT_FALSE(fs::exists(out));
    EXPECT_TRUE(fs::exists(out.string() + ".partial"));
    const std::string e = test::error_of([&] { Pack::open(out.string()); });
    EXPECT_TRUE(std::regex_search(e, std::regex("not a complete pack .*rerun the conversion with --resume"))) << e;

    // resume with other options is refused; with the same options it reuses two pieces
    auto other = request(test::fixture_model("qwen3_moe"), out, 2);
    other.resume = true;
    EXPECT_TRUE(std::regex_search(test::error_of([&] { build_pack(other); }), std::regex("other sources or options")));
    auto r = request(test::fixture_model("qwen3_moe"), out);
    r.resume = true;
    const BuildResult result = build_pack(r);
    EXPECT_EQ(result.pieces_reused, 2);
    EXPECT_EQ(result.pieces_written, 1);
    EXPECT_TRUE(verify_pack(out.string(), false, 2).ok());
    EXPECT_FALSE(fs::exists(out.string() + ".partial"));
    size_t files = 0;
    for (const auto& entry : fs::recursive_directory_iterator(out)) files += entry.is_regular_file();
    EXPECT_EQ(files, 5u);   // manifest, config, weights, two layers: nothing left over
    for (const char* f : {"weights.bin", "experts/layer-000.bin", "experts/layer-002.bin", "manifest.json"})
        EXPECT_EQ(bytes_of(out / f), bytes_of(pack_ / f)) << f;
}

TEST_F(PackSafety, ResumeRewritesADamagedFinishedPiece) {
    const fs::path out = dir_->path() / "damaged";
    in_child([&] {
        auto r = request(test::fixture_model("qwen3_moe"), out);
        r.after_piece = [finished = 0](const std::string&) mutable {
            if (++finished == 2) ::raise(SIGKILL);   // weights and experts are written concurrently
        };
        build_pack(r);
    });
    flip_byte(out.string() + ".partial/experts/layer-000.bin", 5000);
    auto r = request(test::fixture_model("qwen3_moe"), out);
    r.resume = true;
    const BuildResult result = build_pack(r);
    EXPECT_EQ(result.pieces_reused, 1);
    EXPECT_EQ(result.pieces_written, 2);
    EXPECT_EQ(bytes_of(out / "experts/layer-000.bin"), bytes_of(pack_ / "experts/layer-000.bin"));
}

TEST_F(PackSafety, FullDiskGivesAClearErrorAndNoPack) {
    const fs::path out = dir_->path() / "full";
    const fs::path message = dir_->path() / "message.txt";
    const int status = in_child([&] {
        ::signal(SIGXFSZ, SIG_IGN);
        const rlimit limit{60000, 60000};   // files may not grow beyond 60 kB: a disk that fills up
        ::setrlimit(RLIMIT_FSIZE, &limit);
        try {
            build_pack(request(test::fixture_model("qwen3_moe"), out, 16));
        } catch (const Error& e) {
            std::ofstream(message) << e.what();
            ::_exit(1);
        }
    });
    EXPECT_EQ(status, 1);
    EXPECT_FALSE(fs::exists(out));
    std::ifstream in(message);
    const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    EXPECT_TRUE(std::regex_search(text, std::regex("full\\.partial/.*: write failed after [0-9]+ bytes: File too large")))
        << text;
    // no temporary files are left behind in the staging directory
    for (const auto& entry : fs::recursive_directory_iterator(out.string() + ".partial"))
        EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
}

}  // namespace
}  // namespace moepack
