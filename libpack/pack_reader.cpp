// Manifest parsing and validation, and reads of single experts and tensors.
#include "pack_reader.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "checked_math.hpp"
#include "checkpoint.hpp"
#include "dtype.hpp"
#include "error.hpp"

namespace moepack {
namespace {

using nlohmann::json;

// Checked access to manifest fields; errors name manifest.json and the JSON path.
class Field {
public:
    Field(const json& j, std::string where) : j_(j), where_(std::move(where)) {}
    const json& at(const char* key) const {
        if (!j_.is_object() || !j_.contains(key)) fail(where_, ": missing \"", key, "\"");
        return j_[key];
    }
    uint64_t u64(const char* key) const {
        const json& v = at(key);
        if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
            fail(where_, ".", key, ": expected a non-negative integer, got ", v.dump());
        return v.get<uint64_t>();
    }
    int64_t i64(const char* key) const {
        const json& v = at(key);
        if (!v.is_number_integer()) fail(where_, ".", key, ": expected an integer, got ", v.dump());
        return v.get<int64_t>();
    }
    std::string str(const char* key) const {
        const json& v = at(key);
        if (!v.is_string()) fail(where_, ".", key, ": expected a string, got ", v.dump());
        return v.get<std::string>();
    }
    uint64_t hash(const char* key) const { return pack::parse_hash_hex(str(key), where_ + "." + key); }
    const json& array(const char* key) const {
        const json& v = at(key);
        if (!v.is_array()) fail(where_, ".", key, ": expected an array");
        return v;
    }
    std::string sub(const char* key) const { return where_ + "." + key; }
    std::string item(const char* key, size_t i) const { return concat(where_, ".", key, "[", i, "]"); }

private:
    const json& j_;
    std::string where_;
};

// Relative paths inside the pack only: no absolute paths, no "..", no empty components.
void check_relative_path(const std::string& p, const std::string& where) {
    if (p.empty() || p.front() == '/' || p.find('\\') != std::string::npos)
        fail(where, ": path '", p, "' is not a relative path inside the pack");
    for (const auto& part : std::filesystem::path(p))
        if (part == ".." || part == "." || part.empty()) fail(where, ": path '", p, "' leaves the pack directory");
}

DenseEncoding parse_encoding(const std::string& s, const std::string& where) {
    for (auto e : {DenseEncoding::f32, DenseEncoding::f16, DenseEncoding::bf16, DenseEncoding::affine})
        if (s == to_string(e)) return e;
    fail(where, ": unknown encoding \"", s, "\" (expected f32, f16, bf16 or affine)");
}

uint64_t encoded_bytes(const PackTensor& t, const std::string& where) {
    auto numel = checked_numel(t.shape);
    if (!numel || *numel == 0 || *numel > (uint64_t{1} << 40)) fail(where, ": shape out of range");
    switch (t.encoding) {
        case DenseEncoding::f32: return *numel * 4;
        case DenseEncoding::f16: case DenseEncoding::bf16: return *numel * 2;
        case DenseEncoding::affine:
            if (t.shape.size() != 2) fail(where, ": affine tensors must be 2-D");
            if (!pack::valid_expert_bits(t.bits) || t.bits == 16 || !pack::valid_group_size(t.group_size))
                fail(where, ": affine bits ", t.bits, " / group size ", t.group_size, " not supported");
            return t.layout().bytes();
    }
    return 0;
}

}  // namespace

uint64_t PackTensor::rows() const { return shape.size() == 2 ? static_cast<uint64_t>(shape[0]) : 1; }
uint64_t PackTensor::cols() const {
    if (shape.size() == 2) return static_cast<uint64_t>(shape[1]);
    return checked_numel(shape).value_or(0);
}
pack::MatrixLayout PackTensor::layout() const {
    return pack::matrix_layout(rows(), cols(), encoding == DenseEncoding::affine ? bits : 16, group_size);
}

void pread_exact(int fd, std::span<std::byte> out, uint64_t offset, const std::string& label) {
    size_t done = 0;
    while (done < out.size()) {
        const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail(label, ": read error at offset ", offset + done, ": ", std::strerror(errno));
        if (n == 0) fail(label, ": unexpected end of file at offset ", offset + done);
        done += static_cast<size_t>(n);
    }
}

std::unique_ptr<Pack> Pack::open(const std::string& directory) {
    std::unique_ptr<Pack> p(new Pack());
    p->directory_ = directory;
    const std::string mpath = p->path_of(std::string(pack::kManifestName));
    if (!std::filesystem::exists(mpath)) {
        if (std::filesystem::exists(directory + std::string(pack::kStagingSuffix)))
            fail(directory, ": not a complete pack (an unfinished conversion is in ", directory,
                 pack::kStagingSuffix, "; rerun the conversion with --resume)");
        fail(mpath, ": missing; ", directory, " is not a moepack pack");
    }
    p->manifest_ = read_json_file(mpath);
    const json& m = p->manifest_;
    Field root(m, std::string(pack::kManifestName));
    if (root.str("format") != "moepack") fail(mpath, ": \"format\" is not \"moepack\"");
    const uint64_t version = root.u64("format_version");
    if (version > pack::kFormatVersion)
        fail(mpath, ": pack format version ", version, " is newer than this moepack reads (", pack::kFormatVersion,
             "); update moepack");
    if (version == 0) fail(mpath, ": pack format version 0, expected 1");

    std::set<std::string> listed;
    const json& files = root.array("files");
    for (size_t i = 0; i < files.size(); ++i) {
        Field f(files[i], root.item("files", i));
        PackFile pf{f.str("path"), f.u64("bytes"), f.hash("xxh3")};
        check_relative_path(pf.path, root.item("files", i));
        if (!listed.insert(pf.path).second) fail(mpath, ": file '", pf.path, "' listed twice");
        const std::string full = p->path_of(pf.path);
        std::error_code ec;
        const auto size = std::filesystem::file_size(full, ec);
        if (ec) fail(full, ": missing pack file (", ec.message(), ")");
        if (size != pf.bytes) fail(full, ": size: expected ", pf.bytes, " bytes (manifest), got ", size);
        p->files_.push_back(pf);
    }
    auto size_of = [&](const std::string& path, const std::string& where) -> uint64_t {
        for (const auto& f : p->files_)
            if (f.path == path) return f.bytes;
        fail(where, ": file '", path, "' is not in the manifest's file list");
    };
    auto check_piece = [&](const PackPiece& piece, uint64_t file_bytes, const std::string& where) {
        auto end = checked_add(piece.offset, piece.bytes);
        if (!end || *end > file_bytes)
            fail(where, ": bytes [", piece.offset, ", +", piece.bytes, ") beyond the file's ", file_bytes, " bytes");
    };

    if (m.contains("weights")) {
        p->has_weights_ = true;
        Field w(m["weights"], root.sub("weights"));
        const std::string file = w.str("file");
        if (file != pack::kWeightsName) fail(w.sub("file"), ": expected \"", pack::kWeightsName, "\", got \"", file, "\"");
        const uint64_t file_bytes = size_of(file, w.sub("file"));
        const json& tensors = w.array("tensors");
        std::set<std::string> names;
        uint64_t previous_end = pack::kWeightsHeaderBytes;
        for (size_t i = 0; i < tensors.size(); ++i) {
            Field t(tensors[i], w.item("tensors", i));
            PackTensor pt;
            pt.name = t.str("name");
            const std::string where = concat(mpath, ": tensor '", pt.name, "'");
            if (!names.insert(pt.name).second) fail(where, ": listed twice");
            pt.role = t.str("role");
            pt.layer = tensors[i].contains("layer") ? t.i64("layer") : -1;
            const json& shape = t.array("shape");
            if (shape.empty() || shape.size() > 4) fail(where, ": shape must have 1 to 4 dimensions");
            for (const auto& d : shape) {
                if (!d.is_number_integer() || d.get<int64_t>() <= 0) fail(where, ": shape entries must be positive");
                pt.shape.push_back(d.get<int64_t>());
            }
            pt.encoding = parse_encoding(t.str("encoding"), where);
            if (pt.encoding == DenseEncoding::affine) {
                pt.bits = static_cast<int>(std::min<uint64_t>(t.u64("bits"), 64));
                pt.group_size = static_cast<int>(std::min<uint64_t>(t.u64("group_size"), 1 << 20));
            }
            pt.piece = {t.u64("offset"), t.u64("bytes"), t.hash("xxh3")};
            const uint64_t expected = encoded_bytes(pt, where);
            if (pt.piece.bytes != expected) fail(where, ": bytes: expected ", expected, ", got ", pt.piece.bytes);
            if (pt.piece.offset % pack::kTensorAlignment != 0 || pt.piece.offset < previous_end)
                fail(where, ": offset ", pt.piece.offset, " is not 256-aligned after the previous tensor");
            check_piece(pt.piece, file_bytes, where);
            previous_end = pt.piece.offset + pt.piece.bytes;
            p->tensors_.push_back(std::move(pt));
        }
    }

    if (m.contains("experts")) {
        p->has_experts_ = true;
        Field x(m["experts"], root.sub("experts"));
        const uint64_t bits = x.u64("bits"), group = x.u64("group_size");
        const uint64_t hidden = x.u64("hidden"), inter = x.u64("intermediate");
        const uint64_t num = x.u64("num_experts");
        if (!pack::valid_expert_bits(static_cast<int>(std::min<uint64_t>(bits, 64))) ||
            (bits != 16 && !pack::valid_group_size(static_cast<int>(std::min<uint64_t>(group, 1024)))))
            fail(x.sub("bits"), ": unsupported bits ", bits, " / group size ", group);
        if (hidden == 0 || inter == 0 || hidden > (1u << 20) || inter > (1u << 20) || num == 0 || num > (1u << 16))
            fail(root.sub("experts"), ": hidden, intermediate or num_experts out of range");
        const json& has_bias = x.at("has_bias");
        if (!has_bias.is_boolean()) fail(x.sub("has_bias"), ": expected true or false");
        p->expert_ = pack::expert_block_layout(hidden, inter, static_cast<int>(bits), static_cast<int>(group),
                                               has_bias.get<bool>());
        p->num_experts_ = static_cast<int64_t>(num);
        if (x.u64("expert_bytes") != p->expert_.bytes || x.u64("expert_stride") != p->expert_.stride)
            fail(root.sub("experts"), ": expert_bytes/expert_stride: expected ", p->expert_.bytes, "/",
                 p->expert_.stride, ", got ", x.u64("expert_bytes"), "/", x.u64("expert_stride"));
        const json& layers = x.array("layers");
        for (size_t i = 0; i < layers.size(); ++i) {
            Field l(layers[i], x.item("layers", i));
            PackExpertLayer pl;
            pl.layer = l.i64("layer");
            pl.file = l.str("file");
            if (pl.file != pack::expert_file_name(pl.layer))
                fail(x.item("layers", i), ": file: expected \"", pack::expert_file_name(pl.layer), "\", got \"", pl.file, "\"");
            const uint64_t file_bytes = size_of(pl.file, x.item("layers", i));
            const uint64_t expected_bytes = pack::kExpertsHeaderBytes + num * p->expert_.stride;
            if (file_bytes != expected_bytes)
                fail(p->path_of(pl.file), ": size: expected ", expected_bytes, " bytes for ", num, " experts, got ", file_bytes);
            const json& experts = l.array("experts");
            if (experts.size() != num)
                fail(x.item("layers", i), ": expected ", num, " experts, got ", experts.size());
            for (size_t e = 0; e < experts.size(); ++e) {
                Field ef(experts[e], l.item("experts", e));
                PackPiece piece{ef.u64("offset"), ef.u64("bytes"), ef.hash("xxh3")};
                if (piece.offset != pack::kExpertsHeaderBytes + e * p->expert_.stride || piece.bytes != p->expert_.bytes)
                    fail(mpath, ": layer ", pl.layer, " expert ", e, ": offset/bytes: expected ",
                         pack::kExpertsHeaderBytes + e * p->expert_.stride, "/", p->expert_.bytes, ", got ",
                         piece.offset, "/", piece.bytes);
                pl.experts.push_back(piece);
            }
            p->layers_.push_back(std::move(pl));
        }
    }

    if (m.contains("tokenizer")) {
        Field t(m["tokenizer"], root.sub("tokenizer"));
        p->tokenizer_file_ = t.str("tokenizer");
        p->vocab_file_ = t.str("vocab");
        size_of(p->tokenizer_file_, t.sub("tokenizer"));
        size_of(p->vocab_file_, t.sub("vocab"));
    }

    auto open_file = [&](const std::string& relative) {
        const std::string full = p->path_of(relative);
        const int fd = ::open(full.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail(full, ": cannot open: ", std::strerror(errno));
        return fd;
    };
    if (p->has_weights_) p->weights_fd_ = open_file(std::string(pack::kWeightsName));
    for (auto& l : p->layers_) l.fd = open_file(l.file);
    return p;
}

Pack::~Pack() {
    if (weights_fd_ >= 0) ::close(weights_fd_);
    for (const auto& l : layers_)
        if (l.fd >= 0) ::close(l.fd);
}

std::string Pack::path_of(const std::string& relative) const {
    return (std::filesystem::path(directory_) / relative).string();
}

const PackTensor* Pack::find_tensor(const std::string& name) const {
    for (const auto& t : tensors_)
        if (t.name == name) return &t;
    return nullptr;
}

void Pack::read_expert(size_t layer_index, int64_t expert, std::span<std::byte> block) const {
    if (layer_index >= layers_.size() || expert < 0 || expert >= num_experts_)
        fail(directory_, ": no expert ", expert, " in expert layer index ", layer_index);
    const auto& layer = layers_[layer_index];
    const PackPiece& piece = layer.experts[static_cast<size_t>(expert)];
    if (block.size() < piece.bytes) fail("expert buffer: expected ", piece.bytes, " bytes, got ", block.size());
    pread_exact(layer.fd, block.first(piece.bytes), piece.offset,
                concat(path_of(layer.file), " (layer ", layer.layer, " expert ", expert, ")"));
}

void Pack::read_tensor(const PackTensor& t, std::span<std::byte> out) const {
    if (out.size() < t.piece.bytes) fail("tensor buffer: expected ", t.piece.bytes, " bytes, got ", out.size());
    pread_exact(weights_fd_, out.first(t.piece.bytes), t.piece.offset,
                concat(path_of(std::string(pack::kWeightsName)), " (tensor '", t.name, "')"));
}

void decode_expert(std::span<const std::byte> block, const pack::ExpertBlockLayout& l, ExpertValues& out) {
    if (block.size() < l.bytes) fail("expert block: expected ", l.bytes, " bytes, got ", block.size());
    out.gate.resize(l.gate.rows * l.gate.cols);
    out.up.resize(l.up.rows * l.up.cols);
    out.down.resize(l.down.rows * l.down.cols);
    decode_matrix(block.subspan(l.gate_offset), l.gate, out.gate.data());
    decode_matrix(block.subspan(l.up_offset), l.up, out.up.data());
    decode_matrix(block.subspan(l.down_offset), l.down, out.down.data());
    if (!l.has_bias) return;
    for (auto [vec, offset, n] : {std::tuple{&out.gate_bias, l.gate_bias_offset, l.intermediate},
                                  std::tuple{&out.up_bias, l.up_bias_offset, l.intermediate},
                                  std::tuple{&out.down_bias, l.down_bias_offset, l.hidden}}) {
        vec->resize(n);
        to_float32(DType::F32, block.data() + offset, n, vec->data());
    }
}

}  // namespace moepack
