// weights.bin as views: see dense_weights.hpp.
#include "dense_weights.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "error.hpp"

namespace moepack::engine {

DenseWeights::DenseWeights(const Pack& pack, bool load)
    : pack_(pack), file_(pack.path_of(std::string(pack::kWeightsName))), bytes_(file_.bytes()) {
    if (!pack.has_weights()) fail(pack.directory(), ": the pack has no weights part (weights.bin)");
    const auto header = pack::decode_weights_header(file_.bytes(), file_.path());
    if (header.file_bytes != file_.bytes().size())
        fail(file_.path(), ": size: expected ", header.file_bytes, " bytes (header), got ", file_.bytes().size());
    if (!load || bytes_.empty()) return;
    const size_t size = bytes_.size();
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail(file_.path(), ": cannot allocate ", size, " bytes to load it: ", std::strerror(errno));
    ::madvise(p, size, MADV_HUGEPAGE);   // advice only
    loaded_ = static_cast<std::byte*>(p);
    // pread rather than a copy from the mapping: the mapping's pages stay out of this process
    const int fd = ::open(file_.path().c_str(), O_RDONLY | O_CLOEXEC);
    try {
        if (fd < 0) fail(file_.path(), ": cannot open: ", std::strerror(errno));
        constexpr size_t kChunk = size_t{64} << 20;
        for (size_t off = 0; off < size; off += kChunk)
            pread_exact(fd, {loaded_ + off, std::min(kChunk, size - off)}, off, file_.path());
    } catch (...) {
        if (fd >= 0) ::close(fd);
        ::munmap(loaded_, size);
        throw;
    }
    ::close(fd);
    bytes_ = {loaded_, size};
}

DenseWeights::~DenseWeights() {
    if (loaded_) ::munmap(loaded_, bytes_.size());
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
    const std::byte* base = bytes_.data() + t.piece.offset;
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

const float* DenseWeights::vector(const std::string& name, int64_t size) const {
    const PackTensor& t = find(name);
    if (t.encoding != DenseEncoding::f32 || t.shape.size() != 1 || t.shape[0] != size)
        fail(file_.path(), ": tensor '", name, "': expected f32 [", size, "], got ", to_string(t.encoding), " ",
             nlohmann::json(t.shape).dump());
    return reinterpret_cast<const float*>(bytes_.data() + t.piece.offset);
}

}  // namespace moepack::engine
