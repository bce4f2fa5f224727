// Microbenchmark of the matrix products (engine/cpu/matmul.hpp) on the shapes of a
// Qwen3-30B-A3B-like model, affine 2/4/8-bit (group 64) and bf16 weights:
//   n = 1:   GB/s of weights streamed, for one matrix used again and again ("hot": it stays
//            in L2/L3 when it fits) and for copies of it cycling through ~1 GB ("ram": every
//            product reads from memory);
//   n = 128 (or --inputs): GFLOP/s (2 rows x cols x n per product), hot.
// First the fixed cost of one fork-join of the thread pool.
// Each for 1 thread and for --threads threads. Weights are filler values (valid bf16
// scales, biases and weights; kernel timing does not depend on the values).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cpu/matmul.hpp"
#include "cpu/matmul_kernels.hpp"
#include "pack_format.hpp"
#include "thread_pool.hpp"

using namespace moepack;
using namespace moepack::engine;

namespace {

struct Shape {
    const char* name;
    int64_t rows, cols;
};

constexpr Shape kShapes[] = {
    {"expert_gate_up", 768, 2048}, {"expert_down", 2048, 768}, {"attn_q", 4096, 2048},
    {"attn_o", 2048, 4096},        {"lm_head", 151936, 2048},
};

using Clock = std::chrono::steady_clock;

// A matrix record of `layout` at `record` (any bytes there: filler).
WeightMatrix view(const std::byte* record, const pack::MatrixLayout& layout) {
    return WeightMatrix::from_record(record, layout);
}

// Seconds per product: runs for at least `min_seconds` (and at least once, after one warm-up).
template <typename Fn>
double time_per_call(double min_seconds, Fn&& fn) {
    fn(0);
    int64_t calls = 0;
    const auto start = Clock::now();
    double elapsed = 0;
    do {
        fn(++calls);
        elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    } while (elapsed < min_seconds);
    return elapsed / static_cast<double>(calls);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Matrix-product microbenchmark"};
    int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    double seconds = 0.2;
    int64_t ram_mb = 1024;
    std::string isa_name, only;
    bool skip_prefill = false;
    int64_t batch = 128, int8_max = detail::int8_max_inputs();
    app.add_option("--threads", threads, "threads of the multi-threaded runs (default: all)");
    app.add_option("--seconds", seconds, "minimum time per measurement");
    app.add_option("--ram-mb", ram_mb, "size of the set of matrices of the RAM measurement");
    app.add_option("--isa", isa_name, "kernels: portable, avx2, avx512 or amx (default: the best the CPU has)");
    app.add_option("--shape", only, "only this shape (expert_gate_up, expert_down, attn_q, attn_o, lm_head)");
    app.add_flag("--no-prefill", skip_prefill, "skip the measurements with several inputs");
    app.add_option("--inputs", batch, "inputs of the prefill measurements (1..128)")->check(CLI::Range(1, 128));
    app.add_option("--int8-max-inputs", int8_max,
                   "affine products with fewer inputs take the AVX-512 int8 kernels (0: only decode)");
    CLI11_PARSE(app, argc, argv);

    if (!isa_name.empty()) {
        bool found = false;
        for (const MatmulIsa i : {MatmulIsa::portable, MatmulIsa::avx2, MatmulIsa::avx512, MatmulIsa::amx})
            if (isa_name == matmul_isa_name(i)) {
                set_matmul_isa(i);
                found = true;
            }
        if (!found) {
            std::fprintf(stderr, "bench_matmul: unknown --isa %s\n", isa_name.c_str());
            return 2;
        }
    }
    detail::set_int8_max_inputs(int8_max);
    std::printf("kernels %s (best on this CPU: %s); threads 1 and %d; RAM set %lld MB\n",
                matmul_isa_name(matmul_isa()), matmul_isa_name(matmul_best_isa()), threads,
                static_cast<long long>(ram_mb));

    // One arena for all the matrices: the largest record twice, or ram_mb, whichever is more.
    uint64_t largest = 0;
    for (const Shape& s : kShapes)
        for (const int bits : {2, 4, 8, 16})
            largest = std::max(largest, pack::matrix_layout(static_cast<uint64_t>(s.rows),
                                                            static_cast<uint64_t>(s.cols), bits, 64).bytes());
    const uint64_t arena_bytes = std::max<uint64_t>(static_cast<uint64_t>(ram_mb) << 20, 2 * largest + 4096);
    std::unique_ptr<uint16_t[]> arena(new uint16_t[arena_bytes / 2]);
    // every 16-bit value is a bf16 in [2^-8, 2^-7): no NaNs or denormals in scales or weights
    for (uint64_t i = 0, v = 12345; i < arena_bytes / 2; ++i) {
        v = v * 6364136223846793005ull + 1442695040888963407ull;
        arena[i] = static_cast<uint16_t>(0x3B80u | ((v >> 40) & 0x7Fu));
    }
    const auto* base = reinterpret_cast<const std::byte*>(arena.get());

    std::vector<float> x(static_cast<size_t>(128 * 4096));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 1000) / 500.0f - 1.0f;
    std::vector<float> y(static_cast<size_t>(128) * 151936);

    ThreadPool one(1), all(threads);
    // The fixed cost of one parallel loop (a decode step runs several per layer): one empty
    // chunk per thread.
    const double t_fork = time_per_call(seconds, [&](int64_t) { all.parallel_for(threads, 1, [](int64_t, int64_t) {}); });
    std::printf("fork-join: %.2f us per parallel loop of %d threads\n", t_fork * 1e6, threads);
    std::printf("%-15s %5s %4s %7s %3s %11s %9s %9s\n", "shape", "bits", "n", "data", "thr", "us/product",
                "GB/s", "GFLOP/s");
    for (const Shape& s : kShapes) {
        if (!only.empty() && only != s.name) continue;
        for (const int bits : {2, 4, 8, 16}) {
            const pack::MatrixLayout l =
                pack::matrix_layout(static_cast<uint64_t>(s.rows), static_cast<uint64_t>(s.cols), bits, 64);
            const uint64_t stride = (l.bytes() + 4095) / 4096 * 4096;
            const int64_t copies = static_cast<int64_t>(arena_bytes / stride);
            const WeightMatrix hot = view(base, l);
            const double gb = static_cast<double>(hot.bytes()) / 1e9;
            auto report = [&](int64_t n, const char* data, ThreadPool& pool, double t) {
                std::printf("%-15s %5d %4lld %7s %3d %11.1f %9.2f %9.1f\n", s.name, bits, static_cast<long long>(n),
                            data, pool.size(), t * 1e6, gb / t, matmul_flops(hot, n) / t / 1e9);
                std::fflush(stdout);
            };
            for (ThreadPool* pool : {&one, &all}) {
                if (pool == &all && threads == 1) continue;
                MatmulInput in(x.data(), 1, s.cols);
                const double t_hot = time_per_call(seconds, [&](int64_t) { matmul(*pool, hot, in, y.data()); });
                report(1, "hot", *pool, t_hot);
                if (copies >= 2) {
                    const double t_ram = time_per_call(seconds, [&](int64_t k) {
                        const WeightMatrix w = view(base + static_cast<uint64_t>(k % copies) * stride, l);
                        matmul(*pool, w, in, y.data());
                    });
                    report(1, "ram", *pool, t_ram);
                }
            }
            if (skip_prefill) continue;
            for (ThreadPool* pool : {&one, &all}) {
                if (pool == &all && threads == 1) continue;
                MatmulInput in(x.data(), batch, s.cols);
                // lm_head at n = 128 is 80 GFLOP: one product is enough
                const double t = time_per_call(s.rows > 100000 ? 0.0 : seconds,
                                               [&](int64_t) { matmul(*pool, hot, in, y.data()); });
                report(batch, "hot", *pool, t);
            }
        }
    }
    return 0;
}
