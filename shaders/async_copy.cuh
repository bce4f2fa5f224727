// Asynchronous copies from global to shared memory (cp.async, sm_80 and later): a kernel
// issues every copy of a tile at once, commits them as a group and waits for the group, so
// that the tile costs one memory round trip instead of one per dependent load. Device code,
// shared by gemm_int8.cu and attention.cu.
#pragma once

#include <cstdint>

namespace moepack::cuda::detail {

// 16 or 4 bytes global -> shared; src_bytes 0 fills zeros without reading.
__device__ inline void copy16(void* shared, const void* global, int src_bytes) {
    const auto at = static_cast<uint32_t>(__cvta_generic_to_shared(shared));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(at), "l"(global), "r"(src_bytes) : "memory");
}
__device__ inline void copy4(void* shared, const void* global, int src_bytes) {
    const auto at = static_cast<uint32_t>(__cvta_generic_to_shared(shared));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(at), "l"(global), "r"(src_bytes) : "memory");
}
// Closes the group of the copies issued since the last commit.
__device__ inline void commit_copies() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most Pending committed groups are still in flight (this thread's copies).
template <int Pending>
__device__ inline void wait_copies() {
    asm volatile("cp.async.wait_group %0;" ::"n"(Pending) : "memory");
}

}  // namespace moepack::cuda::detail
