// Layout arithmetic and header codecs of pack format version 1.
#include "pack_format.hpp"

#include <bit>
#include <cstdio>
#include <cstring>

#include "error.hpp"

namespace moepack::pack {
namespace {

template <class T>
void put(std::byte* base, size_t offset, T value) {
    static_assert(std::endian::native == std::endian::little, "pack files are little-endian");
    std::memcpy(base + offset, &value, sizeof(T));
}

template <class T>
T get(std::span<const std::byte> bytes, size_t offset) {
    T value;
    std::memcpy(&value, bytes.data() + offset, sizeof(T));
    return value;
}

void check_magic_and_version(std::span<const std::byte> bytes, const std::array<char, 8>& magic,
                             uint64_t header_bytes, const std::string& label, const char* kind) {
    if (bytes.size() < header_bytes)
        fail(label, ": truncated ", kind, " header: expected ", header_bytes, " bytes, got ", bytes.size());
    if (std::memcmp(bytes.data(), magic.data(), magic.size()) != 0)
        fail(label, ": not a moepack ", kind, " file (expected magic '", std::string(magic.data(), magic.size()),
             "')");
    const auto version = get<uint32_t>(bytes, 8);
    if (version > kFormatVersion)
        fail(label, ": ", kind, " file of pack format version ", version, ", newer than this moepack reads (",
             kFormatVersion, "); update moepack");
    if (version == 0) fail(label, ": ", kind, " file has format version 0, expected 1");
    const auto stored_header = get<uint32_t>(bytes, 12);
    if (stored_header != header_bytes)
        fail(label, ": ", kind, " header size: expected ", header_bytes, ", got ", stored_header);
}

}  // namespace

bool valid_expert_bits(int bits) { return bits == 2 || bits == 4 || bits == 8 || bits == 16; }
bool valid_dense_bits(int bits) { return bits == 4 || bits == 8 || bits == 16; }
bool valid_group_size(int group_size) { return group_size == 32 || group_size == 64 || group_size == 128; }

std::string expert_file_name(int64_t layer) {
    char name[32];
    std::snprintf(name, sizeof name, "layer-%03lld.bin", static_cast<long long>(layer));
    return std::string(kExpertsDir) + "/" + name;
}

uint64_t MatrixLayout::row_words() const {
    return bits == 16 ? 0 : (cols * static_cast<uint64_t>(bits) + 31) / 32;
}
uint64_t MatrixLayout::groups() const {
    return bits == 16 ? 0 : (cols + static_cast<uint64_t>(group_size) - 1) / static_cast<uint64_t>(group_size);
}
uint64_t MatrixLayout::codes_bytes() const { return bits == 16 ? rows * cols * 2 : rows * row_words() * 4; }
uint64_t MatrixLayout::scales_offset() const { return align_up(codes_bytes(), kSectionAlignment); }
uint64_t MatrixLayout::scales_bytes() const { return rows * groups() * 2; }
uint64_t MatrixLayout::biases_offset() const {
    return align_up(scales_offset() + scales_bytes(), kSectionAlignment);
}
uint64_t MatrixLayout::bytes() const {
    return bits == 16 ? codes_bytes() : biases_offset() + biases_bytes();
}

MatrixLayout matrix_layout(uint64_t rows, uint64_t cols, int bits, int group_size) {
    if (!valid_expert_bits(bits)) fail("unsupported bit width ", bits, " (expected 2, 4, 8 or 16)");
    if (bits != 16 && !valid_group_size(group_size))
        fail("unsupported group size ", group_size, " (expected 32, 64 or 128)");
    MatrixLayout m;
    m.rows = rows;
    m.cols = cols;
    m.bits = bits;
    m.group_size = bits == 16 ? 0 : group_size;
    return m;
}

ExpertBlockLayout expert_block_layout(uint64_t hidden, uint64_t intermediate, int bits, int group_size,
                                      bool has_bias) {
    ExpertBlockLayout e;
    e.hidden = hidden;
    e.intermediate = intermediate;
    e.bits = bits;
    e.group_size = bits == 16 ? 0 : group_size;
    e.has_bias = has_bias;
    e.gate = matrix_layout(intermediate, hidden, bits, group_size);
    e.up = e.gate;
    e.down = matrix_layout(hidden, intermediate, bits, group_size);
    uint64_t at = 0;
    e.gate_offset = at;
    at = align_up(at + e.gate.bytes(), kSectionAlignment);
    e.up_offset = at;
    at = align_up(at + e.up.bytes(), kSectionAlignment);
    e.down_offset = at;
    at += e.down.bytes();
    if (has_bias) {
        e.gate_bias_offset = align_up(at, kSectionAlignment);
        e.up_bias_offset = align_up(e.gate_bias_offset + intermediate * 4, kSectionAlignment);
        e.down_bias_offset = align_up(e.up_bias_offset + intermediate * 4, kSectionAlignment);
        at = e.down_bias_offset + hidden * 4;
    }
    e.bytes = at;
    e.stride = align_up(at, kExpertAlignment);
    return e;
}

ExpertsHeader experts_header(const ExpertBlockLayout& l, int64_t layer, int64_t num_experts) {
    ExpertsHeader h;
    h.layer = static_cast<uint32_t>(layer);
    h.num_experts = static_cast<uint32_t>(num_experts);
    h.bits = static_cast<uint32_t>(l.bits);
    h.group_size = static_cast<uint32_t>(l.group_size);
    h.flags = l.has_bias ? kExpertFlagBias : 0;
    h.hidden = l.hidden;
    h.intermediate = l.intermediate;
    h.expert_bytes = l.bytes;
    h.expert_stride = l.stride;
    h.file_bytes = kExpertsHeaderBytes + static_cast<uint64_t>(num_experts) * l.stride;
    return h;
}

std::array<std::byte, kExpertsHeaderBytes> encode(const ExpertsHeader& h) {
    std::array<std::byte, kExpertsHeaderBytes> out{};
    std::memcpy(out.data(), kExpertsMagic.data(), kExpertsMagic.size());
    put<uint32_t>(out.data(), 8, h.version);
    put<uint32_t>(out.data(), 12, static_cast<uint32_t>(kExpertsHeaderBytes));
    put<uint32_t>(out.data(), 16, h.layer);
    put<uint32_t>(out.data(), 20, h.num_experts);
    put<uint32_t>(out.data(), 24, h.bits);
    put<uint32_t>(out.data(), 28, h.group_size);
    put<uint32_t>(out.data(), 32, h.flags);
    put<uint32_t>(out.data(), 36, 0);
    put<uint64_t>(out.data(), 40, h.hidden);
    put<uint64_t>(out.data(), 48, h.intermediate);
    put<uint64_t>(out.data(), 56, h.expert_bytes);
    put<uint64_t>(out.data(), 64, h.expert_stride);
    put<uint64_t>(out.data(), 72, h.file_bytes);
    return out;
}

ExpertsHeader decode_experts_header(std::span<const std::byte> bytes, const std::string& label) {
    check_magic_and_version(bytes, kExpertsMagic, kExpertsHeaderBytes, label, "expert");
    ExpertsHeader h;
    h.version = get<uint32_t>(bytes, 8);
    h.layer = get<uint32_t>(bytes, 16);
    h.num_experts = get<uint32_t>(bytes, 20);
    h.bits = get<uint32_t>(bytes, 24);
    h.group_size = get<uint32_t>(bytes, 28);
    h.flags = get<uint32_t>(bytes, 32);
    h.hidden = get<uint64_t>(bytes, 40);
    h.intermediate = get<uint64_t>(bytes, 48);
    h.expert_bytes = get<uint64_t>(bytes, 56);
    h.expert_stride = get<uint64_t>(bytes, 64);
    h.file_bytes = get<uint64_t>(bytes, 72);
    if (!valid_expert_bits(static_cast<int>(h.bits)))
        fail(label, ": expert bits: expected 2, 4, 8 or 16, got ", h.bits);
    if (h.bits != 16 && !valid_group_size(static_cast<int>(h.group_size)))
        fail(label, ": expert group size: expected 32, 64 or 128, got ", h.group_size);
    if ((h.flags & ~kExpertFlagBias) != 0) fail(label, ": unknown expert flags ", h.flags);
    constexpr uint64_t kMaxDim = uint64_t{1} << 20;  // keeps every size product below 2^64
    if (h.hidden == 0 || h.intermediate == 0 || h.hidden > kMaxDim || h.intermediate > kMaxDim)
        fail(label, ": expert shape out of range: hidden ", h.hidden, ", intermediate ", h.intermediate);
    for (size_t i = 80; i < kExpertsHeaderBytes; ++i)
        if (bytes[i] != std::byte{0}) fail(label, ": expert header: reserved byte ", i, " is not zero");
    if (get<uint32_t>(bytes, 36) != 0) fail(label, ": expert header: reserved byte 36 is not zero");
    const auto layout = expert_block_layout(h.hidden, h.intermediate, static_cast<int>(h.bits),
                                            static_cast<int>(h.group_size), (h.flags & kExpertFlagBias) != 0);
    if (h.expert_bytes != layout.bytes || h.expert_stride != layout.stride)
        fail(label, ": expert block size: expected ", layout.bytes, " bytes (stride ", layout.stride, "), got ",
             h.expert_bytes, " (stride ", h.expert_stride, ")");
    if (h.num_experts == 0 || h.num_experts > (uint64_t{1} << 16))
        fail(label, ": expert count out of range: ", h.num_experts);
    if (h.file_bytes != kExpertsHeaderBytes + h.num_experts * h.expert_stride)
        fail(label, ": expert file size field: expected ", kExpertsHeaderBytes + h.num_experts * h.expert_stride,
             ", got ", h.file_bytes);
    return h;
}

std::array<std::byte, kWeightsHeaderBytes> encode(const WeightsHeader& h) {
    std::array<std::byte, kWeightsHeaderBytes> out{};
    std::memcpy(out.data(), kWeightsMagic.data(), kWeightsMagic.size());
    put<uint32_t>(out.data(), 8, h.version);
    put<uint32_t>(out.data(), 12, static_cast<uint32_t>(kWeightsHeaderBytes));
    put<uint64_t>(out.data(), 16, h.tensor_count);
    put<uint64_t>(out.data(), 24, h.file_bytes);
    return out;
}

WeightsHeader decode_weights_header(std::span<const std::byte> bytes, const std::string& label) {
    check_magic_and_version(bytes, kWeightsMagic, kWeightsHeaderBytes, label, "weights");
    WeightsHeader h;
    h.version = get<uint32_t>(bytes, 8);
    h.tensor_count = get<uint64_t>(bytes, 16);
    h.file_bytes = get<uint64_t>(bytes, 24);
    for (size_t i = 32; i < kWeightsHeaderBytes; ++i)
        if (bytes[i] != std::byte{0}) fail(label, ": weights header: reserved byte ", i, " is not zero");
    return h;
}

std::string hash_hex(uint64_t hash) {
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
    return text;
}

uint64_t parse_hash_hex(std::string_view text, const std::string& what) {
    if (text.size() != 16) fail(what, ": checksum must be 16 hex digits, got '", text, "'");
    uint64_t v = 0;
    for (char c : text) {
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else fail(what, ": checksum must be 16 lowercase hex digits, got '", text, "'");
        v = v << 4 | static_cast<uint64_t>(d);
    }
    return v;
}

}  // namespace moepack::pack
