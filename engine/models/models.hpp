// The model graphs, one per architecture file; make_model (model.cpp) picks by family.
#pragma once

#include <memory>

#include "model.hpp"

namespace moepack::engine {

// qwen3_moe, mixtral, olmoe, qwen3_next, qwen3_5_moe (models/decoder.cpp).
std::unique_ptr<Model> make_decoder(const ModelContext& context);

}  // namespace moepack::engine
