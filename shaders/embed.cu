// Embedding rows decoded on the GPU: out[t, :] = row ids[t] of the table, in any pack
// encoding (affine records: q * scale + bias; bf16, f16, f32 values), the ids read from
// device memory. One block per row. CPU reference: decode_row (engine/cpu/matmul.cpp).
#include <cuda_fp16.h>

#include "cuda_check.hpp"
#include "kernels.hpp"
#include "launch.cuh"
#include "row_dot.cuh"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    embed_rows_kernel(DeviceMatrix table, const int32_t* __restrict__ ids, float* __restrict__ out) {
    detail::wait_for_inputs();
    const int64_t r = ids[blockIdx.x];
    float* o = out + static_cast<int64_t>(blockIdx.x) * table.cols;
    if (r < 0 || r >= table.rows) {   // the host checks ids; a bad one gives NaN, not a stray read
        for (int64_t c = threadIdx.x; c < table.cols; c += kThreads) o[c] = __int_as_float(0x7fc00000);
        return;
    }
    for (int64_t c = threadIdx.x; c < table.cols; c += kThreads) {
        float value = 0.0f;
        switch (table.format) {
            case DeviceFormat::affine: {
                const int per_word = 32 / table.bits;
                const uint32_t word = static_cast<const uint32_t*>(table.data)[r * table.row_words + c / per_word];
                const uint32_t code = (word >> ((c % per_word) * table.bits)) & ((1u << table.bits) - 1u);
                const int64_t g = r * table.groups + c / table.group_size;
                value = static_cast<float>(code) * detail::bf16_to_float(table.scales[g]) + detail::bf16_to_float(table.biases[g]);
                break;
            }
            case DeviceFormat::bf16: value = detail::bf16_to_float(static_cast<const uint16_t*>(table.data)[r * table.cols + c]); break;
            case DeviceFormat::f16: value = __half2float(static_cast<const __half*>(table.data)[r * table.cols + c]); break;
            case DeviceFormat::f32: value = static_cast<const float*>(table.data)[r * table.cols + c]; break;
        }
        o[c] = value;
    }
}

}  // namespace

void embed_rows(const DeviceMatrix& table, const int32_t* ids, int64_t n, float* out, cudaStream_t stream) {
    if (n <= 0 || table.cols <= 0) return;
    if (n > 2147483647) fail("embed_rows: ", n, " rows");
    detail::launch(embed_rows_kernel, static_cast<unsigned>(n), kThreads, 0, stream, table, ids, out);
    check_launch("embed_rows");
}

}  // namespace moepack::cuda
