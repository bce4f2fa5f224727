// Fused dequantize-GEMV for decode: y [n, rows] = x [n, cols] . W^T with W in any pack
// encoding, decoded in registers (no dequantised copy). One warp per output row at a time,
// 4 warps per block; the lanes walk the row's code words (coalesced) or values (16-byte
// loads when a row is a whole number of them), each decoded once and multiplied against all
// n inputs, then a warp reduction. For affine records each word of codes lies in one group:
// a row is sum over groups of scale * sum(q * x) + bias * sum(x), the inputs and their group
// sums staged in shared memory. CPU reference: engine/cpu/matmul.cpp.
#include <cuda_fp16.h>

#include <algorithm>
#include <mutex>
#include <set>

#include "cuda_check.hpp"
#include "kernels.hpp"

namespace moepack::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

__device__ inline float bf16_to_float(uint16_t v) { return __uint_as_float(static_cast<uint32_t>(v) << 16); }

__device__ inline float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Several matrices laid out alike in one launch (blockIdx.y = slot j): slot j reads the
// matrix moved by ids[j] * stride bytes (no ids: not moved), its inputs at x + j * x_slot
// and writes its outputs at y + j * y_slot.
struct Slots {
    const int32_t* ids = nullptr;
    int64_t stride = 0, x_slot = 0, y_slot = 0;
};

template <typename T>
__device__ inline const T* moved(const T* p, const Slots& s) {
    return s.ids ? reinterpret_cast<const T*>(reinterpret_cast<const char*>(p) + int64_t{s.ids[blockIdx.y]} * s.stride) : p;
}

// Shared memory a block may use (Hopper allows up to 227 KB per block on request).
constexpr int64_t kMaxSharedBytes = 200 * 1024;

// Affine rows against inputs staged in shared memory: xs [N][padded] (zero beyond cols, so
// the zero codes past a row's end add nothing) and each group's input sum gs [N][groups]
// (the bias term, bias * sum(x), added once per group by the lane that holds its first
// word). Codes become floats by the exponent trick (0x4B000000 | q is 2^23 + q), not by
// integer conversion. Warps stride over rows so that a block stages its inputs once.
template <int N, int Bits>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    affine_gemv(const uint32_t* __restrict__ codes, const uint16_t* __restrict__ scales,
                const uint16_t* __restrict__ biases, int64_t rows, int64_t cols, int64_t row_words, int64_t groups,
                int group_size, const float* __restrict__ x, float* __restrict__ y, Slots slots) {
    constexpr int kCodes = 32 / Bits;
    codes = moved(codes, slots);
    scales = moved(scales, slots);
    biases = moved(biases, slots);
    x += blockIdx.y * slots.x_slot;
    y += blockIdx.y * slots.y_slot;
    constexpr uint32_t kMask = (1u << Bits) - 1u;
    extern __shared__ float4 shared[];
    const int64_t padded = row_words * kCodes;
    float* xs = reinterpret_cast<float*>(shared);
    float* gs = xs + N * padded;
    for (int64_t i = threadIdx.x; i < N * padded; i += blockDim.x) {
        const int64_t t = i / padded, c = i % padded;
        xs[i] = c < cols ? x[t * cols + c] : 0.0f;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < N * groups; i += blockDim.x) {
        const int64_t t = i / groups, g = i % groups;
        const float* xg = xs + t * padded + g * group_size;
        const int64_t end = min(static_cast<int64_t>(group_size), cols - g * group_size);
        float sum = 0.0f;
        for (int64_t c = 0; c < end; ++c) sum += xg[c];
        gs[i] = sum;
    }
    __syncthreads();
    const int lane = threadIdx.x % 32;
    const int words_per_group = group_size / kCodes;
    for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; r < rows;
         r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
        const uint32_t* row = codes + r * row_words;
        float acc[N] = {};
        for (int64_t w = lane; w < row_words; w += 32) {
            const uint32_t word = __ldg(row + w);
            const int64_t g = w / words_per_group;
            const float scale = bf16_to_float(__ldg(scales + r * groups + g));
            float q[kCodes];
#pragma unroll
            for (int k = 0; k < kCodes; ++k) q[k] = __uint_as_float(0x4B000000u | ((word >> (k * Bits)) & kMask)) - 8388608.0f;
#pragma unroll
            for (int t = 0; t < N; ++t) {
                const float4* xv = reinterpret_cast<const float4*>(xs + t * padded + w * kCodes);
                float dot = 0.0f;
#pragma unroll
                for (int k = 0; k < kCodes / 4; ++k) {
                    const float4 v = xv[k];
                    dot = fmaf(q[4 * k], v.x, fmaf(q[4 * k + 1], v.y, fmaf(q[4 * k + 2], v.z, fmaf(q[4 * k + 3], v.w, dot))));
                }
                acc[t] = fmaf(scale, dot, acc[t]);
            }
            if (w % words_per_group == 0) {
                const float bias = bf16_to_float(__ldg(biases + r * groups + g));
#pragma unroll
                for (int t = 0; t < N; ++t) acc[t] = fmaf(bias, gs[t * groups + g], acc[t]);
            }
        }
#pragma unroll
        for (int t = 0; t < N; ++t) {
            const float s = warp_sum(acc[t]);
            if (lane == 0) y[t * rows + r] = s;
        }
    }
}

// Blocks for a grid that strides over rows: enough to fill every multiprocessor a few times.
unsigned row_blocks(int64_t rows) {
    static const int sms = [] {
        int device = 0, count = 0;
        check_cuda(cudaGetDevice(&device), "cudaGetDevice");
        check_cuda(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device), "multiprocessor count");
        return count;
    }();
    const int64_t needed = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
    return static_cast<unsigned>(std::min<int64_t>(needed, static_cast<int64_t>(sms) * 16));
}

template <typename T>
__device__ inline float to_float(T v);
template <>
__device__ inline float to_float<float>(float v) { return v; }
template <>
__device__ inline float to_float<uint16_t>(uint16_t v) { return bf16_to_float(v); }
template <>
__device__ inline float to_float<__half>(__half v) { return __half2float(v); }

// Float rows (f32, bf16 as uint16_t, f16): 16-byte loads when a row is a whole number of them.
template <int N, typename T, bool Wide>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) float_gemv(const T* __restrict__ w, int64_t rows, int64_t cols,
                                                                   const float* __restrict__ x, float* __restrict__ y,
                                                                   Slots slots) {
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
    if (r >= rows) return;
    w = moved(w, slots);
    x += blockIdx.y * slots.x_slot;
    y += blockIdx.y * slots.y_slot;
    const int lane = threadIdx.x % 32;
    const T* row = w + r * cols;
    float acc[N] = {};
    constexpr int kPerLoad = 16 / sizeof(T);
    if (Wide) {
        for (int64_t v = lane; v < cols / kPerLoad; v += 32) {
            const uint4 raw = __ldg(reinterpret_cast<const uint4*>(row) + v);
            T vals[kPerLoad];
            memcpy(vals, &raw, 16);
#pragma unroll
            for (int t = 0; t < N; ++t)
#pragma unroll
                for (int k = 0; k < kPerLoad; ++k) acc[t] = fmaf(to_float(vals[k]), __ldg(x + t * cols + v * kPerLoad + k), acc[t]);
        }
    } else {
        for (int64_t c = lane; c < cols; c += 32) {
            const float wv = to_float(row[c]);
#pragma unroll
            for (int t = 0; t < N; ++t) acc[t] = fmaf(wv, __ldg(x + t * cols + c), acc[t]);
        }
    }
#pragma unroll
    for (int t = 0; t < N; ++t) {
        const float s = warp_sum(acc[t]);
        if (lane == 0) y[t * rows + r] = s;
    }
}

// Float rows, with 16-byte loads when the rows are aligned whole numbers of them.
template <int N, typename T>
void launch_float(const T* p, const DeviceMatrix& w, const float* x, float* y, int64_t count, const Slots& slots,
                  cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock), static_cast<unsigned>(count));
    const dim3 block(kWarpsPerBlock * 32);
    if (reinterpret_cast<uintptr_t>(p) % 16 == 0 && slots.stride % 16 == 0 && w.cols % (16 / sizeof(T)) == 0)
        float_gemv<N, T, true><<<grid, block, 0, stream>>>(p, w.rows, w.cols, x, y, slots);
    else
        float_gemv<N, T, false><<<grid, block, 0, stream>>>(p, w.rows, w.cols, x, y, slots);
}

// Lets `kernel` take kMaxSharedBytes of dynamic shared memory (past the default 48 KB); the
// attribute is set once per kernel, not on every launch.
template <typename Kernel>
void allow_shared_memory(Kernel kernel) {
    static std::mutex mutex;
    static std::set<const void*> raised;
    std::lock_guard lock(mutex);
    const auto* key = reinterpret_cast<const void*>(kernel);
    if (raised.count(key)) return;
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kMaxSharedBytes)),
               "gemv shared memory");
    raised.insert(key);
}

template <int N>
void launch(const DeviceMatrix& w, const float* x, float* y, int64_t count, const Slots& slots, cudaStream_t stream) {
    const dim3 block(kWarpsPerBlock * 32);
    switch (w.format) {
        case DeviceFormat::affine: {
            const int64_t padded = w.row_words * (32 / w.bits);
            const auto shared = static_cast<size_t>(N * (padded + w.groups) * 4);
            if (static_cast<int64_t>(shared) > kMaxSharedBytes) fail("gemv: ", N, " inputs of ", w.cols, " values exceed shared memory");
            const auto* codes = static_cast<const uint32_t*>(w.data);
            auto run = [&](auto kernel) {
                if (shared > 48 * 1024) allow_shared_memory(kernel);
                const dim3 grid(row_blocks(w.rows), static_cast<unsigned>(count));
                kernel<<<grid, block, shared, stream>>>(codes, w.scales, w.biases, w.rows, w.cols, w.row_words, w.groups,
                                                        w.group_size, x, y, slots);
            };
            switch (w.bits) {
                case 2: run(affine_gemv<N, 2>); break;
                case 4: run(affine_gemv<N, 4>); break;
                case 8: run(affine_gemv<N, 8>); break;
                default: fail("gemv: affine weights of ", w.bits, " bits");
            }
            break;
        }
        case DeviceFormat::bf16: launch_float<N>(static_cast<const uint16_t*>(w.data), w, x, y, count, slots, stream); break;
        case DeviceFormat::f16: launch_float<N>(static_cast<const __half*>(w.data), w, x, y, count, slots, stream); break;
        case DeviceFormat::f32: launch_float<N>(static_cast<const float*>(w.data), w, x, y, count, slots, stream); break;
    }
    check_launch("gemv");
}

// n inputs per slot; inputs staged in halves when they exceed shared memory.
void gemv_launch(const DeviceMatrix& w, const float* x, int64_t n, float* y, int64_t count, const Slots& slots,
                 cudaStream_t stream) {
    if (n < 1 || n > kMaxGemvInputs) fail("gemv: ", n, " inputs, expected 1 to ", kMaxGemvInputs);
    if (w.format == DeviceFormat::affine && n > 1 && n * (w.row_words * (32 / w.bits) + w.groups) * 4 > kMaxSharedBytes) {
        const int64_t half = n / 2;
        gemv_launch(w, x, half, y, count, slots, stream);
        gemv_launch(w, x + half * w.cols, n - half, y + half * w.rows, count, slots, stream);
        return;
    }
    switch (n) {
        case 1: return launch<1>(w, x, y, count, slots, stream);
        case 2: return launch<2>(w, x, y, count, slots, stream);
        case 3: return launch<3>(w, x, y, count, slots, stream);
        case 4: return launch<4>(w, x, y, count, slots, stream);
        case 5: return launch<5>(w, x, y, count, slots, stream);
        case 6: return launch<6>(w, x, y, count, slots, stream);
        case 7: return launch<7>(w, x, y, count, slots, stream);
        default: return launch<8>(w, x, y, count, slots, stream);
    }
}

}  // namespace

void gemv(const DeviceMatrix& w, const float* x, int64_t n, float* y, cudaStream_t stream) {
    if (w.rows <= 0 || w.cols <= 0) return;
    gemv_launch(w, x, n, y, 1, Slots{}, stream);
}

void gemv_experts(const DeviceMatrix& w, int64_t stride, const int32_t* ids, int64_t count, const float* x,
                  int64_t x_slot, int64_t n, float* y, cudaStream_t stream) {
    if (w.rows <= 0 || w.cols <= 0 || count <= 0) return;
    if (count > 65535) fail("gemv_experts: ", count, " experts in one launch");
    gemv_launch(w, x, n, y, count, Slots{ids, stride, x_slot, n * w.rows}, stream);
}

}  // namespace moepack::cuda
