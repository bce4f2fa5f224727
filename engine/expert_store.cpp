// Expert cache and reads: see expert_store.hpp.
#include "expert_store.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "error.hpp"
#include "hashing.hpp"
#include "thread_pool.hpp"

namespace moepack::engine {

// Blocking O_DIRECT reads on their own threads, so compute threads never sleep in the kernel.
class ExpertStore::IoPool {
public:
    explicit IoPool(int threads) {
        for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { loop(); });
    }
    ~IoPool() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : threads_) t.join();
    }
    // Starts fn(i) for i in [0, count) on the pool and returns; wait() waits for them.
    void start(size_t count, std::function<void(size_t)> fn) {
        std::lock_guard lock(mutex_);
        fn_ = std::move(fn);
        next_ = 0;
        count_ = count;
        pending_ = count;
        error_ = nullptr;
        wake_.notify_all();
    }
    // Waits for the tasks of the last start(); rethrows the first error.
    void wait() {
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] { return pending_ == 0; });
        count_ = 0;
        fn_ = nullptr;
        if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    }
    bool idle() {
        std::lock_guard lock(mutex_);
        return pending_ == 0;
    }
    // Runs fn(i) for i in [0, count) on the pool and waits; rethrows the first error.
    void run(size_t count, std::function<void(size_t)> fn) {
        start(count, std::move(fn));
        wait();
    }

private:
    void loop() {
        std::unique_lock lock(mutex_);
        for (;;) {
            wake_.wait(lock, [&] { return stop_ || next_ < count_; });
            if (stop_) return;
            const size_t i = next_++;
            const auto* fn = &fn_;
            lock.unlock();
            std::exception_ptr error;
            try {
                (*fn)(i);
            } catch (...) {
                error = std::current_exception();
            }
            lock.lock();
            if (error && !error_) error_ = error;
            if (--pending_ == 0) done_.notify_all();
        }
    }
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    std::function<void(size_t)> fn_;   // the tasks of the last start()
    size_t next_ = 0, count_ = 0, pending_ = 0;
    bool stop_ = false;
    std::exception_ptr error_;
};

namespace {

// Smallest part of an expert block read by one request (a multiple of kExpertAlignment).
constexpr uint64_t kReadPartBytes = 256 * 1024;

int64_t slot_count(const Pack& pack, const ExpertStoreOptions& o) {
    const uint64_t stride = pack.expert_layout().stride;
    const uint64_t all = pack.expert_layers().size() * static_cast<uint64_t>(pack.num_experts());
    const uint64_t fit = stride == 0 ? 0 : o.cache_bytes / stride;
    return static_cast<int64_t>(std::max<uint64_t>(static_cast<uint64_t>(std::max<int64_t>(1, o.min_slots)),
                                                   std::min(fit, all)));
}

}  // namespace

ExpertStore::ExpertStore(const Pack& pack, const ExpertStoreOptions& options)
    : pack_(pack), options_(options), slots_(slot_count(pack, options)), policy_(options.policy, slots_) {
    if (!pack.has_experts()) fail(pack.directory(), ": the pack has no experts part");
    arena_bytes_ = static_cast<uint64_t>(slots_) * layout().stride;
    void* p = ::mmap(nullptr, arena_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        fail("expert cache: cannot reserve ", arena_bytes_, " bytes: ", std::strerror(errno));
    arena_ = static_cast<std::byte*>(p);
    // Huge pages where the kernel offers them: a slot of a few MB is then faulted in (and
    // zeroed) a few 2 MB pages at a time rather than in hundreds of 4 KB ones, and decode's
    // scattered reads of expert rows miss the TLB less. Advice only: failure changes nothing.
    ::madvise(arena_, arena_bytes_, MADV_HUGEPAGE);
    slot_info_.resize(static_cast<size_t>(slots_));
    for (int64_t s = slots_ - 1; s >= 0; --s) free_.push_back(s);
    const auto& layers = pack.expert_layers();
    for (size_t i = 0; i < layers.size(); ++i) {
        layer_index_[layers[i].layer] = i;
        verified_.emplace_back(static_cast<size_t>(pack.num_experts()), false);
        if (options.direct_io) {
            const std::string path = pack.path_of(layers[i].file);
            const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
            if (fd < 0) {
                const int err = errno;
                for (int f : fds_) ::close(f);
                ::munmap(arena_, arena_bytes_);
                fail(path, ": cannot open for direct I/O: ", std::strerror(err),
                     err == EINVAL ? " (the file system does not support O_DIRECT; run without --direct-io)" : "");
            }
            fds_.push_back(fd);
        } else {
            fds_.push_back(layers[i].fd);
        }
    }
    if (!copies_on_compute_threads()) io_ = std::make_unique<IoPool>(options.io_threads);
}

ExpertStore::~ExpertStore() {
    io_.reset();   // joins the readers (reads in flight finish first)
    if (options_.direct_io)
        for (int fd : fds_) ::close(fd);
    if (arena_) ::munmap(arena_, arena_bytes_);
}

int64_t ExpertStore::take_slot() {
    if (!free_.empty()) {
        const int64_t s = free_.back();
        free_.pop_back();
        return s;
    }
    const int64_t s = policy_.victim();
    if (s < 0) fail("expert cache: all ", slots_, " slots are pinned");
    where_.erase(slot_info_[s].key);
    slot_info_[s].key = -1;
    policy_.on_evict(s);
    return s;
}

void ExpertStore::read_part(int64_t slot, size_t layer_index, int64_t expert, uint64_t begin, uint64_t end) {
    const PackExpertLayer& layer = pack_.expert_layers()[layer_index];
    const PackPiece& piece = layer.experts[static_cast<size_t>(expert)];
    pread_exact(fds_[layer_index], {slot_data(slot) + begin, end - begin}, piece.offset + begin,
                concat(pack_.path_of(layer.file), ": layer ", layer.layer, " expert ", expert));
}

void ExpertStore::verify(int64_t slot, size_t layer_index, int64_t expert) {
    const PackExpertLayer& layer = pack_.expert_layers()[layer_index];
    const PackPiece& piece = layer.experts[static_cast<size_t>(expert)];
    const uint64_t got = hash_bytes({slot_data(slot), piece.bytes});
    if (got != piece.xxh3)
        fail(pack_.path_of(layer.file), ": layer ", layer.layer, " expert ", expert, ": checksum mismatch: expected ",
             pack::hash_hex(piece.xxh3), ", got ", pack::hash_hex(got), " (the pack is damaged; run moepack verify)");
}

void ExpertStore::acquire(int64_t layer, std::span<const int32_t> experts, std::span<const std::byte*> out,
                          std::span<bool> ready) {
    if (!pending_.empty()) fail("expert store: acquire() while reads are pending (call wait() first)");
    auto li = layer_index_.find(layer);
    if (li == layer_index_.end()) fail(pack_.directory(), ": the pack has no experts for layer ", layer);
    const size_t layer_index = li->second;
    for (size_t i = 0; i < experts.size(); ++i) {
        const int64_t e = experts[i];
        if (e < 0 || e >= pack_.num_experts())
            fail("layer ", layer, ": expert ", e, " out of range (the pack has ", pack_.num_experts(), ")");
        const int64_t key = layer * pack_.num_experts() + e;
        auto it = where_.find(key);
        int64_t slot;
        bool resident = true;
        if (it != where_.end()) {
            slot = it->second;
            if (!slot_info_[slot].pinned) ++stats_.hits;   // a repeat within this call is not a hit
            for (const Miss& m : pending_) resident &= m.slot != slot;
        } else {
            slot = take_slot();
            slot_info_[slot].key = key;
            where_[key] = slot;
            pending_.push_back({slot, e});
            resident = false;
            ++stats_.misses;
        }
        if (!slot_info_[slot].pinned) {
            slot_info_[slot].pinned = true;
            pinned_.push_back(slot);
            policy_.pin(slot);
        }
        policy_.on_access(slot);
        out[i] = slot_data(slot);
        if (!ready.empty()) ready[i] = resident;
    }
    if (pending_.empty()) return;
    pending_layer_ = layer_index;
    read_start_ = std::chrono::steady_clock::now();
    // Each block is read in parts so that a few misses still keep every reader busy (about two
    // parts per reader).
    const uint64_t length = options_.direct_io ? layout().stride : layout().bytes;
    const uint64_t readers = static_cast<uint64_t>(copies_on_compute_threads() ? options_.compute->size() : options_.io_threads);
    const uint64_t parts = std::max<uint64_t>(
        1, std::min<uint64_t>(length / kReadPartBytes, (2 * readers + pending_.size() - 1) / pending_.size()));
    const uint64_t part = pack::align_up((length + parts - 1) / parts, pack::kExpertAlignment);
    read_tasks_ = pending_.size() * parts;
    read_task_ = [this, parts, part, length, layer_index](size_t task) {
        const Miss& m = pending_[task / parts];
        const uint64_t begin = (task % parts) * part, end = std::min(length, begin + part);
        if (begin < end) read_part(m.slot, layer_index, m.expert, begin, end);
    };
    if (ready.empty() || !io_) {   // copies by the compute threads cannot run in the background
        wait();
        std::fill(ready.begin(), ready.end(), true);
        return;
    }
    io_->start(read_tasks_, read_task_);
    reads_started_ = true;
}

bool ExpertStore::copies_on_compute_threads() const { return options_.compute && !options_.direct_io; }

void ExpertStore::run_reads(size_t count, const std::function<void(size_t)>& task) {
    if (copies_on_compute_threads()) {
        options_.compute->parallel_for(static_cast<int64_t>(count), 1, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) task(static_cast<size_t>(i));
        });
        return;
    }
    if (options_.compute) options_.compute->rest();   // the readers wait on the device
    io_->run(count, task);
}

void ExpertStore::wait() {
    if (pending_.empty()) return;
    const size_t layer_index = pending_layer_;
    try {
        if (reads_started_) {
            reads_started_ = false;
            if (options_.compute && !io_->idle()) options_.compute->rest();   // the compute threads sleep
            io_->wait();
        } else {
            run_reads(read_tasks_, read_task_);
        }
        if (options_.verify)
            run_reads(pending_.size(), [&](size_t i) {
                if (!verified_[layer_index][static_cast<size_t>(pending_[i].expert)])
                    verify(pending_[i].slot, layer_index, pending_[i].expert);
            });
    } catch (...) {
        for (const Miss& m : pending_) {   // nothing half-read stays in the cache
            where_.erase(slot_info_[m.slot].key);
            slot_info_[m.slot] = Slot{};
            policy_.on_evict(m.slot);
            free_.push_back(m.slot);
        }
        pinned_.erase(std::remove_if(pinned_.begin(), pinned_.end(),
                                     [&](int64_t s) { return slot_info_[s].key == -1; }),
                      pinned_.end());
        pending_.clear();
        throw;
    }
    stats_.read_ns += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - read_start_).count());
    for (const Miss& m : pending_) {
        stats_.bytes_read += options_.direct_io ? layout().stride : layout().bytes;
        if (options_.verify && !verified_[layer_index][static_cast<size_t>(m.expert)]) {
            verified_[layer_index][static_cast<size_t>(m.expert)] = true;
            ++stats_.verified;
        }
    }
    pending_.clear();
}

bool ExpertStore::holds_every_expert() const {
    return static_cast<uint64_t>(slots_) >= pack_.expert_layers().size() * static_cast<uint64_t>(pack_.num_experts());
}

const std::byte* ExpertStore::peek(int64_t layer, int32_t expert) const {
    if (expert < 0 || expert >= pack_.num_experts()) return nullptr;
    const auto it = where_.find(layer * pack_.num_experts() + expert);
    if (it == where_.end()) return nullptr;
    for (const Miss& m : pending_)
        if (m.slot == it->second) return nullptr;
    return slot_data(it->second);
}

void ExpertStore::release_all() {
    wait();
    for (int64_t s : pinned_) {
        slot_info_[s].pinned = false;
        policy_.unpin(s);
    }
    pinned_.clear();
}

}  // namespace moepack::engine
