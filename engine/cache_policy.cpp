// Expert cache eviction policies: see cache_policy.hpp.
#include "cache_policy.hpp"

#include "error.hpp"

namespace moepack::engine {

const char* to_string(CachePolicyKind k) {
    switch (k) {
        case CachePolicyKind::lru: return "lru";
        case CachePolicyKind::lfu: return "lfu";
        case CachePolicyKind::lru2: return "lru2";
    }
    return "?";
}

CachePolicyKind parse_cache_policy(const std::string& name) {
    for (auto k : {CachePolicyKind::lru, CachePolicyKind::lfu, CachePolicyKind::lru2})
        if (name == to_string(k)) return k;
    fail("unknown cache policy '", name, "' (expected lru, lfu or lru2)");
}

CachePolicy::CachePolicy(CachePolicyKind kind, int64_t slots) : kind_(kind), history_(static_cast<size_t>(slots)) {}

CachePolicy::Score CachePolicy::score(int64_t slot) const {
    const History& h = history_[slot];
    switch (kind_) {
        case CachePolicyKind::lru: return {h.last, 0, slot};
        case CachePolicyKind::lfu: return {h.count, h.last, slot};
        case CachePolicyKind::lru2: return {h.previous, h.last, slot};
    }
    return {};
}

void CachePolicy::on_access(int64_t slot) {
    if (candidate(slot)) candidates_.erase(score(slot));
    History& h = history_[slot];
    h.occupied = true;
    h.previous = h.last;
    h.last = ++clock_;
    ++h.count;
    if (candidate(slot)) candidates_.insert(score(slot));
}

void CachePolicy::on_evict(int64_t slot) {
    if (candidate(slot)) candidates_.erase(score(slot));
    history_[slot] = History{};
}

void CachePolicy::pin(int64_t slot) {
    if (candidate(slot)) candidates_.erase(score(slot));
    history_[slot].pinned = true;
}

void CachePolicy::unpin(int64_t slot) {
    history_[slot].pinned = false;
    if (candidate(slot)) candidates_.insert(score(slot));
}

int64_t CachePolicy::victim() const { return candidates_.empty() ? -1 : std::get<2>(*candidates_.begin()); }

}  // namespace moepack::engine
