// Machine probes for moerun bench: see machine_probes.hpp.
#include "machine_probes.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "dtype.hpp"
#include "error.hpp"

namespace moepack::tools {
namespace {

volatile int64_t probe_sink = 0;

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

double memory_read_bandwidth(engine::ThreadPool& pool) {
    const size_t count = (size_t{1} << 30) / sizeof(float);   // 1 GiB
    std::vector<float> data(count, 1.0f);
    const int64_t chunk = static_cast<int64_t>(count) / (pool.size() * 4);
    std::atomic<int64_t> sink{0};
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
        const auto start = std::chrono::steady_clock::now();
        pool.parallel_for(static_cast<int64_t>(count), chunk, [&](int64_t b, int64_t e) {
            float acc[16] = {};
            for (int64_t i = b; i + 16 <= e; i += 16)
                for (int k = 0; k < 16; ++k) acc[k] += data[static_cast<size_t>(i + k)];
            float s = 0;
            for (float v : acc) s += v;
            sink += static_cast<int64_t>(s);
        });
        best = std::max(best, static_cast<double>(count * sizeof(float)) / seconds_since(start));
    }
    probe_sink = sink.load();   // keeps the reads from being optimised away
    return best;
}

double expert_read_bandwidth(const Pack& pack, bool direct, int threads, int samples) {
    const auto& layers = pack.expert_layers();
    if (layers.empty()) return 0;
    const uint64_t length = direct ? pack.expert_layout().stride : pack.expert_layout().bytes;
    std::vector<int> fds;
    for (const auto& l : layers) {
        const std::string path = pack.path_of(l.file);
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
        if (fd < 0) {
            for (int f : fds) ::close(f);
            fail(path, ": cannot open: ", std::strerror(errno));
        }
        fds.push_back(fd);
    }
    std::mt19937_64 rng(7);
    std::vector<std::pair<size_t, int64_t>> picks;
    for (int i = 0; i < samples; ++i)
        picks.push_back({rng() % layers.size(), static_cast<int64_t>(rng() % static_cast<uint64_t>(pack.num_experts()))});
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < std::max(1, threads); ++t)
        pool.emplace_back([&] {
            void* buffer = nullptr;
            if (::posix_memalign(&buffer, 4096, length) != 0) {
                failed = true;
                return;
            }
            for (size_t i; (i = next++) < picks.size();) {
                const auto [layer, expert] = picks[i];
                const uint64_t offset = layers[layer].experts[static_cast<size_t>(expert)].offset;
                if (::pread(fds[layer], buffer, length, static_cast<off_t>(offset)) != static_cast<ssize_t>(length))
                    failed = true;
            }
            std::free(buffer);
        });
    for (auto& t : pool) t.join();
    const double elapsed = seconds_since(start);
    for (int f : fds) ::close(f);
    if (failed) fail(pack.directory(), ": expert read probe failed");
    return static_cast<double>(length) * static_cast<double>(samples) / elapsed;
}

double matmul_rate(engine::ThreadPool& pool, int64_t rows, int64_t cols, int bits, int group_size, int64_t n) {
    // Every thread multiplies its own cache-resident copy of the matrix, with no fork-join
    // between products: the kernels' arithmetic rate on this machine.
    const auto layout = pack::matrix_layout(static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), bits, group_size);
    const int threads = pool.size();
    std::vector<std::vector<std::byte>> records(static_cast<size_t>(threads));
    std::mt19937 rng(3);
    for (auto& record : records) {   // random codes (or bf16 values), normal scales and biases
        record.resize(layout.bytes());
        auto* half = reinterpret_cast<uint16_t*>(record.data());
        for (size_t i = 0; i < record.size() / 2; ++i)
            half[i] = bits == 16 ? float_to_bf16(static_cast<float>(static_cast<int>(rng() % 201) - 100) * 1e-3f)
                                 : static_cast<uint16_t>(rng());
        if (bits != 16) {
            const uint64_t count = layout.scales_bytes() / 2;
            auto* scales = reinterpret_cast<uint16_t*>(record.data() + layout.scales_offset());
            auto* biases = reinterpret_cast<uint16_t*>(record.data() + layout.biases_offset());
            for (uint64_t i = 0; i < count; ++i) {
                scales[i] = float_to_bf16(0.01f);
                biases[i] = float_to_bf16(-0.05f);
            }
        }
    }
    std::vector<float> x(static_cast<size_t>(n * cols), 0.5f);
    std::atomic<int64_t> products{0};
    const auto start = std::chrono::steady_clock::now();
    pool.parallel_for(threads, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            const auto w = engine::WeightMatrix::from_record(records[static_cast<size_t>(t)].data(), layout);
            engine::MatmulInput in(x.data(), n, cols);
            in.prepare(w);
            std::vector<float> y(static_cast<size_t>(n * rows));
            int64_t done = 0;
            while (seconds_since(start) < 0.3) {
                engine::matmul_rows(w, in, y.data(), rows, 0, rows);
                ++done;
            }
            products += done;
        }
    });
    const double elapsed = seconds_since(start);
    const auto w = engine::WeightMatrix::from_record(records[0].data(), layout);
    return engine::matmul_flops(w, n) * static_cast<double>(products.load()) / elapsed;
}

}  // namespace moepack::tools
