// Encoding and writing of weights.bin and the per-layer expert files.
#include "pack_writer.hpp"

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "atomic_file.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "hashing.hpp"
#include "ordered_pool.hpp"
#include "pack_reader.hpp"

namespace moepack {
namespace {

// Rows converted per step when streaming a large tensor (bounds memory to a few MB).
constexpr uint64_t kChunkValues = uint64_t{1} << 20;

// An output file with a running whole-file hash.
class HashedOutput {
public:
    explicit HashedOutput(const std::string& path) : file_(path) {}
    void write(std::span<const std::byte> bytes) {
        file_.write(bytes);
        hash_.update(bytes);
    }
    void pad_to(uint64_t offset) {
        static const std::array<std::byte, 4096> zeros{};
        while (file_.size() < offset) write(std::span(zeros).first(std::min<uint64_t>(zeros.size(), offset - file_.size())));
    }
    uint64_t size() const { return file_.size(); }
    uint64_t digest() const { return hash_.digest(); }
    void commit() { file_.commit(); }
private:
    AtomicFile file_;
    StreamHash hash_;
};

void store_values(const float* values, uint64_t count, DenseEncoding e, bool fold_one_plus, std::vector<std::byte>& out) {
    const size_t width = e == DenseEncoding::f32 ? 4 : 2;
    out.resize(count * width);
    for (uint64_t i = 0; i < count; ++i) {
        const float v = fold_one_plus ? 1.0f + values[i] : values[i];
        if (!std::isfinite(v)) fail("non-finite value ", v, " at element ", i);
        if (e == DenseEncoding::f32) {
            std::memcpy(out.data() + i * 4, &v, 4);
        } else if (e == DenseEncoding::bf16) {
            const uint16_t b = float_to_bf16(v);
            std::memcpy(out.data() + i * 2, &b, 2);
        } else {
            const uint16_t h = float_to_f16(v);
            std::memcpy(out.data() + i * 2, &h, 2);
        }
    }
}

// Source bytes that can go to the pack unchanged (same floating type, nothing to fold).
bool is_verbatim(const DenseTensorPlan& d) {
    if (d.source.encoding != SourceEncoding::floating || d.fold_one_plus || !d.row_runs.empty()) return false;
    const DType t = d.source.weight->dtype;
    return (d.encoding == DenseEncoding::bf16 && t == DType::BF16) || (d.encoding == DenseEncoding::f16 && t == DType::F16) ||
           (d.encoding == DenseEncoding::f32 && t == DType::F32);
}

// Writes one tensor, returns its checksum.
uint64_t write_dense(const DenseTensorPlan& d, QuantMethod method, HashedOutput& out, int threads,
                     const ProgressFn& progress) {
    StreamHash hash;
    auto emit = [&](std::span<const std::byte> bytes) {
        out.write(bytes);
        hash.update(bytes);
    };
    const uint64_t rows = d.rows(), cols = d.source.cols;
    const uint64_t rows_per_chunk = std::max<uint64_t>(1, kChunkValues / cols);
    const uint64_t source_bytes = d.source.file->data(*d.source.weight).size();
    if (is_verbatim(d)) {
        const auto bytes = d.source.file->data(*d.source.weight);
        for (uint64_t at = 0; at < bytes.size(); at += kChunkValues * 4) {
            const auto chunk = bytes.subspan(at, std::min<uint64_t>(kChunkValues * 4, bytes.size() - at));
            emit(chunk);
            d.source.file->drop_pages(chunk);
        }
    } else if (d.encoding == DenseEncoding::affine) {
        const pack::MatrixLayout layout = d.layout();
        std::vector<std::byte> record(layout.bytes());
        if (d.copy_record) {
            d.source.copy_record(layout, record);
        } else {
            const uint64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
            parallel_for(chunks, threads, [&](size_t chunk) {
                const uint64_t begin = chunk * rows_per_chunk, count = std::min(rows_per_chunk, rows - begin);
                std::vector<float> values(count * cols);
                d.read_rows(begin, count, values.data());
                encode_matrix_rows(values.data(), begin, count, layout, method, record);
            });
        }
        d.source.drop_pages();
        emit(record);
    } else {
        std::vector<float> values;
        std::vector<std::byte> encoded;
        for (uint64_t begin = 0; begin < rows; begin += rows_per_chunk) {
            const uint64_t count = std::min(rows_per_chunk, rows - begin);
            values.resize(count * cols);
            d.read_rows(begin, count, values.data());
            store_values(values.data(), values.size(), d.encoding, d.fold_one_plus, encoded);
            emit(encoded);
        }
        d.source.drop_pages();
    }
    if (progress) progress(source_bytes);
    return hash.digest();
}

}  // namespace

nlohmann::json write_weights(const PackPlan& plan, const std::string& dir, int threads, const ProgressFn& progress) {
    const std::string path = (std::filesystem::path(dir) / pack::kWeightsName).string();
    HashedOutput out(path);
    const auto header = pack::encode(pack::WeightsHeader{pack::kFormatVersion, plan.dense.size(), plan.weights_file_bytes});
    out.write(header);
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& d : plan.dense) {
        out.pad_to(d.offset);
        uint64_t checksum;
        try {
            checksum = write_dense(d, plan.options.method, out, threads, progress);
        } catch (const Error& e) {
            fail(d.source.file->path(), ": tensor '", d.sources.front(), "': ", e.what());
        }
        if (out.size() != d.offset + d.bytes)
            fail(path, ": tensor '", d.name, "' took ", out.size() - d.offset, " bytes, expected ", d.bytes);
        nlohmann::json t = {{"name", d.name},          {"role", to_string(d.role)},     {"shape", d.shape},
                            {"encoding", to_string(d.encoding)}, {"offset", d.offset}, {"bytes", d.bytes},
                            {"xxh3", pack::hash_hex(checksum)},  {"sources", d.sources}};
        if (d.layer >= 0) t["layer"] = d.layer;
        if (d.encoding == DenseEncoding::affine) {
            t["bits"] = d.bits;
            t["group_size"] = d.group_size;
        }
        tensors.push_back(std::move(t));
    }
    out.pad_to(plan.weights_file_bytes);
    const uint64_t file_hash = out.digest();
    out.commit();
    return {{"file", pack::kWeightsName}, {"tensors", std::move(tensors)},
            {"file_bytes", plan.weights_file_bytes}, {"file_xxh3", pack::hash_hex(file_hash)}};
}

nlohmann::json write_expert_layer(const PackPlan& plan, size_t layer_index, const ExpertSource& source,
                                  const std::string& dir, int threads, const ProgressFn& progress) {
    const int64_t layer = plan.layers.at(layer_index).layer;
    const std::string name = pack::expert_file_name(layer);
    const std::string path = (std::filesystem::path(dir) / name).string();
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    const pack::ExpertBlockLayout& l = plan.expert;
    HashedOutput out(path);
    const pack::ExpertsHeader h = pack::experts_header(l, layer, plan.num_experts);
    out.write(pack::encode(h));
    nlohmann::json experts = nlohmann::json::array();
    const auto count = static_cast<size_t>(plan.num_experts);
    ordered_parallel<std::vector<std::byte>>(
        count, threads, static_cast<size_t>(std::max(threads, 1)) * 2,
        [&](size_t e) {
            std::vector<std::byte> block(l.stride);
            try {
                source.encode(layer_index, static_cast<int64_t>(e), l, plan.options.method, block);
            } catch (const Error& err) {
                fail("layer ", layer, " expert ", e, ": ", err.what());
            }
            return block;
        },
        [&](size_t e, std::vector<std::byte> block) {
            const uint64_t offset = out.size();
            out.write(block);
            experts.push_back({{"offset", offset}, {"bytes", l.bytes},
                               {"xxh3", pack::hash_hex(hash_bytes(std::span(block).first(l.bytes)))}});
            if (progress) progress(source.source_bytes_per_expert());
            (void)e;
        });
    if (out.size() != h.file_bytes) fail(path, ": wrote ", out.size(), " bytes, expected ", h.file_bytes);
    const uint64_t file_hash = out.digest();
    out.commit();
    return {{"layer", layer}, {"file", name}, {"experts", std::move(experts)},
            {"file_bytes", h.file_bytes}, {"file_xxh3", pack::hash_hex(file_hash)}};
}

void CheckpointExpertSource::encode(size_t layer_index, int64_t expert, const pack::ExpertBlockLayout& l,
                                    QuantMethod method, std::span<std::byte> block) const {
    const ExpertSourcePlan& x = plan_.layers.at(layer_index).experts.at(static_cast<size_t>(expert));
    std::vector<float> values, scratch;
    for (auto [proj, layout, offset] : {std::tuple{&x.gate, &l.gate, l.gate_offset}, std::tuple{&x.up, &l.up, l.up_offset},
                                        std::tuple{&x.down, &l.down, l.down_offset}}) {
        const auto record = block.subspan(offset, layout->bytes());
        try {
            if (!proj->transposed && proj->step == 1 && proj->first == 0 &&
                proj->matrix.is_record_of(layout->bits, layout->group_size)) {
                proj->matrix.copy_record(*layout, record);
            } else {
                values.resize(layout->rows * layout->cols);
                read_projection(*proj, layout->rows, layout->cols, values.data(), scratch);
                encode_matrix(values.data(), *layout, method, record);
            }
        } catch (const Error& e) {
            fail(proj->matrix.label(), ": ", e.what());
        }
    }
    if (l.has_bias) {
        for (auto [bias, offset, n] : {std::tuple{&x.gate_bias, l.gate_bias_offset, l.intermediate},
                                       std::tuple{&x.up_bias, l.up_bias_offset, l.intermediate},
                                       std::tuple{&x.down_bias, l.down_bias_offset, l.hidden}}) {
            if (!*bias) fail("expert biases missing from the source");
            values.resize(n);
            read_bias(**bias, n, values.data());
            std::memcpy(block.data() + offset, values.data(), n * 4);
        }
    }
    // Stacked sources share pages between neighbouring experts; dropping is advice only.
    for (const auto* proj : {&x.gate, &x.up, &x.down}) proj->matrix.drop_pages();
}

void PackExpertSource::encode(size_t layer_index, int64_t expert, const pack::ExpertBlockLayout& l, QuantMethod method,
                              std::span<std::byte> block) const {
    const pack::ExpertBlockLayout& from = pack_.expert_layout();
    std::vector<std::byte> source(from.bytes);
    pack_.read_expert(layer_index, expert, source);
    ExpertValues v;
    decode_expert(source, from, v);
    encode_matrix(v.gate.data(), l.gate, method, block.subspan(l.gate_offset, l.gate.bytes()));
    encode_matrix(v.up.data(), l.up, method, block.subspan(l.up_offset, l.up.bytes()));
    encode_matrix(v.down.data(), l.down, method, block.subspan(l.down_offset, l.down.bytes()));
    if (l.has_bias) {
        std::memcpy(block.data() + l.gate_bias_offset, v.gate_bias.data(), l.intermediate * 4);
        std::memcpy(block.data() + l.up_bias_offset, v.up_bias.data(), l.intermediate * 4);
        std::memcpy(block.data() + l.down_bias_offset, v.down_bias.data(), l.hidden * 4);
    }
}

uint64_t PackExpertSource::source_bytes_per_expert() const { return pack_.expert_layout().bytes; }

}  // namespace moepack
