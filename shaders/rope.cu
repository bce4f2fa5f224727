// Rotary position embedding: the leading rotary_dim values of each head of n rows, pairs
// (i, i + rotary_dim / 2) ("half", NeoX) or (2i, 2i + 1) ("interleaved"), angle = position *
// inv_freq[i] in float32 as the CPU computes it. One thread per pair. CPU reference:
// Rope::apply (engine/blocks.cpp), whose inv_freq table the caller passes.
#include "cuda_check.hpp"
#include "kernels.hpp"

namespace moepack::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void rope_pairs(float* __restrict__ x, int64_t n, int64_t heads, int64_t head_dim, int64_t rotary_dim,
                           bool interleaved, const float* __restrict__ inv_freq, int64_t position0) {
    const int64_t half = rotary_dim / 2;
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (i >= n * heads * half) return;
    const int64_t pair = i % half, head = (i / half) % heads, t = i / (half * heads);
    float* v = x + (t * heads + head) * head_dim;
    const float angle = static_cast<float>(position0 + t) * inv_freq[pair];
    float s, c;
    sincosf(angle, &s, &c);
    float* a = interleaved ? v + 2 * pair : v + pair;
    float* b = interleaved ? v + 2 * pair + 1 : v + pair + half;
    const float x0 = *a, x1 = *b;
    *a = x0 * c - x1 * s;
    *b = x1 * c + x0 * s;
}

}  // namespace

void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t rotary_dim, bool interleaved,
          const float* inv_freq, int64_t position0, cudaStream_t stream) {
    const int64_t pairs = n * heads * (rotary_dim / 2);
    if (pairs <= 0) return;
    rope_pairs<<<static_cast<unsigned>((pairs + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
        x, n, heads, head_dim, rotary_dim, interleaved, inv_freq, position0);
    check_launch("rope");
}

}  // namespace moepack::cuda
