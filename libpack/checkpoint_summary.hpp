// What a checkpoint holds, as `moepack inspect` reports it: the normalised config, the
// expert layout, every tensor with its role, and byte totals. Building the summary also
// checks that the tensors agree with config.json (every MoE layer has a router and all of
// its experts' projections).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "checkpoint.hpp"
#include "model_config.hpp"
#include "tensor_roles.hpp"

namespace moepack {

struct ClassifiedTensor {
    TensorRef ref;
    TensorClass cls;
    uint64_t weight_params = 0;  // logical weight elements (0 for scales, biases of quantization)
};

struct CheckpointSummary {
    ModelConfig config;
    ExpertLayout layout = ExpertLayout::none;
    std::vector<ClassifiedTensor> tensors;   // sorted by name
    uint64_t total_bytes = 0;                // all tensors, as stored
    uint64_t expert_bytes = 0;               // routed experts, as stored
    uint64_t skipped_bytes = 0;              // vision, MTP
    uint64_t non_expert_bytes = 0;           // everything else, as stored
    uint64_t expert_weight_params = 0;       // all routed experts, logical elements
    uint64_t expert_bias_params = 0;         // GPT-OSS expert biases
    int64_t num_expert_instances = 0;        // MoE layers x experts

    uint64_t per_expert_bytes() const;
    uint64_t per_expert_weight_params() const;
};

// Reads config.json and classifies and checks every tensor. The summary points into the
// checkpoint's tensor index: keep the checkpoint alive while using it. Throws moepack::Error.
CheckpointSummary summarize_checkpoint(const Checkpoint& checkpoint);

nlohmann::json to_json(const CheckpointSummary& summary, bool with_tensors);

}  // namespace moepack
