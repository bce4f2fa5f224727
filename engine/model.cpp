// Model graph registry: the family in the normalised config picks the graph.
#include "model.hpp"

#include "error.hpp"
#include "models/models.hpp"

namespace moepack::engine {

std::unique_ptr<Model> make_model(const ModelContext& context) {
    switch (context.config.family) {
        case Family::qwen3_moe:
        case Family::mixtral:
        case Family::olmoe:
        case Family::qwen3_next:
        case Family::qwen3_5_moe: return make_decoder(context);
        case Family::deepseek_v3:
        case Family::gpt_oss: break;
    }
    fail("the engine does not run ", to_string(context.config.family), " models yet");
}

}  // namespace moepack::engine
