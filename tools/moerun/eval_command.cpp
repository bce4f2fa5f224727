// `moerun eval --model PACK --tokens IDS --logits-out FILE`: runs the ids as one prompt and
// writes the logits of every position, float32 little-endian [n_tokens x vocab].
#include <cstdio>

#include "atomic_file.hpp"
#include "commands.hpp"
#include "engine_options.hpp"

namespace moepack::tools {
namespace {

struct EvalOptions {
    RunOptions run;
    std::string tokens, logits_out;
};

int run(EvalOptions& o) {
    const std::vector<int32_t> ids = parse_token_ids(o.tokens);
    auto engine = open_engine(o.run);
    std::vector<float> logits;
    engine->eval_prompt(ids, logits);
    AtomicFile out(o.logits_out);
    out.write(logits.data(), logits.size() * sizeof(float));
    out.commit();
    std::fprintf(stderr, "eval: %zu tokens x %lld logits -> %s\n", ids.size(),
                 static_cast<long long>(engine->vocab_size()), o.logits_out.c_str());
    return 0;
}

}  // namespace

Command add_eval_command(CLI::App& app) {
    auto opt = std::make_shared<EvalOptions>();
    CLI::App* cmd = app.add_subcommand("eval", "Write the logits of every position of a token sequence");
    add_run_options(cmd, opt->run);
    cmd->add_option("--tokens", opt->tokens, "comma-separated token ids, e.g. 1,2,3")->required();
    cmd->add_option("--logits-out", opt->logits_out, "output file: float32 little-endian [tokens x vocab]")->required();
    return [opt]() { return run(*opt); };
}

}  // namespace moepack::tools
