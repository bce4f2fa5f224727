// The shape of a Gated DeltaNet layer's delta rule, one definition for the CPU layer
// (gated_deltanet.hpp) and the CUDA kernels (shaders/kernels.hpp): plain C++17, so that
// nvcc compiles it too.
#pragma once

#include <cstdint>

namespace moepack::engine {

struct DeltaRuleShape {
    int64_t nk = 0, nv = 0, dk = 0, dv = 0;   // key and value heads, their sizes (nv % nk == 0)
    float eps = 1e-6f;                        // of the gated RMSNorm
    // V: the value heads' outputs (o and z of a token)
    int64_t width() const { return nv * dv; }
    // C: the convolution's channels, a token's q, k and v heads [q | k | v]
    int64_t channels() const { return 2 * nk * dk + width(); }
};

}  // namespace moepack::engine
