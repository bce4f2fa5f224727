// Fused dequantize-GEMV for decode: y [n, rows] (=|+=) x [n, cols] . W^T for up to three
// matrices of one encoding sharing an input (a layer's q, k and v), one launch. One warp per
// output row (two for a decode token's short affine rows in a long matrix), 8 warps per block, rows of the
// matrices numbered one after another; the row's values decoded in registers by
// row_dot.cuh (affine codes against int8-quantised inputs, float rows against float
// inputs), then a warp reduction. CPU reference: matmul
// (engine/cpu/matmul.cpp), whose decode kernels quantise inputs by the same rule.
#include <algorithm>

#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "row_dot.cuh"

namespace moepack::cuda {
namespace {

using detail::InputView;
using detail::RowSource;

constexpr int kWarps = 8;

struct ProductList {
    GemvProduct products[kMaxGemvProducts];
    int64_t end[kMaxGemvProducts];   // rows of products 0..i together
    int count;
};

// R consecutive rows of one matrix per warp (R 2 for short rows: twice the loads in flight
// and one reduction tail for two rows).
template <class Rows, int N, int R>
__global__ void __launch_bounds__(kWarps * 32) gemv_rows(ProductList list, InputView in, bool add) {
    detail::wait_for_inputs();
    int64_t r = (static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32) * R;
    if (r >= list.end[list.count - 1]) return;
    GemvProduct p = list.products[0];
    if (r >= list.end[0]) {
        const bool second = r < list.end[1];
        p = second ? list.products[1] : list.products[2];
        r -= second ? list.end[0] : list.end[1];
    }
    const int lane = threadIdx.x % 32;
    RowSource src[R];
#pragma unroll
    for (int i = 0; i < R; ++i) src[i] = detail::rows_down(p.w, i);
    float acc[R][N] = {};
    Rows::template dot<R, N>(p.w, src, r, in, 0, lane, acc);
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
        for (int t = 0; t < N; ++t) {
            const float s = detail::warp_sum(acc[i][t]);
            if (lane == 0) {
                float* y = p.y + t * p.w.rows + r + i;
                *y = add ? *y + s : s;
            }
        }
}

// Rows of at most kShortRowBytes in a launch of at least kPairedRows rows are read two per
// warp. Measured on the H200 (bench_cuda_gemv, 4-bit rows of 2048 columns): the 151936-row
// output head 69.7 -> 52.4 us, but the 5120 rows of q, k and v 2.9 -> 3.3 us (half the
// warps leave the SMs short of loads in flight).
constexpr int64_t kShortRowBytes = 1024;
constexpr int64_t kPairedRows = 65536;

template <int N>
void launch(const ProductList& list, const ProductInput& x, int64_t offsets, bool add, cudaStream_t stream) {
    const DeviceMatrix& w = list.products[0].w;
    const InputView in = detail::input_view(x, w.cols);
    const int64_t rows = list.end[list.count - 1];
    bool pairs = w.format == DeviceFormat::affine && w.row_words * 4 <= kShortRowBytes && rows >= kPairedRows;
    for (int i = 0; i < list.count; ++i) pairs = pairs && list.products[i].w.rows % 2 == 0;   // a pair never spans two matrices
    detail::with_rows(w, offsets, x, [&](auto rows_reader) {
        using Rows = decltype(rows_reader);
        if constexpr (N == 1) {   // decode tokens
            if (pairs)
                return detail::launch(gemv_rows<Rows, 1, 2>, static_cast<unsigned>((rows / 2 + kWarps - 1) / kWarps), kWarps * 32, 0,
                                      stream, list, in, add);
        }
        detail::launch(gemv_rows<Rows, N, 1>, static_cast<unsigned>((rows + kWarps - 1) / kWarps), kWarps * 32, 0, stream, list, in, add);
    });
    check_launch("gemv");
}

}  // namespace

void gemv(const GemvProduct* products, int count, const ProductInput& x, int64_t n, GemvOutput output,
          cudaStream_t stream) {
    if (count < 1 || count > kMaxGemvProducts) fail("gemv: ", count, " matrices in one launch, expected 1 to ", kMaxGemvProducts);
    if (n < 1 || n > kMaxGemvInputs) fail("gemv: ", n, " inputs, expected 1 to ", kMaxGemvInputs);
    ProductList list{};
    list.count = count;
    const DeviceMatrix& w0 = products[0].w;
    int64_t rows = 0, offsets = 0;
    for (int i = 0; i < count; ++i) {
        const DeviceMatrix& w = products[i].w;
        if (w.format != w0.format || w.bits != w0.bits || w.group_size != w0.group_size || w.cols != w0.cols)
            fail("gemv: the matrices of one launch differ in encoding or width");
        list.products[i] = products[i];
        rows += w.rows;
        list.end[i] = rows;
        offsets |= static_cast<const char*>(w.data) - static_cast<const char*>(w0.data);
    }
    if (rows <= 0 || w0.cols <= 0) return;
    if (x.quantized && x.quantized->n < n) fail("gemv: ", n, " inputs, ", x.quantized->n, " quantised");
    const bool add = output == GemvOutput::add;
    switch (n) {
        case 1: return launch<1>(list, x, offsets, add, stream);
        case 2: return launch<2>(list, x, offsets, add, stream);
        case 3: return launch<3>(list, x, offsets, add, stream);
        case 4: return launch<4>(list, x, offsets, add, stream);
        case 5: return launch<5>(list, x, offsets, add, stream);
        case 6: return launch<6>(list, x, offsets, add, stream);
        case 7: return launch<7>(list, x, offsets, add, stream);
        default: return launch<8>(list, x, offsets, add, stream);
    }
}

}  // namespace moepack::cuda
