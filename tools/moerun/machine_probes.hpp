// Measurements of the machine that `moerun bench` compares a run against: RAM read
// bandwidth, expert read bandwidth (the engine's own I/O path) and the rate of the matrix
// kernels on cache-resident weights of a given encoding.
#pragma once

#include <cstdint>

#include "cpu/matmul.hpp"
#include "pack_reader.hpp"
#include "thread_pool.hpp"

namespace moepack::tools {

// Bytes per second reading a buffer far larger than the caches, on every pool thread.
double memory_read_bandwidth(engine::ThreadPool& pool);

// Bytes per second reading `samples` random expert blocks of the pack with `threads`
// parallel preads (O_DIRECT when direct).
double expert_read_bandwidth(const Pack& pack, bool direct, int threads, int samples);

// Floating-point operations per second of the matrix kernels on every pool thread, each
// multiplying its own cache-resident [rows, cols] matrix in the pack's expert encoding (bits,
// group size) by n inputs.
double matmul_rate(engine::ThreadPool& pool, int64_t rows, int64_t cols, int bits, int group_size, int64_t n);

}  // namespace moepack::tools
