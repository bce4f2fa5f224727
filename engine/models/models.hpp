// The model graphs, one per architecture file; make_model (model.cpp) picks by family.
#pragma once

#include <memory>

#include "model.hpp"

namespace moepack::engine {

// qwen3_moe, mixtral, olmoe (models/gqa_moe.cpp).
std::unique_ptr<Model> make_gqa_moe_decoder(const ModelContext& context);

}  // namespace moepack::engine
