// Matrix products against pack weights, decoding the weights on the fly: no dequantised
// copy of a matrix is ever made. A weight matrix W is [rows, cols] in one of the pack's
// encodings (f32, f16, bf16, or the affine "matrix record" of formats/pack.md with 2, 4
// or 8-bit codes); an input X is [n, cols] float32; the product is Y[t, r] = W[r, :] . X[t, :].
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "pack_format.hpp"

namespace moepack::engine {

class ThreadPool;

enum class WeightFormat { f32, f16, bf16, affine };

// A view of one weight matrix in memory (mmapped weights.bin or an expert cache slot).
struct WeightMatrix {
    WeightFormat format = WeightFormat::bf16;
    int64_t rows = 0, cols = 0;
    int bits = 16, group_size = 0;        // affine only
    const std::byte* data = nullptr;      // values, or codes: rows x row_words uint32
    const uint16_t* scales = nullptr;     // affine: bf16 [rows, groups]
    const uint16_t* biases = nullptr;     // affine: bf16 [rows, groups]

    // An affine record (or bf16 when layout.bits == 16) starting at `record`.
    static WeightMatrix from_record(const std::byte* record, const pack::MatrixLayout& layout);
    uint64_t bytes() const;               // bytes the product reads from memory
};

// Storage on 64-byte boundaries: the AVX-512 kernels' 64-byte loads of prepared inputs then
// never straddle two cache lines.
template <typename T>
struct CacheLineAllocator {
    using value_type = T;
    CacheLineAllocator() = default;
    template <typename U>
    CacheLineAllocator(const CacheLineAllocator<U>&) {}
    T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
    void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
    template <typename U>
    bool operator==(const CacheLineAllocator<U>&) const { return true; }
};

// The input of a product, prepared once and shared by all the row ranges that use it:
// per-group sums of X (for the affine bias term) and, for the integer kernels, X quantised
// to int8 per block. prepare() is idempotent for a given weight group size.
class MatmulInput {
public:
    MatmulInput() = default;
    MatmulInput(const float* input, int64_t rows, int64_t columns) { reset(input, rows, columns); }
    void reset(const float* input, int64_t rows, int64_t columns);
    void prepare(const WeightMatrix& w);   // call before products against w

    const float* x = nullptr;
    int64_t n = 0, cols = 0;
    // Filled by prepare() for affine weights of group size `group` when n is small enough for
    // the decode kernels (kPrefillMinInputs).
    int group = 0;
    int64_t groups = 0;
    std::vector<float> group_sums;         // [n, groups]
    // Also for affine weights, when n is small enough for the decode kernels and `group` is a
    // multiple of 32: X quantised per group, x ~= x_scales[t, g] * xq[t, g * group + i], with
    // xq in [-127, 127] (round to nearest of x * 127 / max|x| over the group); the last group
    // is padded with zeros to `group` values.
    std::vector<int8_t> xq;                // [n, groups * group]
    std::vector<float> x_scales;           // [n, groups]
    // For the AVX-512 decode kernels (power-of-two groups), the same int8 values laid out as
    // those kernels unpack w.bits-bit codes: per input, spans of 64 bytes of codes (64 * 8 /
    // bits codes); within a span, plane k (bit field k of each code byte) holds 64 values:
    // xq_planes[span * S + k * 64 + j] = xq of column span * S + j * (8 / bits) + k, S the
    // span's codes; zero past the row. Indexed by plane_index(bits).
    std::vector<int8_t, CacheLineAllocator<int8_t>> xq_planes[3];   // [n, spans * S]
    static int plane_index(int bits) { return bits == 2 ? 0 : bits == 4 ? 1 : 2; }
    // For the AMX kernels (affine weights, from kPrefillMinInputs inputs on, when they are the
    // kernels in use): X rounded to bf16 in the layout of their B tiles: blocks of 16 inputs,
    // each [cols / 2][16 inputs][2] (pairs of consecutive columns per input), cols rounded up
    // to 32 and missing inputs padded with zeros.
    std::vector<uint16_t> x_tiles;
    // For the AMX-INT8 kernels (detail::amx_int8_inputs): the int8 values as B tiles, per
    // block of 16 inputs and per 64 columns 16 rows of [16 inputs][4 values], the 64 values in
    // the bit-plane order of the weights (value j * 8 / bits + k of the 64 at position
    // k * 64 * bits / 8 + j); indexed by plane_index(bits). With them, per block the inputs'
    // scales and group sums transposed: [groups][16].
    std::vector<int8_t, CacheLineAllocator<int8_t>> x_int8_tiles[3];
    std::vector<float> x_scales_by_group, group_sums_by_group;
};

// Which kernels the products use. The default is the best the CPU supports; set_matmul_isa()
// picks a lower one (tests compare them, benchmarks measure them); a request above what the
// CPU supports is lowered to that. Process-wide; not for use while products run.
// avx2: AVX2+FMA+F16C; avx512: F/BW/VL/VNNI; amx: avx512 plus AMX-BF16 tiles for the
// products of affine weights with several inputs (bf16 inputs: not float32-exact).
enum class MatmulIsa { portable = 0, avx2 = 1, avx512 = 2, amx = 3 };
MatmulIsa matmul_best_isa();
MatmulIsa matmul_isa();
void set_matmul_isa(MatmulIsa isa);
const char* matmul_isa_name(MatmulIsa isa);

// Y rows [row_begin, row_end) on the calling thread; y is [n, y_stride].
void matmul_rows(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride, int64_t row_begin,
                 int64_t row_end);

// The whole product spread over the pool: y is [n, w.rows], contiguous. Prepares `in`.
void matmul(ThreadPool& pool, const WeightMatrix& w, MatmulInput& in, float* y);

// Decodes row r of w to float32 (embedding lookups): out has w.cols values.
void decode_row(const WeightMatrix& w, int64_t r, float* out);

// Floating-point operations of a product with n inputs.
inline double matmul_flops(const WeightMatrix& w, int64_t n) { return 2.0 * static_cast<double>(w.rows) * static_cast<double>(w.cols) * static_cast<double>(n); }

}  // namespace moepack::engine
