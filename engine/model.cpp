// Model graph registry: the family in the normalised config picks the CPU graph; the CUDA
// backend's maker is registered from outside the engine library.
#include "model.hpp"

#include "error.hpp"
#include "models/models.hpp"

namespace moepack::engine {

namespace {
ModelFactory cuda_factory = nullptr;
}  // namespace

void set_cuda_model_factory(ModelFactory factory) { cuda_factory = factory; }
ModelFactory cuda_model_factory() { return cuda_factory; }

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
