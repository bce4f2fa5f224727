// Kernel launches with programmatic dependent launch (Hopper): a kernel may be launched and
// spread over the SMs while the kernel before it on the stream is still finishing; it then
// waits in place (wait_for_inputs(), the first statement of every kernel here) until that
// kernel has completed and its writes are visible. The launch latency between the dozens of
// small kernels of a decode token overlaps their tails instead of adding up.
// MOEPACK_CUDA_PDL=0 launches plainly (for comparison).
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

namespace moepack::cuda::detail {

__device__ inline void wait_for_inputs() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

inline bool dependent_launches() {
    static const bool on = [] {
        const char* v = std::getenv("MOEPACK_CUDA_PDL");
        return !(v && std::strcmp(v, "0") == 0);
    }();
    return on;
}

// kernel<<<grid, block, shared, stream>>>(args...), allowed to start before the previous
// kernel on the stream ends. Errors are left for check_launch().
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared, cudaStream_t stream, Args&&... args) {
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared;
    config.stream = stream;
    config.attrs = attribute;
    config.numAttrs = dependent_launches() ? 1 : 0;
    cudaLaunchKernelEx(&config, kernel, static_cast<Args&&>(args)...);
}

}  // namespace moepack::cuda::detail
