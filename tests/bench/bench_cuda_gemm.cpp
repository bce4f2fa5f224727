// Prompt-kernel microbenchmark on the GPU, for the reference model's shapes (hidden 2048,
// 128 experts of 768, top 8, 32 query and 4 kv heads of 128): the tensor-core products of a
// batch of n tokens — a dense 8-bit matrix (attn_q 4096 x 2048) and the routed experts
// grouped by expert (4-bit gate+up with SwiGLU, then down), the grouping and the weighted
// sum — and attention of the batch over as many cached positions (split float32 kernel and
// the tensor-core prompt kernel). Prints microseconds per
// call and tera-operations per second of the products (2 x rows x cols x inputs). For
// benchmarks only.
#include <CLI/CLI.hpp>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <vector>

#include "cuda_check.hpp"
#include "cuda_timing.hpp"
#include "kernels.hpp"
#include "pack_format.hpp"
#include "weight_view.hpp"

namespace {

using moepack::cuda::check_cuda;
using moepack::cuda::bench::time_per_call;

// Device memory freed at the end of main.
std::vector<void*> allocations;
template <typename T = void>
T* device_bytes(size_t bytes, int fill = 0) {
    void* p = nullptr;
    check_cuda(cudaMalloc(&p, bytes), "malloc");
    check_cuda(cudaMemset(p, fill, bytes), "memset");
    allocations.push_back(p);
    return static_cast<T*>(p);
}

void print_row(const char* name, int64_t n, double s, double ops) {
    std::printf("%-28s %6lld %10.1f %8.1f\n", name, static_cast<long long>(n), s * 1e6, ops > 0 ? ops / s / 1e12 : 0.0);
}

}  // namespace

int main(int argc, char** argv) try {
    int64_t n = 512;
    int reps = 20;
    CLI::App app{"GPU prompt-kernel microbenchmark"};
    app.add_option("--tokens", n, "tokens in the batch")->capture_default_str();
    app.add_option("--reps", reps, "calls timed per kernel")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    using namespace moepack::cuda;
    const int64_t H = 2048, E = 128, K = 8, I = 768, heads = 32, kv_heads = 4, D = 128;
    std::printf("%-28s %6s %10s %8s\n", "kernel", "tokens", "us", "TOPS");

    // dense: attn_q, 8-bit, group 64
    float* x = device_bytes<float>(static_cast<size_t>(n * 4096) * 4);
    float* y = device_bytes<float>(static_cast<size_t>(n * K * H) * 4);
    {
        const auto layout = moepack::pack::matrix_layout(4096, H, 8, 64);
        auto* w = device_bytes<std::byte>(layout.bytes(), 0x1f);
        const DeviceMatrix m = device_matrix(moepack::engine::WeightMatrix::from_record(w, layout));
        const QuantizedInput q = quantized_input_in(device_bytes(quantized_input_bytes(n, H, 64)), n, H, 64, 8);
        print_row("quantize_input 8-bit", n, time_per_call(reps, false, [&](cudaStream_t s) { quantize_input(x, q, s); }), 0);
        RowGroups rows;
        rows.count = n;
        const double t = time_per_call(reps, false, [&](cudaStream_t s) { gemm(m, {}, q, rows, y, GemvOutput::store, s); });
        print_row("gemm attn_q 8-bit", n, t, 2.0 * 4096 * H * static_cast<double>(n));
    }
    // routed experts: 4-bit gate/up/down records in blocks
    {
        const auto gu = moepack::pack::matrix_layout(I, H, 4, 64), down = moepack::pack::matrix_layout(H, I, 4, 64);
        const size_t up_at = (gu.bytes() + 4095) / 4096 * 4096, down_at = 2 * up_at;
        const size_t stride = (down_at + down.bytes() + 4095) / 4096 * 4096;
        auto* table = device_bytes<std::byte>(stride * E, 0x1f);
        std::vector<int32_t> ids(static_cast<size_t>(n * K));
        for (int64_t t = 0; t < n; ++t)   // k distinct experts per token, spread over all
            for (int64_t j = 0; j < K; ++j) ids[static_cast<size_t>(t * K + j)] = static_cast<int32_t>((t * 37 + j * 16) % E);
        auto* ids_dev = device_bytes<int32_t>(ids.size() * 4);
        check_cuda(cudaMemcpy(ids_dev, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice), "copy");
        auto* offsets = device_bytes<int32_t>((E + 1) * 4);
        auto* order = device_bytes<int32_t>(ids.size() * 4);
        auto* tiles = device_bytes<int32_t>((E + 1) * 4);
        auto* weights = device_bytes<float>(ids.size() * 4);
        float* act = device_bytes<float>(static_cast<size_t>(n * K * I) * 4);
        const QuantizedInput hq = quantized_input_in(device_bytes(quantized_input_bytes(n, H, 64)), n, H, 64, 4);
        const QuantizedInput aq = quantized_input_in(device_bytes(quantized_input_bytes(n * K, I, 64)), n * K, I, 64, 4);
        quantize_input(x, hq, nullptr);
        quantize_input(act, aq, nullptr);
        print_row("group_by_expert", n, time_per_call(reps, false, [&](cudaStream_t s) {
                      group_by_expert(ids_dev, n, K, E, offsets, order, tiles, s);
                  }), 0);
        RowGroups groups;
        groups.offsets = offsets, groups.order = order, groups.tiles = tiles, groups.problems = E, groups.count = n * K;
        groups.input_div = K;
        const ExpertBlocks blocks{static_cast<int64_t>(stride)};
        const DeviceMatrix gate = device_matrix(moepack::engine::WeightMatrix::from_record(table, gu));
        const DeviceMatrix up = device_matrix(moepack::engine::WeightMatrix::from_record(table + up_at, gu));
        const DeviceMatrix dn = device_matrix(moepack::engine::WeightMatrix::from_record(table + down_at, down));
        const double pair_ops = 2.0 * static_cast<double>(I * H) * static_cast<double>(n * K);
        print_row("gemm_swiglu experts 4-bit", n, time_per_call(reps, false, [&](cudaStream_t s) {
                      gemm_swiglu(gate, up, blocks, hq, groups, act, s);
                  }), 2 * pair_ops);
        groups.input_div = 1;
        print_row("gemm down experts 4-bit", n, time_per_call(reps, false, [&](cudaStream_t s) {
                      gemm(dn, blocks, aq, groups, y, GemvOutput::store, s);
                  }), pair_ops);
        print_row("combine_experts", n, time_per_call(reps, false, [&](cudaStream_t s) {
                      combine_experts(x, y, weights, n, K, H, s);
                  }), 0);
    }
    // attention of the batch over n positions
    {
        float* kc = device_bytes<float>(static_cast<size_t>(n * kv_heads * D) * 4);
        float* vc = device_bytes<float>(static_cast<size_t>(n * kv_heads * D) * 4);
        float* out = device_bytes<float>(static_cast<size_t>(n * heads * D) * 4);
        std::vector<int32_t> positions(static_cast<size_t>(n));
        for (int64_t t = 0; t < n; ++t) positions[static_cast<size_t>(t)] = static_cast<int32_t>(t);
        auto* pos = device_bytes<int32_t>(positions.size() * 4);
        check_cuda(cudaMemcpy(pos, positions.data(), positions.size() * 4, cudaMemcpyHostToDevice), "copy");
        auto* workspace = device_bytes<float>(attention_workspace_bytes(n, heads, D, n));
        const double ops = 4.0 * static_cast<double>(heads * D) * static_cast<double>(n) * static_cast<double>(n) / 2;
        print_row("attention (causal)", n, time_per_call(reps, false, [&](cudaStream_t s) {
                      attention(x, kc, vc, out, n, pos, heads, kv_heads, D, 0, n, workspace, nullptr, s);
                  }), ops);
        print_row("prompt_attention (causal)", n, time_per_call(reps, false, [&](cudaStream_t s) {
                      prompt_attention(x, kc, vc, out, n, pos, heads, kv_heads, D, 0, s);
                  }), ops);
    }
    for (void* p : allocations) cudaFree(p);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_gemm: error: %s\n", e.what());
    return 1;
}
