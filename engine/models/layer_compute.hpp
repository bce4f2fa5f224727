// What every block of a decoder graph needs around the kernels: products that share one
// prepared input, loops over a batch's rows, and the phase timing, FLOP and byte counts the
// benchmark reports.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <utility>

#include "cpu/matmul.hpp"
#include "model.hpp"

namespace moepack::engine {

// Adds the wall time of its scope to a PhaseTimes counter.
class Stopwatch {
public:
    explicit Stopwatch(uint64_t& total) : total_(total), start_(std::chrono::steady_clock::now()) {}
    ~Stopwatch() {
        total_ += static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count());
    }
    Stopwatch(const Stopwatch&) = delete;
    Stopwatch& operator=(const Stopwatch&) = delete;

private:
    uint64_t& total_;
    std::chrono::steady_clock::time_point start_;
};

class LayerCompute {
public:
    explicit LayerCompute(const ModelContext& ctx) : ctx_(ctx) {}

    const ModelContext& context() const { return ctx_; }
    ThreadPool& pool() const { return ctx_.pool; }
    PhaseTimes& times() const { return ctx_.times; }

    // y [n, w.rows] = x [n, w.cols] . w^T
    void product(const WeightMatrix& w, const float* x, int64_t n, float* y);
    // Several products of one input (same cols and group size) in one parallel loop.
    void products(const float* x, int64_t n, std::initializer_list<std::pair<const WeightMatrix*, float*>> outs);
    // fn(t0, t1) on rows [t0, t1) of a batch of n: on the calling thread for a few rows
    // (decode), spread over the pool for a prompt's.
    void for_rows(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

private:
    static constexpr int64_t kParallelRows = 8;
    ModelContext ctx_;
    MatmulInput input_;
};

}  // namespace moepack::engine
