// `moerun`: runs packs.
#include "cli_main.hpp"
#include "commands.hpp"
#ifdef MOEPACK_WITH_CUDA
#include "cuda/gpu_decoder.hpp"
#endif

int main(int argc, char** argv) {
#ifdef MOEPACK_WITH_CUDA
    moepack::cuda::register_cuda_backend();
#endif
    CLI::App app{"moerun: run Mixture-of-Experts packs"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "moerun 0.1.0");
    using namespace moepack::tools;
    return run_cli(app, argc, argv, "moerun",
                   {
                       {"generate", add_generate_command(app)},
                       {"chat", add_chat_command(app)},
                       {"eval", add_eval_command(app)},
                       {"bench", add_bench_command(app)},
                       {"tokenize", add_tokenize_command(app)},
                       {"tokenize-bench", add_tokenize_bench_command(app)},
                   });
}
