// KV cache and recurrent state storage: see kv_cache.hpp.
#include "kv_cache.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "checked_math.hpp"
#include "error.hpp"

namespace moepack::engine {

KvCache::KvCache(int64_t layers, int64_t context, int64_t kv_dim, const std::vector<bool>& recurrent,
                 int64_t recurrent_floats)
    : context_(context), kv_dim_(kv_dim), recurrent_floats_(recurrent_floats), recurrent_(recurrent) {
    if (!recurrent_.empty() && static_cast<int64_t>(recurrent_.size()) != layers)
        fail("KV cache: ", recurrent_.size(), " layer kinds for ", layers, " layers");
    auto kv_floats = checked_mul(static_cast<uint64_t>(context) * 2, static_cast<uint64_t>(kv_dim));
    if (!kv_floats) fail("KV cache: ", context, " positions of ", kv_dim, " values overflows");
    uint64_t floats = 0;
    for (int64_t l = 0; l < layers; ++l) {
        offsets_.push_back(static_cast<int64_t>(floats));
        auto next = checked_add(floats, is_recurrent(l) ? static_cast<uint64_t>(recurrent_floats) : *kv_floats);
        if (!next) fail("KV cache: ", layers, " layers x ", context, " positions overflows");
        floats = *next;
    }
    auto bytes = checked_mul(floats, uint64_t{sizeof(float)});
    if (!bytes) fail("KV cache: ", layers, " layers x ", context, " positions overflows");
    bytes_ = *bytes;
    if (bytes_ == 0) return;
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) fail("KV cache: cannot reserve ", bytes_, " bytes for ", context, " positions: ", std::strerror(errno));
    base_ = static_cast<float*>(p);
}

KvCache::~KvCache() {
    if (base_) ::munmap(base_, bytes_);
}

void KvCache::clear_recurrent() {
    for (int64_t l = 0; l < layers(); ++l)
        if (is_recurrent(l)) std::fill_n(recurrent(l), recurrent_floats_, 0.0f);
}

uint64_t KvCache::bytes_used(int64_t positions) const {
    uint64_t bytes = 0;
    for (int64_t l = 0; l < layers(); ++l)
        bytes += is_recurrent(l) ? static_cast<uint64_t>(recurrent_floats_) * sizeof(float)
                                 : 2 * static_cast<uint64_t>(positions) * static_cast<uint64_t>(kv_dim_) * sizeof(float);
    return bytes;
}

}  // namespace moepack::engine
