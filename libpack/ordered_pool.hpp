// Runs produce(i) for i in [0, count) on `threads` workers and consume(i, result) on the
// calling thread in index order, with at most `window` results waiting: parallel work,
// sequential output (one streaming checksum, sequential writes), bounded memory.
// The first exception from any produce or consume stops the run and is rethrown.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace moepack {

template <class Result, class Produce, class Consume>
void ordered_parallel(size_t count, int threads, size_t window, Produce produce, Consume consume) {
    std::mutex mutex;
    std::condition_variable changed;
    std::map<size_t, Result> ready;
    size_t next_claim = 0, next_consume = 0;
    std::exception_ptr error;
    window = std::max<size_t>(window, 1);

    auto worker = [&] {
        for (;;) {
            size_t i;
            {
                std::unique_lock lock(mutex);
                changed.wait(lock, [&] { return error || next_claim >= count || next_claim < next_consume + window; });
                if (error || next_claim >= count) return;
                i = next_claim++;
            }
            try {
                Result r = produce(i);
                std::lock_guard lock(mutex);
                ready.emplace(i, std::move(r));
            } catch (...) {
                std::lock_guard lock(mutex);
                if (!error) error = std::current_exception();
            }
            changed.notify_all();
        }
    };
    std::vector<std::thread> pool;
    const int n = std::max(1, std::min<int>(threads, static_cast<int>(std::min<size_t>(count, 1u << 16))));
    for (int t = 0; t < n; ++t) pool.emplace_back(worker);
    while (true) {
        Result r;
        {
            std::unique_lock lock(mutex);
            changed.wait(lock, [&] { return error || next_consume >= count || ready.count(next_consume); });
            if (error || next_consume >= count) break;
            auto node = ready.extract(next_consume);
            r = std::move(node.mapped());
        }
        try {
            consume(next_consume, std::move(r));
        } catch (...) {
            std::lock_guard lock(mutex);
            error = std::current_exception();
        }
        {
            std::lock_guard lock(mutex);
            ++next_consume;
        }
        changed.notify_all();
    }
    changed.notify_all();
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace moepack

namespace moepack {

// Runs fn(i) for i in [0, count) on `threads` workers; rethrows the first exception.
template <class Fn>
void parallel_for(size_t count, int threads, Fn fn) {
    ordered_parallel<char>(count, threads, static_cast<size_t>(std::max(threads, 1)) * 2,
                           [&](size_t i) { fn(i); return char{}; }, [](size_t, char) {});
}

}  // namespace moepack
