// Eviction policies of the expert cache. Each slot's occupant gets a score from its access
// history; the victim is the unpinned slot with the lowest score:
//   lru   score = (last access)
//   lfu   score = (number of accesses, last access)
//   lru2  score = (second-to-last access, last access): LRU-K with K = 2, so experts used
//         once go before experts used twice
// All operations are O(log slots).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace moepack::engine {

enum class CachePolicyKind { lru, lfu, lru2 };
const char* to_string(CachePolicyKind k);
// "lru", "lfu", "lru2"; throws moepack::Error for anything else.
CachePolicyKind parse_cache_policy(const std::string& name);

class CachePolicy {
public:
    CachePolicy(CachePolicyKind kind, int64_t slots);
    // The slot's occupant was used (a hit, or the access that loaded it).
    void on_access(int64_t slot);
    // The slot's occupant left: forget its history.
    void on_evict(int64_t slot);
    // Pinned slots are never victims.
    void pin(int64_t slot);
    void unpin(int64_t slot);
    // The unpinned occupied slot with the lowest score, or -1 when there is none.
    int64_t victim() const;

private:
    using Score = std::tuple<uint64_t, uint64_t, int64_t>;   // (primary, secondary, slot)
    struct History {
        uint64_t last = 0, previous = 0, count = 0;
        bool occupied = false, pinned = false;
    };
    Score score(int64_t slot) const;
    bool candidate(int64_t slot) const { return history_[slot].occupied && !history_[slot].pinned; }

    CachePolicyKind kind_;
    uint64_t clock_ = 0;
    std::vector<History> history_;
    std::set<Score> candidates_;
};

}  // namespace moepack::engine
