// Classifies every tensor name of a checkpoint: which layer, what role (expert, router,
// shared expert, attention, norm, dense MLP, embedding, head) or skipped (vision tower,
// multi-token prediction), and for experts which expert, projection and part, in all three
// expert layouts:
//   per_expert   ...experts.{e}.{gate_proj|up_proj|down_proj|w1|w3|w2}.weight
//   fused        ...experts.gate_up_proj [E, 2I, H] / experts.down_proj [E, H, I]
//                (GPT-OSS: [E, H, 2I] / [E, I, H], or MXFP4 *_blocks / *_scales)
//   mlx_stacked  ...switch_mlp.{gate,up,down}_proj.{weight,scales,biases}
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "model_config.hpp"

namespace moepack {

enum class TensorRole { expert, router, shared_expert, attention, norm, dense_mlp, embedding, head, skipped };
enum class ExpertLayout { none, per_expert, fused, mlx_stacked };
enum class Projection { none, gate, up, down, gate_up };

struct TensorClass {
    TensorRole role = TensorRole::skipped;
    int64_t layer = -1;          // -1 for global tensors
    int64_t expert = -1;         // per_expert only; -1 when the tensor stacks all experts
    ExpertLayout layout = ExpertLayout::none;   // experts only
    Projection projection = Projection::none;   // experts only
    // What the tensor holds: "weight", "bias", "scales", "biases" (MLX), "blocks" (MXFP4),
    // "weight_scale_inv" (fp8 block scales), "correction_bias" (router), or the parameter's
    // own name for attention internals.
    std::string part;
    std::string skip_reason;     // skipped only
};

// Classifies `name` against the model description. Throws moepack::Error when the name
// fits no rule, names a layer or expert outside the config, or puts experts in a dense layer.
TensorClass classify_tensor(const ModelConfig& config, std::string_view name);

const char* to_string(TensorRole v);
const char* to_string(ExpertLayout v);
const char* to_string(Projection v);

}  // namespace moepack
