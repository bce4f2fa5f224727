// A fixed pool of compute threads for fork-join loops. The calling thread takes part, so a
// pool of N threads starts N - 1 workers. Workers poll for 2 ms between loops (a decode step
// runs hundreds of short loops) and then sleep on a condition variable, or at once after
// rest().
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace moepack::engine {

class ThreadPool {
public:
    // threads <= 0: all hardware threads.
    explicit ThreadPool(int threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return static_cast<int>(workers_.size()) + 1; }

    // Calls fn(begin, end) on chunks of [0, count) of at most `grain` items, spread over the
    // pool; returns when all are done. The first exception thrown by fn is rethrown.
    void parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

    // Sends polling workers to sleep until the next loop: for the calling thread to call
    // before it waits on other threads (expert reads), which then have the cores.
    void rest() { resting_.store(true, std::memory_order_relaxed); }

private:
    void worker_loop(int index);   // index: 1.. (the calling thread is 0)
    void run_chunks(int index);

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::atomic<uint64_t> generation_{0};
    // Per worker, on its own cache line: the generation of the last loop it finished (the
    // calling thread reads them all instead of 15 threads decrementing one shared counter).
    struct alignas(64) Finished {
        std::atomic<uint64_t> generation{0};
    };
    std::unique_ptr<Finished[]> finished_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> resting_{false};
    // The current loop.
    const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
    int64_t count_ = 0, grain_ = 1;
    std::atomic<int64_t> next_{0};
    std::mutex error_mutex_;
    std::exception_ptr error_;
};

}  // namespace moepack::engine
