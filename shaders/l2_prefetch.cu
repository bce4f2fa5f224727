// Weights pulled into the L2 cache ahead of the products that read them: each thread hands
// chunks of the spans to the SM's copy engine as bulk L2 prefetches (cp.async.bulk.prefetch,
// Hopper), which return at once and write nothing. A decode token's graph runs it on a side
// stream: the next layer's input products' weights while a layer's experts compute, the
// rest of a layer's dense weights while its input products run; the products then read
// them from L2 instead of HBM. Nothing to compare with on the CPU (no outputs); the
// decoder's tests run with it on and off.
#include <algorithm>
#include <cstdint>

#include "cuda_check.hpp"
#include "kernels.hpp"

namespace moepack::cuda {
namespace {

constexpr uint32_t kChunk = 4096;   // bytes per prefetch instruction
constexpr int kThreads = 64, kMaxBlocks = 64;

struct SpanList {
    DeviceSpan span[kMaxL2Spans];
    int count;
};

__global__ void __launch_bounds__(kThreads) prefetch_spans(SpanList list) {
    const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int s = 0; s < list.count; ++s) {
        // whole 16-byte units only (the instruction's granularity): a span's ragged ends are left out
        const auto begin = (reinterpret_cast<uintptr_t>(list.span[s].data) + 15) & ~uintptr_t{15};
        const auto end = (reinterpret_cast<uintptr_t>(list.span[s].data) + static_cast<uintptr_t>(list.span[s].bytes)) & ~uintptr_t{15};
        if (end <= begin) continue;
        for (uintptr_t at = begin + static_cast<uintptr_t>(thread) * kChunk; at < end; at += static_cast<uintptr_t>(threads) * kChunk) {
            const uint32_t bytes = end - at < kChunk ? static_cast<uint32_t>(end - at) : kChunk;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(at), "r"(bytes) : "memory");
#endif
        }
    }
}

}  // namespace

void prefetch_to_l2(const DeviceSpan* spans, int count, cudaStream_t stream) {
    if (count < 0 || count > kMaxL2Spans) fail("prefetch_to_l2: ", count, " spans (at most ", kMaxL2Spans, ")");
    SpanList list{};
    int64_t chunks = 0;
    for (int i = 0; i < count; ++i) {
        if (spans[i].bytes < 0) fail("prefetch_to_l2: a span of ", spans[i].bytes, " bytes");
        list.span[i] = spans[i];
        chunks += (spans[i].bytes + int64_t{kChunk} - 1) / kChunk;
    }
    list.count = count;
    if (chunks == 0) return;
    const auto blocks = static_cast<unsigned>(std::min<int64_t>(kMaxBlocks, (chunks + kThreads - 1) / kThreads));
    prefetch_spans<<<blocks, kThreads, 0, stream>>>(list);
    check_launch("prefetch_to_l2");
}

}  // namespace moepack::cuda
