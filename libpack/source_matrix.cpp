// Decoding of every source weight encoding into float32 rows (see source_matrix.hpp).
#include "source_matrix.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include "dtype.hpp"
#include "error.hpp"
#include "quantize.hpp"

namespace moepack {
namespace {

constexpr float kFp4Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
constexpr uint64_t kMxfp4Block = 32;

// Checks that `t` is [tail...], or [E, tail...] with E > slice when stacked.
void expect_shape(const SourceMatrix& m, const TensorInfo* t, std::vector<int64_t> tail, const char* what) {
    if (!t) fail(m.label(), ": missing ", what, " tensor");
    const std::string expected = shape_string(tail);
    if (m.stacked) {
        if (t->shape.empty() || t->shape[0] <= static_cast<int64_t>(m.slice))
            fail(m.file->path(), ": tensor '", t->name, "': expected ", what, " shape [E, ", expected.substr(1),
                 " with E > ", m.slice, ", got ", shape_string(t->shape));
        tail.insert(tail.begin(), t->shape[0]);
    }
    if (t->shape != tail)
        fail(m.file->path(), ": tensor '", t->name, "': expected ", what, " shape ",
             m.stacked ? "[E, " + expected.substr(1) : expected, ", got ", shape_string(t->shape));
}

// Pointer to element `index` of this matrix's slice of `t` (`per_slice` elements each).
const std::byte* element(const SourceMatrix& m, const TensorInfo& t, uint64_t per_slice, uint64_t index) {
    const uint64_t first = m.stacked ? m.slice * per_slice : 0;
    return m.file->data(t).data() + (first + index) * dtype_size(t.dtype);
}

void read_floats(const SourceMatrix& m, const TensorInfo& t, uint64_t per_slice, uint64_t index, uint64_t count,
                 float* out) {
    if (!dtype_is_float(t.dtype))
        fail(m.file->path(), ": tensor '", t.name, "': expected a floating dtype, got ", dtype_name(t.dtype));
    to_float32(t.dtype, element(m, t, per_slice, index), count, out);
}

}  // namespace

std::string SourceMatrix::label() const {
    const std::string name = weight ? weight->name : std::string("?");
    return stacked ? concat(name, "[", slice, "]") : name;
}

void SourceMatrix::validate() const {
    const auto r = static_cast<int64_t>(rows), c = static_cast<int64_t>(cols);
    switch (encoding) {
        case SourceEncoding::floating:
            if (!stacked && weight->shape.size() != 2) {   // vectors and N-d tensors: read flat
                if (weight->numel != rows * cols)
                    fail(file->path(), ": tensor '", weight->name, "': expected ", rows * cols, " elements, got ",
                         weight->numel);
            } else {
                expect_shape(*this, weight, {r, c}, "weight");
            }
            if (!dtype_is_float(weight->dtype))
                fail(file->path(), ": tensor '", weight->name, "': expected a floating dtype, got ",
                     dtype_name(weight->dtype));
            break;
        case SourceEncoding::fp8_block: {
            expect_shape(*this, weight, {r, c}, "fp8 weight");
            if (block_rows <= 0 || block_cols <= 0) fail(label(), ": fp8 block size not set in config.json");
            expect_shape(*this, scales, {(r + block_rows - 1) / block_rows, (c + block_cols - 1) / block_cols},
                         "weight_scale_inv");
            break;
        }
        case SourceEncoding::mlx_affine: {
            if (bits != 2 && bits != 4 && bits != 8)
                fail(label(), ": MLX ", bits, "-bit weights cannot be converted (2, 4 and 8 bits can)");
            const pack::MatrixLayout l = pack::matrix_layout(rows, cols, bits, group_size);
            if (cols % static_cast<uint64_t>(group_size) != 0 || (cols * static_cast<uint64_t>(bits)) % 32 != 0)
                fail(label(), ": MLX columns ", cols, " not a multiple of the group size ", group_size);
            expect_shape(*this, weight, {r, static_cast<int64_t>(l.row_words())}, "MLX weight");
            if (weight->dtype != DType::U32)
                fail(file->path(), ": tensor '", weight->name, "': expected dtype U32, got ", dtype_name(weight->dtype));
            expect_shape(*this, scales, {r, static_cast<int64_t>(l.groups())}, "MLX scales");
            expect_shape(*this, biases, {r, static_cast<int64_t>(l.groups())}, "MLX biases");
            break;
        }
        case SourceEncoding::mxfp4:
            if (cols % kMxfp4Block != 0) fail(label(), ": MXFP4 columns ", cols, " not a multiple of 32");
            expect_shape(*this, weight, {r, c / 32, 16}, "MXFP4 blocks");
            expect_shape(*this, scales, {r, c / 32}, "MXFP4 scales");
            if (weight->dtype != DType::U8 || scales->dtype != DType::U8)
                fail(label(), ": MXFP4 blocks and scales must be U8");
            break;
    }
}

void SourceMatrix::read_rows(uint64_t row_begin, uint64_t count, float* out) const {
    switch (encoding) {
        case SourceEncoding::floating:
            read_floats(*this, *weight, rows * cols, row_begin * cols, count * cols, out);
            return;
        case SourceEncoding::fp8_block: {
            const uint64_t br = static_cast<uint64_t>(block_rows), bc = static_cast<uint64_t>(block_cols);
            const uint64_t scale_cols = (cols + bc - 1) / bc, scale_rows = (rows + br - 1) / br;
            std::vector<float> scale_row(scale_cols);
            for (uint64_t r = row_begin; r < row_begin + count; ++r) {
                float* dst = out + (r - row_begin) * cols;
                read_floats(*this, *weight, rows * cols, r * cols, cols, dst);
                read_floats(*this, *scales, scale_rows * scale_cols, r / br * scale_cols, scale_cols,
                            scale_row.data());
                for (uint64_t c = 0; c < cols; ++c) dst[c] *= scale_row[c / bc];
            }
            return;
        }
        case SourceEncoding::mlx_affine: {
            if (bits != 2 && bits != 4 && bits != 8)
                fail(label(), ": MLX ", bits, "-bit weights cannot be converted (2, 4 and 8 bits can)");
            const pack::MatrixLayout l = pack::matrix_layout(rows, cols, bits, group_size);
            std::vector<uint32_t> codes(l.row_words());
            std::vector<float> s(l.groups()), b(l.groups());
            for (uint64_t r = row_begin; r < row_begin + count; ++r) {
                std::memcpy(codes.data(), element(*this, *weight, rows * l.row_words(), r * l.row_words()),
                            l.row_words() * 4);   // MLX files need not align their data
                read_floats(*this, *scales, rows * l.groups(), r * l.groups(), l.groups(), s.data());
                read_floats(*this, *biases, rows * l.groups(), r * l.groups(), l.groups(), b.data());
                dequantize_row(codes.data(), s.data(), b.data(), cols, bits, group_size, out + (r - row_begin) * cols);
            }
            return;
        }
        case SourceEncoding::mxfp4: {
            const uint64_t blocks = cols / kMxfp4Block;
            for (uint64_t r = row_begin; r < row_begin + count; ++r) {
                const auto* codes = reinterpret_cast<const uint8_t*>(element(*this, *weight, rows * cols / 2, r * cols / 2));
                const auto* exps = reinterpret_cast<const uint8_t*>(element(*this, *scales, rows * blocks, r * blocks));
                float* dst = out + (r - row_begin) * cols;
                for (uint64_t blk = 0; blk < blocks; ++blk) {
                    const float scale = e8m0_to_float(exps[blk]);
                    for (uint64_t i = 0; i < kMxfp4Block / 2; ++i) {
                        const uint8_t byte = codes[blk * kMxfp4Block / 2 + i];
                        dst[blk * kMxfp4Block + 2 * i] = kFp4Values[byte & 15] * scale;
                        dst[blk * kMxfp4Block + 2 * i + 1] = kFp4Values[byte >> 4] * scale;
                    }
                }
            }
            return;
        }
    }
}

bool SourceMatrix::is_record_of(int target_bits, int target_group) const {
    return encoding == SourceEncoding::mlx_affine && bits == target_bits && group_size == target_group;
}

void SourceMatrix::copy_record(const pack::MatrixLayout& l, std::span<std::byte> record) const {
    if (!is_record_of(l.bits, l.group_size) || l.rows != rows || l.cols != cols)
        fail(label(), ": cannot copy an MLX record into a ", l.bits, "-bit group-", l.group_size, " record");
    std::memcpy(record.data() + l.codes_offset(), element(*this, *weight, rows * l.row_words(), 0), l.codes_bytes());
    std::vector<float> values(rows * l.groups());
    for (auto [tensor, offset] : {std::pair{scales, l.scales_offset()}, std::pair{biases, l.biases_offset()}}) {
        read_floats(*this, *tensor, values.size(), 0, values.size(), values.data());
        auto* out = reinterpret_cast<uint16_t*>(record.data() + offset);
        for (size_t i = 0; i < values.size(); ++i) out[i] = float_to_bf16(values[i]);
    }
}

void SourceMatrix::drop_pages() const {
    for (const TensorInfo* t : {weight, scales, biases}) {
        if (!t) continue;
        const auto data = file->data(*t);
        const uint64_t slices = stacked ? static_cast<uint64_t>(t->shape[0]) : 1;
        const uint64_t per_slice = data.size() / slices;
        file->drop_pages(data.subspan(slices > 1 ? slice * per_slice : 0, per_slice));
    }
}

}  // namespace moepack
