// Fork-join pool: see thread_pool.hpp.
#include "thread_pool.hpp"

#include <algorithm>

#include <chrono>

namespace moepack::engine {

namespace {

// Waiting threads poll without PAUSE: in virtual machines a PAUSE loop makes the hypervisor
// deschedule the vCPU (pause-loop exiting), which costs far more than the poll. After
// kSpinTime of polling a worker sleeps until the next loop.
constexpr auto kSpinTime = std::chrono::milliseconds(2);

template <class Done>
bool spin_until(Done done) {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
        for (int i = 0; i < 1024; ++i)
            if (done()) return true;
        if (std::chrono::steady_clock::now() - start > kSpinTime) return false;
    }
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    finished_ = std::make_unique<Finished[]>(static_cast<size_t>(threads));
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard lock(mutex_);
        stop_.store(true);
        generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks(int index) {
    // Chunk `index` first, without touching the shared counter (16 threads taking their first
    // chunk from it at once queue on its cache line), then the rest dynamically.
    for (int64_t begin = static_cast<int64_t>(index) * grain_; begin < count_;
         begin = next_.fetch_add(grain_, std::memory_order_relaxed)) {
        const int64_t end = std::min(count_, begin + grain_);
        try {
            (*fn_)(begin, end);
        } catch (...) {
            std::lock_guard lock(error_mutex_);
            if (!error_) error_ = std::current_exception();
        }
    }
}

void ThreadPool::worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
        if (!spin_until([&] {
                return generation_.load(std::memory_order_acquire) != seen || resting_.load(std::memory_order_relaxed);
            }) ||
            generation_.load(std::memory_order_acquire) == seen) {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return generation_.load() != seen; });
        }
        seen = generation_.load(std::memory_order_acquire);
        if (stop_.load()) return;
        run_chunks(index);
        finished_[index].generation.store(seen, std::memory_order_release);
    }
}

void ThreadPool::parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    if (count <= 0) return;
    grain = std::max<int64_t>(1, grain);
    if (workers_.empty() || count <= grain) {
        fn(0, count);
        return;
    }
    fn_ = &fn;
    count_ = count;
    grain_ = grain;
    next_.store(static_cast<int64_t>(size()) * grain, std::memory_order_relaxed);   // after the first chunks
    error_ = nullptr;
    resting_.store(false, std::memory_order_relaxed);
    uint64_t generation;
    {
        std::lock_guard lock(mutex_);
        generation = generation_.fetch_add(1, std::memory_order_acq_rel) + 1;
    }
    wake_.notify_all();
    run_chunks(0);
    auto all_finished = [&] {
        for (size_t i = 1; i <= workers_.size(); ++i)
            if (finished_[i].generation.load(std::memory_order_acquire) != generation) return false;
        return true;
    };
    while (!spin_until(all_finished)) {
    }
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
}

}  // namespace moepack::engine
