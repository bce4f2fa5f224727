// Decode-product microbenchmark on the GPU: shaders/gemv.cu for the reference model's shapes
// and encodings, and the routed experts' kernels (expert_gate_up, expert_down_add: top-8 of
// 128 experts of 768 x 2048), weights cycled through a set larger than L2 so that they come
// from HBM; prints microseconds per call launched one by one on a stream and replayed from
// a CUDA graph, the weight bytes' GB/s (graph) and their ratio to the device-to-device copy
// bandwidth measured first; then the kernels of a decode layer that read no weights (norm,
// attention at position 600 of 1024, routing, quantisation), microseconds per call. For
// benchmarks only.
#include <CLI/CLI.hpp>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cuda_check.hpp"
#include "cuda_timing.hpp"
#include "kernels.hpp"
#include "pack_format.hpp"
#include "weight_view.hpp"

namespace {

using moepack::cuda::check_cuda;
using moepack::cuda::bench::time_per_call;

struct Shape {
    const char* name;
    int64_t rows, cols;
};

void print_row(const char* name, int bits, int64_t inputs, double stream_s, double graph_s, double bytes, double hbm) {
    const double gbs = bytes / graph_s;
    std::printf("%-20s %5d %6lld %10.2f %10.2f %8.0f %7.0f%%\n", name, bits, static_cast<long long>(inputs), stream_s * 1e6,
                graph_s * 1e6, gbs / 1e9, 100.0 * gbs / hbm);
}

}  // namespace

int main(int argc, char** argv) try {
    int64_t inputs = 1, set_mb = 2048;
    CLI::App app{"GPU GEMV microbenchmark"};
    app.add_option("--inputs", inputs, "inputs per product (1..8)")->capture_default_str();
    app.add_option("--set-mb", set_mb, "bytes of distinct weights cycled through, MB")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    const size_t copy_bytes = size_t{1} << 30;
    void *a = nullptr, *b = nullptr;
    check_cuda(cudaMalloc(&a, copy_bytes), "malloc");
    check_cuda(cudaMalloc(&b, copy_bytes), "malloc");
    const double copy_s = time_per_call(10, false, [&](cudaStream_t stream) {
        check_cuda(cudaMemcpyAsync(b, a, copy_bytes, cudaMemcpyDeviceToDevice, stream), "copy");
    });
    const double hbm = 2.0 * static_cast<double>(copy_bytes) / copy_s;   // read + write
    cudaFree(a);
    cudaFree(b);
    std::printf("device-to-device copy: %.0f GB/s (read + write)\n", hbm / 1e9);
    std::printf("%-20s %5s %6s %10s %10s %8s %8s\n", "shape", "bits", "inputs", "us stream", "us graph", "GB/s", "of copy");
    using namespace moepack::cuda;
    void *x = nullptr, *y = nullptr, *xq = nullptr;
    const int64_t most = 151936 * 2048;
    check_cuda(cudaMalloc(&x, static_cast<size_t>(inputs) * 8192 * 4), "malloc");
    check_cuda(cudaMalloc(&y, static_cast<size_t>(inputs * most / 2048) * 4), "malloc");
    check_cuda(cudaMemset(x, 0, static_cast<size_t>(inputs) * 8192 * 4), "memset");
    check_cuda(cudaMalloc(&xq, quantized_input_bytes(inputs, 8192, 64)), "malloc");

    const Shape shapes[] = {{"expert_gate_up", 768, 2048}, {"expert_down", 2048, 768}, {"attn_q", 4096, 2048},
                            {"lm_head", 151936, 2048}};
    for (const Shape& s : shapes)
        for (int bits : {4, 8, 16}) {
            const auto layout = moepack::pack::matrix_layout(static_cast<uint64_t>(s.rows), static_cast<uint64_t>(s.cols),
                                                             bits, bits == 16 ? 0 : 64);
            const size_t stride = (layout.bytes() + 255) / 256 * 256;
            const size_t count = std::max<size_t>(1, static_cast<size_t>(set_mb) * 1000000 / stride);
            void* weights = nullptr;
            check_cuda(cudaMalloc(&weights, stride * count), "malloc");
            check_cuda(cudaMemset(weights, 0x1f, stride * count), "memset");   // small finite bf16 values
            std::vector<DeviceMatrix> mats;
            for (size_t i = 0; i < count; ++i)
                mats.push_back(device_matrix(moepack::engine::WeightMatrix::from_record(
                    static_cast<const std::byte*>(weights) + i * stride, layout)));
            QuantizedInput q;
            ProductInput in{static_cast<const float*>(x), nullptr};
            if (bits != 16) {
                q = quantized_input_in(xq, inputs, s.cols, 64, bits);
                quantize_input(static_cast<const float*>(x), q, nullptr);
                in.quantized = &q;
            }
            const int reps = static_cast<int>(std::max<size_t>(20, 3 * count));
            double t[2];
            for (bool graph : {false, true}) {
                size_t next = 0;
                t[graph] = time_per_call(reps, graph, [&](cudaStream_t stream) {
                    gemv(mats[next], in, inputs, static_cast<float*>(y), GemvOutput::store, stream);
                    next = (next + 1) % count;
                });
            }
            print_row(s.name, bits, inputs, t[0], t[1], static_cast<double>(layout.bytes()), hbm);
            cudaFree(weights);
        }

    // the routed experts of one token: top-8 of 128 blocks of gate, up and down (4-bit)
    for (int bits : {4, 8}) {
        const auto gu = moepack::pack::matrix_layout(768, 2048, bits, 64), down = moepack::pack::matrix_layout(2048, 768, bits, 64);
        const size_t up_at = (gu.bytes() + 4095) / 4096 * 4096, down_at = 2 * up_at;
        const size_t stride = (down_at + down.bytes() + 4095) / 4096 * 4096;
        const size_t layers = std::max<size_t>(1, static_cast<size_t>(set_mb) * 1000000 / (128 * stride));
        void* table = nullptr;
        check_cuda(cudaMalloc(&table, stride * 128 * layers), "malloc");
        check_cuda(cudaMemset(table, 0x1f, stride * 128 * layers), "memset");
        std::vector<int32_t> ids(8 * layers);
        for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + i / 8 * 11) % 128);
        void *ids_dev = nullptr, *weights = nullptr, *act = nullptr, *act_q = nullptr, *h_q = nullptr;
        check_cuda(cudaMalloc(&ids_dev, ids.size() * 4), "malloc");
        check_cuda(cudaMemcpy(ids_dev, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice), "copy");
        check_cuda(cudaMalloc(&weights, 8 * 4), "malloc");
        check_cuda(cudaMemset(weights, 0, 8 * 4), "memset");
        check_cuda(cudaMalloc(&act, 8 * 768 * 4), "malloc");
        check_cuda(cudaMemset(act, 0, 8 * 768 * 4), "memset");
        check_cuda(cudaMalloc(&act_q, quantized_input_bytes(8, 768, 64)), "malloc");
        check_cuda(cudaMalloc(&h_q, quantized_input_bytes(1, 2048, 64)), "malloc");
        const QuantizedInput hq = quantized_input_in(h_q, 1, 2048, 64, bits), aq = quantized_input_in(act_q, 8, 768, 64, bits);
        quantize_input(static_cast<const float*>(x), hq, nullptr);
        quantize_input(static_cast<const float*>(act), aq, nullptr);
        const int reps = static_cast<int>(std::max<size_t>(20, 3 * layers));
        auto block = [&](size_t layer) { return static_cast<const std::byte*>(table) + layer * 128 * stride; };
        double t[2][2];
        for (bool graph : {false, true}) {
            size_t next = 0;
            t[0][graph] = time_per_call(reps, graph, [&](cudaStream_t stream) {
                const std::byte* blocks = block(next);
                expert_gate_up(device_matrix(moepack::engine::WeightMatrix::from_record(blocks, gu)),
                               device_matrix(moepack::engine::WeightMatrix::from_record(blocks + up_at, gu)), ExpertBlocks{static_cast<int64_t>(stride)},
                               static_cast<const int32_t*>(ids_dev) + 8 * next, 8, ProductInput{static_cast<const float*>(x), &hq},
                               static_cast<float*>(act), stream);
                next = (next + 1) % layers;
            });
            next = 0;
            t[1][graph] = time_per_call(reps, graph, [&](cudaStream_t stream) {
                const std::byte* blocks = block(next);
                expert_down_add(device_matrix(moepack::engine::WeightMatrix::from_record(blocks + down_at, down)),
                                ExpertBlocks{static_cast<int64_t>(stride)}, static_cast<const int32_t*>(ids_dev) + 8 * next,
                                static_cast<const float*>(weights), 8, ProductInput{static_cast<const float*>(act), &aq},
                                static_cast<float*>(y), stream);
                next = (next + 1) % layers;
            });
        }
        print_row("top8 gate+up", bits, 1, t[0][0], t[0][1], 16.0 * static_cast<double>(gu.bytes()), hbm);
        print_row("top8 down+add", bits, 1, t[1][0], t[1][1], 8.0 * static_cast<double>(down.bytes()), hbm);
        for (void* p : {table, ids_dev, weights, act, act_q, h_q}) cudaFree(p);
    }
    // the kernels of a reference decode layer that read no weights: the launch-to-launch cost
    // of each in a chain (graph) is what a decode token pays per kernel
    {
        const int64_t H = 2048, heads = 32, kv_heads = 4, D = 128, ctx = 1024, E = 128, K = 8, I = 768;
        std::vector<void*> held;
        auto zeros = [&](size_t bytes) {
            void* p = nullptr;
            check_cuda(cudaMalloc(&p, bytes), "malloc");
            check_cuda(cudaMemset(p, 0, bytes), "memset");
            held.push_back(p);
            return p;
        };
        auto* h = static_cast<float*>(zeros(H * 4));
        auto* norm_weight = static_cast<float*>(zeros(H * 4));
        auto* q = static_cast<float*>(zeros(heads * D * 4));
        auto* k = static_cast<float*>(zeros(kv_heads * D * 4));
        auto* v = static_cast<float*>(zeros(kv_heads * D * 4));
        auto* head_norm = static_cast<float*>(zeros(D * 4));
        auto* inv_freq = static_cast<float*>(zeros(D / 2 * 4));
        auto* kc = static_cast<float*>(zeros(ctx * kv_heads * D * 4));
        auto* vc = static_cast<float*>(zeros(ctx * kv_heads * D * 4));
        auto* out = static_cast<float*>(zeros(heads * D * 4));
        auto* workspace = static_cast<float*>(zeros(attention_workspace_bytes(1, heads, D, ctx)));
        auto* logits = static_cast<float*>(zeros(E * 4));
        auto* ids = static_cast<int32_t*>(zeros(K * 4));
        auto* route_weights = static_cast<float*>(zeros(K * 4));
        auto* act = static_cast<float*>(zeros(K * I * 4));
        const int32_t position = 600;
        auto* pos = static_cast<int32_t*>(zeros(4));
        check_cuda(cudaMemcpy(pos, &position, 4, cudaMemcpyHostToDevice), "copy");
        const QuantizedInput hq[2] = {quantized_input_in(zeros(quantized_input_bytes(1, H, 64)), 1, H, 64, 8),
                                      quantized_input_in(zeros(quantized_input_bytes(1, H, 64)), 1, H, 64, 4)};
        const QuantizedInput oq = quantized_input_in(zeros(quantized_input_bytes(1, heads * D, 64)), 1, heads * D, 64, 8);
        const QuantizedInput aq = quantized_input_in(zeros(quantized_input_bytes(K, I, 64)), K, I, 64, 4);
        const RopeTable rope{D, false, inv_freq};
        const auto time = [&](const char* name, auto fn) {
            std::printf("%-36s %10.2f %10.2f\n", name, time_per_call(50, false, fn) * 1e6, time_per_call(50, true, fn) * 1e6);
        };
        std::printf("%-36s %10s %10s\n", "decode kernel (no weights)", "us stream", "us graph");
        time("rms_norm_quantized (2048, 2 codes)", [&](cudaStream_t s) { rms_norm_quantized(static_cast<const float*>(x), h, 1, H, norm_weight, 1e-6f, hq, 2, s); });
        time("attention_prologue (32/4 heads of 128)", [&](cudaStream_t s) {
            attention_prologue(q, k, v, 1, heads, kv_heads, D, head_norm, head_norm, 1e-6f, rope, pos, kc, vc, s);
        });
        time("attention (position 600 of 1024)", [&](cudaStream_t s) {
            attention(q, kc, vc, out, 1, pos, heads, kv_heads, D, 0, ctx, workspace, nullptr, s);
        });
        time("attention + output quantised", [&](cudaStream_t s) {
            attention(q, kc, vc, out, 1, pos, heads, kv_heads, D, 0, ctx, workspace, &oq, s);
        });
        time("route (top 8 of 128)", [&](cudaStream_t s) {
            route(logits, 1, E, K, RouteFunction::softmax_topk, true, 1.0f, ids, route_weights, s);
        });
        time("quantize_input (8 x 768, 4-bit)", [&](cudaStream_t s) { quantize_input(act, aq, s); });
        for (void* p : held) cudaFree(p);
    }
    for (void* p : {x, y, xq}) cudaFree(p);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_gemv: error: %s\n", e.what());
    return 1;
}
