// KV cache storage: see kv_cache.hpp.
#include "kv_cache.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "checked_math.hpp"
#include "error.hpp"

namespace moepack::engine {

KvCache::KvCache(int64_t layers, int64_t context, int64_t kv_dim) : layers_(layers), context_(context), kv_dim_(kv_dim) {
    auto bytes = checked_mul(static_cast<uint64_t>(layers) * 2, static_cast<uint64_t>(context));
    if (bytes) bytes = checked_mul(*bytes, static_cast<uint64_t>(kv_dim) * sizeof(float));
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

uint64_t KvCache::bytes_used(int64_t positions) const {
    return static_cast<uint64_t>(layers_) * 2 * static_cast<uint64_t>(positions) * static_cast<uint64_t>(kv_dim_) *
           sizeof(float);
}

}  // namespace moepack::engine
