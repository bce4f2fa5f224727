// weights.bin as views: see dense_weights.hpp.
#include "dense_weights.hpp"

#include "error.hpp"

namespace moepack::engine {

DenseWeights::DenseWeights(const Pack& pack)
    : pack_(pack), file_(pack.path_of(std::string(pack::kWeightsName))) {
    if (!pack.has_weights()) fail(pack.directory(), ": the pack has no weights part (weights.bin)");
    const auto header = pack::decode_weights_header(file_.bytes(), file_.path());
    if (header.file_bytes != file_.bytes().size())
        fail(file_.path(), ": size: expected ", header.file_bytes, " bytes (header), got ", file_.bytes().size());
}

const PackTensor& DenseWeights::find(const std::string& name) const {
    const PackTensor* t = pack_.find_tensor(name);
    if (!t) fail(file_.path(), ": tensor '", name, "' is missing");
    return *t;
}

WeightMatrix DenseWeights::matrix(const std::string& name, int64_t rows, int64_t cols) const {
    const PackTensor& t = find(name);
    if (t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols)
        fail(file_.path(), ": tensor '", name, "': expected shape [", rows, ", ", cols, "], got ",
             nlohmann::json(t.shape).dump());
    const std::byte* base = file_.bytes().data() + t.piece.offset;
    WeightMatrix w;
    w.rows = rows;
    w.cols = cols;
    w.data = base;
    switch (t.encoding) {
        case DenseEncoding::f32: w.format = WeightFormat::f32; break;
        case DenseEncoding::f16: w.format = WeightFormat::f16; break;
        case DenseEncoding::bf16: w.format = WeightFormat::bf16; break;
        case DenseEncoding::affine: w = WeightMatrix::from_record(base, t.layout()); break;
    }
    return w;
}

const float* DenseWeights::values(const std::string& name, const std::vector<int64_t>& shape) const {
    const PackTensor& t = find(name);
    if (t.encoding != DenseEncoding::f32 || t.shape != shape)
        fail(file_.path(), ": tensor '", name, "': expected f32 ", nlohmann::json(shape).dump(), ", got ",
             to_string(t.encoding), " ", nlohmann::json(t.shape).dump());
    return reinterpret_cast<const float*>(file_.bytes().data() + t.piece.offset);
}

}  // namespace moepack::engine
