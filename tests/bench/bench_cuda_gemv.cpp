// GEMV microbenchmark on the GPU: the decode product of shaders/gemv.cu for the reference
// model's shapes and encodings, weights cycled through a set larger than L2 so that they
// come from HBM; prints microseconds per product, the weight bytes' GB/s and their ratio
// to the device-to-device copy bandwidth measured first. For benchmarks only.
#include <CLI/CLI.hpp>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cuda_check.hpp"
#include "kernels.hpp"
#include "pack_format.hpp"
#include "weight_view.hpp"

namespace {

using moepack::cuda::check_cuda;

struct Shape {
    const char* name;
    int64_t rows, cols;
};

// Seconds per call of fn, from cudaEvents around `reps` calls after a warm-up.
template <typename Fn>
double time_per_call(int reps, Fn fn) {
    fn();
    cudaEvent_t start, stop;
    check_cuda(cudaEventCreate(&start), "event");
    check_cuda(cudaEventCreate(&stop), "event");
    check_cuda(cudaEventRecord(start), "record");
    for (int i = 0; i < reps; ++i) fn();
    check_cuda(cudaEventRecord(stop), "record");
    check_cuda(cudaEventSynchronize(stop), "sync");
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return ms / 1e3 / reps;
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
    const double copy_s = time_per_call(10, [&] { check_cuda(cudaMemcpy(b, a, copy_bytes, cudaMemcpyDeviceToDevice), "copy"); });
    const double hbm = 2.0 * static_cast<double>(copy_bytes) / copy_s;   // read + write
    cudaFree(a);
    cudaFree(b);
    std::printf("device-to-device copy: %.0f GB/s (read + write)\n", hbm / 1e9);
    std::printf("%-16s %5s %6s %12s %10s %8s\n", "shape", "bits", "inputs", "us/product", "GB/s", "of copy");

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
            void *x = nullptr, *y = nullptr;
            check_cuda(cudaMalloc(&x, static_cast<size_t>(inputs * s.cols) * 4), "malloc");
            check_cuda(cudaMalloc(&y, static_cast<size_t>(inputs * s.rows) * 4), "malloc");
            check_cuda(cudaMemset(x, 0, static_cast<size_t>(inputs * s.cols) * 4), "memset");
            std::vector<moepack::cuda::DeviceMatrix> mats;
            for (size_t i = 0; i < count; ++i)
                mats.push_back(moepack::cuda::device_matrix(moepack::engine::WeightMatrix::from_record(
                    static_cast<const std::byte*>(weights) + i * stride, layout)));
            size_t next = 0;
            const int reps = static_cast<int>(std::max<size_t>(20, 3 * count));
            const double t = time_per_call(reps, [&] {
                moepack::cuda::gemv(mats[next], static_cast<const float*>(x), inputs, static_cast<float*>(y), nullptr);
                next = (next + 1) % count;
            });
            const double gbs = static_cast<double>(layout.bytes()) / t;
            std::printf("%-16s %5d %6lld %12.2f %10.0f %7.0f%%\n", s.name, bits, static_cast<long long>(inputs), t * 1e6,
                        gbs / 1e9, 100.0 * gbs / hbm);
            cudaFree(weights);
            cudaFree(x);
            cudaFree(y);
        }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_gemv: error: %s\n", e.what());
    return 1;
}
