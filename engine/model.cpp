// Model graph registry: the family in the normalised config picks the CPU graph; the CUDA
// backend's maker is registered from outside the engine library.
#include "model.hpp"

#include "error.hpp"
#include "models/models.hpp"

namespace moepack::engine {

namespace {
CudaBackend cuda;
}  // namespace

void set_cuda_backend(const CudaBackend& backend) { cuda = backend; }
const CudaBackend& cuda_backend() { return cuda; }

MissHandling parse_miss_handling(const std::string& name) {
    if (name == "auto") return MissHandling::automatic;
    if (name == "copy") return MissHandling::copy;
    if (name == "cpu") return MissHandling::cpu;
    fail("unknown handling of GPU expert misses '", name, "' (expected auto, copy or cpu)");
}

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
