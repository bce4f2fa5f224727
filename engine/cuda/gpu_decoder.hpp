// The CUDA backend's model graph (moepack_cuda): register_cuda_backend() makes
// EngineOptions::backend = Backend::cuda available to the engine of this program.
#pragma once

namespace moepack::cuda {

// Registers the CUDA graph maker with the engine (call once, before Engine::open).
void register_cuda_backend();

}  // namespace moepack::cuda
