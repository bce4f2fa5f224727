// Safetensors reader: write-read round trips and a table of corrupt files, each with the
// rejection it must produce.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "error.hpp"
#include "safetensors.hpp"
#include "safetensors_writer.hpp"
#include "test_helpers.hpp"

using namespace moepack;
using moepack::test::ScratchDir;

namespace {

std::vector<std::byte> make_file(const std::string& header, size_t data_bytes, uint64_t declared_len) {
    std::vector<std::byte> f(8 + header.size() + data_bytes, std::byte{0});
    std::memcpy(f.data(), &declared_len, 8);
    std::memcpy(f.data() + 8, header.data(), header.size());
    for (size_t i = 0; i < data_bytes; ++i) f[8 + header.size() + i] = static_cast<std::byte>(i * 7 + 1);
    return f;
}

std::vector<std::byte> make_file(const std::string& header, size_t data_bytes) {
    return make_file(header, data_bytes, header.size());
}

std::string error_of(const std::vector<std::byte>& file) {
    try {
        parse_safetensors(file, "bad.safetensors");
    } catch (const Error& e) {
        return e.what();
    }
    return "(accepted)";
}

struct CorruptCase {
    const char* what;
    std::vector<std::byte> file;
    const char* expected;  // substring of the error
};

std::vector<CorruptCase> corrupt_cases() {
    const std::string ok_a = R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";
    std::vector<CorruptCase> c;
    c.push_back({"shorter than the length prefix", std::vector<std::byte>(5), "shorter than the 8-byte header"});
    c.push_back({"header length over the limit", make_file("{}", 0, 200'000'000), "exceeds the limit"});
    c.push_back({"header past end of file", make_file("{}", 0, 4096), "runs past the end of the file"});
    c.push_back({"truncated data", make_file("{" + ok_a + "}", 8), "past the end of the data buffer"});
    c.push_back({"overlapping tensors",
                 make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
                 "overlaps the previous tensor"});
    c.push_back({"offsets out of bounds", make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[1000,1004]}})", 4),
                 "starts at data offset 1000, expected 0"});
    c.push_back({"gap between tensors",
                 make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})", 12),
                 "gap in the data buffer"});
    c.push_back({"size does not match shape", make_file(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 12),
                 "hold 12 bytes, expected 16 for F32 [2, 2]"});
    c.push_back({"unknown dtype", make_file(R"({"a":{"dtype":"F12","shape":[1],"data_offsets":[0,1]}})", 1),
                 "unknown dtype \"F12\""});
    c.push_back({"duplicate tensor names",
                 make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", 2),
                 "tensor 'a' appears twice"});
    c.push_back({"element count overflows",
                 make_file(R"({"a":{"dtype":"U8","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})", 0),
                 "more than 2^64 elements"});
    c.push_back({"byte size overflows",
                 make_file(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0),
                 "overflows a 64-bit byte size"});
    c.push_back({"dimension beyond int64", make_file(R"({"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]}})", 0),
                 "not a non-negative 64-bit integer"});
    c.push_back({"negative dimension", make_file(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", 0),
                 "not a non-negative 64-bit integer"});
    c.push_back({"fractional dimension", make_file(R"({"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", 1),
                 "not a non-negative 64-bit integer"});
    c.push_back({"invalid UTF-8 in a name", make_file("{\"\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
                 "not valid UTF-8 JSON"});
    c.push_back({"not JSON", make_file("{\"a\": nope}", 0), "not valid UTF-8 JSON"});
    c.push_back({"header is an array", make_file("[1,2,3]", 0), "must be a JSON object, got array"});
    c.push_back({"entry is not an object", make_file(R"({"a":[1]})", 0), "entry must be a JSON object"});
    c.push_back({"missing dtype", make_file(R"({"a":{"shape":[1],"data_offsets":[0,1]}})", 1), "missing \"dtype\""});
    c.push_back({"offsets not a pair", make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1),
                 "\"data_offsets\" must be two non-negative integers"});
    c.push_back({"offsets reversed", make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[2,1]}})", 2),
                 "end before they begin"});
    c.push_back({"trailing bytes", make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 3),
                 "trailing bytes"});
    c.push_back({"metadata value not a string", make_file(R"({"__metadata__":{"format":1}})", 0),
                 "value of \"format\" must be a string"});
    c.push_back({"header too short for JSON", make_file("{", 0), "too short for JSON"});
    return c;
}

std::vector<std::byte> bytes_of(const std::vector<float>& v) {
    std::vector<std::byte> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    return b;
}

}  // namespace

TEST(SafetensorsCorrupt, EveryCaseIsRejectedWithItsReason) {
    for (const auto& c : corrupt_cases()) {
        const std::string err = error_of(c.file);
        EXPECT_NE(err.find(c.expected), std::string::npos)
            << c.what << ": expected an error containing \"" << c.expected << "\", got \"" << err << "\"";
        EXPECT_EQ(err.rfind("bad.safetensors", 0), 0u) << c.what << ": error must name the file: " << err;
    }
}

TEST(SafetensorsCorrupt, TensorErrorsNameTheTensor) {
    const std::string err = error_of(make_file(R"({"w.attn":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
    EXPECT_NE(err.find("tensor 'w.attn'"), std::string::npos) << err;
}

TEST(Safetensors, AcceptsEdgeCases) {
    // empty header, scalar, zero-sized tensors sharing an offset, metadata, padding spaces
    auto h = parse_safetensors(make_file("{}", 0), "x");
    EXPECT_TRUE(h.tensors.empty());
    h = parse_safetensors(
        make_file(R"({"__metadata__":{"format":"pt"},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
                  R"("e1":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},"e2":{"dtype":"BF16","shape":[0],"data_offsets":[4,4]}}   )",
                  4),
        "x");
    ASSERT_EQ(h.tensors.size(), 3u);
    EXPECT_EQ(h.metadata.at("format"), "pt");
    EXPECT_EQ(h.tensors[0].name, "s");
    EXPECT_EQ(h.tensors[0].numel, 1u);
}

TEST(Safetensors, WriteReadRoundTripAlignedAndUnaligned) {
    const ScratchDir scratch("roundtrip");
    const auto& dir = scratch.path();
    const std::vector<float> a{1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -8.5f};
    const std::vector<std::byte> b{std::byte{1}, std::byte{2}, std::byte{3}};
    const auto a_bytes = bytes_of(a);
    for (bool aligned : {true, false}) {
        const auto path = (dir / (aligned ? "a.safetensors" : "u.safetensors")).string();
        write_safetensors(path,
                          {{"layer.weight", DType::F32, {2, 3}, a_bytes}, {"codes", DType::U8, {3}, b}},
                          {{"format", aligned ? "pt" : "mlx"}}, aligned);
        SafetensorsFile f(path);
        ASSERT_EQ(f.tensors().size(), 2u);
        const TensorInfo* t = f.find("layer.weight");
        ASSERT_NE(t, nullptr);
        EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
        if (aligned) {
            EXPECT_EQ(t->file_offset % 8, 0u);
        }
        std::vector<float> back(6);
        to_float32(t->dtype, f.data(*t).data(), 6, back.data());
        EXPECT_EQ(back, a);
        const TensorInfo* c = f.find("codes");
        ASSERT_NE(c, nullptr);
        EXPECT_EQ(std::memcmp(f.data(*c).data(), b.data(), 3), 0);
        EXPECT_EQ(f.metadata().at("format"), aligned ? "pt" : "mlx");
        EXPECT_EQ(f.find("absent"), nullptr);
    }
}

TEST(Safetensors, WriterRejectsDataOfTheWrongSize) {
    const ScratchDir scratch("writer_size");
    const auto& dir = scratch.path();
    const std::vector<std::byte> three(3);
    EXPECT_THROW(write_safetensors((dir / "x.safetensors").string(), {{"t", DType::F32, {1}, three}}), Error);
    EXPECT_FALSE(std::filesystem::exists(dir / "x.safetensors"));
}

TEST(Safetensors, MissingAndEmptyFiles) {
    const ScratchDir scratch("missing");
    const auto& dir = scratch.path();
    try {
        SafetensorsFile f((dir / "none.safetensors").string());
        FAIL() << "opened a missing file";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("none.safetensors: cannot open"), std::string::npos) << e.what();
    }
    try {
        SafetensorsFile f(dir.string());
        FAIL() << "opened a directory";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
    }
    std::ofstream((dir / "empty.safetensors").string()).close();
    try {
        SafetensorsFile f((dir / "empty.safetensors").string());
        FAIL() << "opened an empty file";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("file is 0 bytes"), std::string::npos) << e.what();
    }
}
