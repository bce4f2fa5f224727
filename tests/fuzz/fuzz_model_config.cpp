// libFuzzer target: arbitrary bytes as config.json, through the normaliser and the tensor
// classifier, and as a pack manifest's "model" object, through model_config_from_json (and
// back: what it accepts must round-trip through to_json). Valid results and moepack::Error
// are fine; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "error.hpp"
#include "model_config.hpp"
#include "tensor_roles.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto* text = reinterpret_cast<const char*>(data);
    nlohmann::json j = nlohmann::json::parse(text, text + size, nullptr, false);
    if (j.is_discarded()) return 0;
    try {
        const moepack::ModelConfig c = moepack::read_model_config(j, "fuzz");
        (void)moepack::to_json(c).dump();
        for (const char* name : {"model.layers.0.mlp.experts.0.gate_proj.weight", "model.layers.0.mlp.gate.weight",
                                 "model.layers.1.mlp.experts.gate_up_proj", "model.layers.0.self_attn.q_proj.weight",
                                 "lm_head.weight", "mtp.fc.weight", "model.layers.999999999999.mlp.gate.weight"}) {
            try {
                (void)moepack::classify_tensor(c, name);
            } catch (const moepack::Error&) {
            }
        }
    } catch (const moepack::Error&) {
    }
    try {
        const bool manifest = j.is_object() && j.contains("model");   // a whole manifest as input
        const moepack::ModelConfig m = moepack::model_config_from_json(manifest ? j["model"] : j, "fuzz");
        if (moepack::to_json(moepack::model_config_from_json(moepack::to_json(m), "fuzz")) != moepack::to_json(m))
            __builtin_trap();
    } catch (const moepack::Error&) {
    }
    return 0;
}
