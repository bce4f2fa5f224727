// Writes a synthetic checkpoint with real layer shapes and random bf16 weights, one shard
// per decoder layer plus one for embeddings and head, streamed to disk so that any size fits
// in a few MB of memory. --arch picks the shapes (sizes given as options override them):
//   qwen3_moe    Qwen3-30B-A3B: hidden 2048, 32/4 heads of 128, 128 experts of 768, vocab 151936
//   qwen3_next   Qwen3-Next-80B-A3B: hidden 2048, 16/2 gated heads of 256, Gated DeltaNet with
//                16 key / 32 value heads of 128 (grouped in_proj_qkvz / in_proj_ba), 512
//                experts of 512 top-10 and a shared expert of 512, vocab 151936
//   qwen3_5_moe  Qwen3.5-397B-A17B's text model: hidden 4096, 32/2 gated heads of 256, Gated
//                DeltaNet with 16 key / 64 value heads of 128 (separate in_proj_qkv / z / b /
//                a), 512 experts of 1024 top-10 and a shared expert of 1024, vocab 248320
// The hybrid models put full attention on every fourth layer and on the last one (so that
// a checkpoint of a few layers has both kinds). Norm weights are near 1 (near 0 where the
// model applies 1 + w) and embedding rows are large next to what the random layers add to
// them, so every token's hidden state stays its own and routing is near uniform across
// tokens (the expert caches' worst case, as with varied real text). For benchmarks only.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    uint64_t bytes() const {
        uint64_t n = 2;
        for (auto d : shape) n *= static_cast<uint64_t>(d);
        return n;
    }
};

struct Shape {
    std::string arch = "qwen3_moe";
    int64_t layers = 2, hidden = 2048, heads = 32, kv_heads = 4, head_dim = 128;
    int64_t experts = 128, top_k = 8, expert_intermediate = 768, vocab = 151936;
    int64_t shared_intermediate = 0;                              // hybrid models
    int64_t key_heads = 0, value_heads = 0, key_dim = 128, value_dim = 128, conv = 4;
    bool hybrid() const { return arch != "qwen3_moe"; }
    bool full_attention(int64_t layer) const { return !hybrid() || (layer + 1) % 4 == 0 || layer + 1 == layers; }
};

Shape preset(const std::string& arch) {
    Shape s;
    s.arch = arch;
    if (arch == "qwen3_next") {
        s.heads = 16, s.kv_heads = 2, s.head_dim = 256, s.experts = 512, s.top_k = 10, s.expert_intermediate = 512;
        s.shared_intermediate = 512, s.key_heads = 16, s.value_heads = 32;
    } else if (arch == "qwen3_5_moe") {
        s.hidden = 4096, s.heads = 32, s.kv_heads = 2, s.head_dim = 256, s.experts = 512, s.top_k = 10;
        s.expert_intermediate = 1024, s.shared_intermediate = 1024, s.key_heads = 16, s.value_heads = 64;
        s.vocab = 248320;
    } else if (arch != "qwen3_moe") {
        throw std::runtime_error("--arch: expected qwen3_moe, qwen3_next or qwen3_5_moe, got " + arch);
    }
    return s;
}

// The tensors of decoder layer `i` (names of the checkpoint, before packing).
std::vector<Tensor> layer_tensors(const Shape& s, int64_t i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const int64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim, H = s.hidden;
    std::vector<Tensor> t = {{p + "input_layernorm.weight", {H}}, {p + "post_attention_layernorm.weight", {H}}};
    if (s.full_attention(i)) {
        const int64_t q_rows = s.hybrid() ? 2 * q : q;   // gated: [q | gate] per head
        t.insert(t.end(), {{p + "self_attn.q_proj.weight", {q_rows, H}},
                           {p + "self_attn.k_proj.weight", {kv, H}},
                           {p + "self_attn.v_proj.weight", {kv, H}},
                           {p + "self_attn.o_proj.weight", {H, q}},
                           {p + "self_attn.q_norm.weight", {s.head_dim}},
                           {p + "self_attn.k_norm.weight", {s.head_dim}}});
    } else {
        const std::string a = p + "linear_attn.";
        const int64_t keys = s.key_heads * s.key_dim, values = s.value_heads * s.value_dim;
        if (s.arch == "qwen3_next")
            t.insert(t.end(), {{a + "in_proj_qkvz.weight", {2 * keys + 2 * values, H}},
                               {a + "in_proj_ba.weight", {2 * s.value_heads, H}}});
        else
            t.insert(t.end(), {{a + "in_proj_qkv.weight", {2 * keys + values, H}},
                               {a + "in_proj_z.weight", {values, H}},
                               {a + "in_proj_b.weight", {s.value_heads, H}},
                               {a + "in_proj_a.weight", {s.value_heads, H}}});
        t.insert(t.end(), {{a + "conv1d.weight", {2 * keys + values, 1, s.conv}},
                           {a + "A_log", {s.value_heads}},
                           {a + "dt_bias", {s.value_heads}},
                           {a + "norm.weight", {s.value_dim}},
                           {a + "out_proj.weight", {H, values}}});
    }
    t.push_back({p + "mlp.gate.weight", {s.experts, H}});
    if (s.shared_intermediate > 0)
        t.insert(t.end(), {{p + "mlp.shared_expert.gate_proj.weight", {s.shared_intermediate, H}},
                           {p + "mlp.shared_expert.up_proj.weight", {s.shared_intermediate, H}},
                           {p + "mlp.shared_expert.down_proj.weight", {H, s.shared_intermediate}},
                           {p + "mlp.shared_expert_gate.weight", {1, H}}});
    for (int64_t e = 0; e < s.experts; ++e) {
        const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
        t.push_back({x + "gate_proj.weight", {s.expert_intermediate, H}});
        t.push_back({x + "up_proj.weight", {s.expert_intermediate, H}});
        t.push_back({x + "down_proj.weight", {H, s.expert_intermediate}});
    }
    return t;
}


// Random bf16 values of magnitude below about 0.06, from a xorshift generator.
void fill_random(std::vector<uint16_t>& buf, uint64_t& state) {
    for (auto& v : buf) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // sign, exponent 118..122 (2^-9 .. 2^-5), 7 random mantissa bits
        const auto r = static_cast<uint32_t>(state >> 32);
        const uint32_t exponent = 118 + (r >> 8) % 5;
        v = static_cast<uint16_t>(((r & 1u) << 15) | (exponent << 7) | ((r >> 1) & 0x7f));
    }
}

void write_shard(const std::filesystem::path& path, const std::vector<Tensor>& tensors, uint64_t seed, bool one_plus) {
    nlohmann::json header = nlohmann::json::object();
    uint64_t offset = 0;
    for (const auto& t : tensors) {
        header[t.name] = {{"dtype", "BF16"}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes()}}};
        offset += t.bytes();
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = text.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    std::vector<uint16_t> buf(1 << 20);
    uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (const auto& t : tensors) {
        for (uint64_t left = t.bytes(); left > 0;) {
            fill_random(buf, state);
            // Norm weights near 1, as in trained models. Embeddings 2^7 times the other
            // weights' magnitudes: random attention averages over the context, which makes
            // its output alike for every token; with small embeddings that common part
            // dominates the residual stream and every token routes to the same few experts.
            const bool gated_norm = t.name.find("linear_attn.norm") != std::string::npos;   // applied as w
            if (t.name.ends_with("norm.weight") && one_plus && !gated_norm)
                std::fill(buf.begin(), buf.end(), uint16_t{0});   // 1 + w = 1
            else if (t.shape.size() == 1)
                for (auto& v : buf) v = static_cast<uint16_t>(0x3F80 + (v & 0x0F));   // 1.0 .. 1.12
            else if (t.name == "model.embed_tokens.weight")
                for (auto& v : buf) v = static_cast<uint16_t>(v + (7 << 7));           // exponent + 7
            const uint64_t take = std::min<uint64_t>(left, buf.size() * 2);
            out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(take));
            left -= take;
        }
    }
    if (!out) throw std::runtime_error(path.string() + ": write failed");
}

}  // namespace

int main(int argc, char** argv) try {
    std::string arch = "qwen3_moe", out_dir;
    int64_t layers = 2, hidden = 0, experts = 0, expert_intermediate = 0, vocab = 0;
    CLI::App app{"Write a synthetic checkpoint with real shapes and random bf16 weights"};
    app.add_option("-o,--output", out_dir, "checkpoint directory to create")->required();
    app.add_option("--arch", arch, "qwen3_moe, qwen3_next or qwen3_5_moe")->capture_default_str();
    app.add_option("--layers", layers, "decoder layers")->capture_default_str();
    app.add_option("--hidden", hidden, "hidden size (default: the architecture's)");
    app.add_option("--experts", experts, "routed experts per layer (default: the architecture's)");
    app.add_option("--expert-intermediate", expert_intermediate, "expert width (default: the architecture's)");
    app.add_option("--vocab", vocab, "vocabulary (default: the architecture's)");
    CLI11_PARSE(app, argc, argv);
    Shape s = preset(arch);
    s.layers = layers;
    if (hidden) s.hidden = hidden;
    if (experts) s.experts = experts;
    if (expert_intermediate) s.expert_intermediate = expert_intermediate;
    if (vocab) s.vocab = vocab;

    const std::filesystem::path dir(out_dir);
    std::filesystem::create_directories(dir);
    nlohmann::json weight_map = nlohmann::json::object();
    const int64_t shards = s.layers + 1;
    auto shard_name = [&](int64_t i) {
        char name[64];
        std::snprintf(name, sizeof name, "model-%05lld-of-%05lld.safetensors", static_cast<long long>(i + 1),
                      static_cast<long long>(shards));
        return std::string(name);
    };
    uint64_t total = 0;
    for (int64_t i = 0; i < shards; ++i) {
        const std::vector<Tensor> tensors =
            i == s.layers ? std::vector<Tensor>{{"model.embed_tokens.weight", {s.vocab, s.hidden}},
                                                {"lm_head.weight", {s.vocab, s.hidden}},
                                                {"model.norm.weight", {s.hidden}}}
                          : layer_tensors(s, i);
        for (const auto& t : tensors) {
            weight_map[t.name] = shard_name(i);
            total += t.bytes();
        }
        write_shard(dir / shard_name(i), tensors, static_cast<uint64_t>(i) + 1, s.hybrid());
    }
    std::ofstream(dir / "model.safetensors.index.json")
        << nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(1);
    nlohmann::json config = {{"model_type", s.arch},
                             {"hidden_size", s.hidden},
                             {"num_hidden_layers", s.layers},
                             {"num_attention_heads", s.heads},
                             {"num_key_value_heads", s.kv_heads},
                             {"head_dim", s.head_dim},
                             {"intermediate_size", 6144},
                             {"moe_intermediate_size", s.expert_intermediate},
                             {"num_experts", s.experts},
                             {"num_experts_per_tok", s.top_k},
                             {"norm_topk_prob", true},
                             {"decoder_sparse_step", 1},
                             {"mlp_only_layers", nlohmann::json::array()},
                             {"vocab_size", s.vocab},
                             {"max_position_embeddings", 40960},
                             {"rms_norm_eps", 1e-6},
                             {"rope_theta", s.hybrid() ? 10000000.0 : 1000000.0},
                             {"tie_word_embeddings", false},
                             {"torch_dtype", "bfloat16"}};
    if (s.hybrid()) {
        nlohmann::json types = nlohmann::json::array();
        for (int64_t i = 0; i < s.layers; ++i) types.push_back(s.full_attention(i) ? "full_attention" : "linear_attention");
        config.update({{"layer_types", types},
                       {"partial_rotary_factor", 0.25},
                       {"shared_expert_intermediate_size", s.shared_intermediate},
                       {"linear_num_key_heads", s.key_heads},
                       {"linear_num_value_heads", s.value_heads},
                       {"linear_key_head_dim", s.key_dim},
                       {"linear_value_head_dim", s.value_dim},
                       {"linear_conv_kernel_dim", s.conv}});
    }
    config["architectures"] = {s.arch == "qwen3_moe"    ? "Qwen3MoeForCausalLM"
                               : s.arch == "qwen3_next" ? "Qwen3NextForCausalLM"
                                                        : "Qwen3_5MoeForCausalLM"};
    if (s.arch == "qwen3_5_moe") config["model_type"] = "qwen3_5_moe_text";
    std::ofstream(dir / "config.json") << config.dump(2);
    std::printf("wrote %s: %s, %lld layers, %.2f GB of bf16 weights\n", out_dir.c_str(), s.arch.c_str(),
                static_cast<long long>(s.layers), static_cast<double>(total) / 1e9);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "make_synthetic_checkpoint: error: %s\n", e.what());
    return 1;
}
