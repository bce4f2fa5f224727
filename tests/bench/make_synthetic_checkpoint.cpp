// Writes a synthetic qwen3_moe checkpoint with real layer shapes and random bf16 weights
// (default: Qwen3-30B-A3B's: hidden 2048, 32/4 heads of 128, 128 experts of 768, vocab
// 151936), one shard per decoder layer plus one for embeddings and head, streamed to disk
// so that any size fits in a few MB of memory. Norm weights are near 1 and embedding rows are
// large next to what the random layers add to them, so every token's hidden state stays its
// own and routing is near uniform across tokens (the expert caches' worst case, as with
// varied real text). For benchmarks only.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

struct Shape {
    int64_t layers = 2, hidden = 2048, heads = 32, kv_heads = 4, head_dim = 128;
    int64_t experts = 128, top_k = 8, expert_intermediate = 768, vocab = 151936;
};

struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    uint64_t bytes() const {
        uint64_t n = 2;
        for (auto d : shape) n *= static_cast<uint64_t>(d);
        return n;
    }
};

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

void write_shard(const std::filesystem::path& path, const std::vector<Tensor>& tensors, uint64_t seed) {
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
            if (t.shape.size() == 1)
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

int main(int argc, char** argv) {
    Shape s;
    std::string out_dir;
    CLI::App app{"Write a synthetic qwen3_moe checkpoint with real shapes and random bf16 weights"};
    app.add_option("-o,--output", out_dir, "checkpoint directory to create")->required();
    app.add_option("--layers", s.layers, "decoder layers")->capture_default_str();
    app.add_option("--hidden", s.hidden)->capture_default_str();
    app.add_option("--experts", s.experts)->capture_default_str();
    app.add_option("--expert-intermediate", s.expert_intermediate)->capture_default_str();
    app.add_option("--vocab", s.vocab)->capture_default_str();
    CLI11_PARSE(app, argc, argv);

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
        std::vector<Tensor> tensors;
        if (i == s.layers) {
            tensors = {{"model.embed_tokens.weight", {s.vocab, s.hidden}}, {"lm_head.weight", {s.vocab, s.hidden}},
                       {"model.norm.weight", {s.hidden}}};
        } else {
            const std::string p = "model.layers." + std::to_string(i) + ".";
            const int64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
            tensors = {{p + "input_layernorm.weight", {s.hidden}},
                       {p + "post_attention_layernorm.weight", {s.hidden}},
                       {p + "self_attn.q_proj.weight", {q, s.hidden}},
                       {p + "self_attn.k_proj.weight", {kv, s.hidden}},
                       {p + "self_attn.v_proj.weight", {kv, s.hidden}},
                       {p + "self_attn.o_proj.weight", {s.hidden, q}},
                       {p + "self_attn.q_norm.weight", {s.head_dim}},
                       {p + "self_attn.k_norm.weight", {s.head_dim}},
                       {p + "mlp.gate.weight", {s.experts, s.hidden}}};
            for (int64_t e = 0; e < s.experts; ++e) {
                const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
                tensors.push_back({x + "gate_proj.weight", {s.expert_intermediate, s.hidden}});
                tensors.push_back({x + "up_proj.weight", {s.expert_intermediate, s.hidden}});
                tensors.push_back({x + "down_proj.weight", {s.hidden, s.expert_intermediate}});
            }
        }
        for (const auto& t : tensors) {
            weight_map[t.name] = shard_name(i);
            total += t.bytes();
        }
        write_shard(dir / shard_name(i), tensors, static_cast<uint64_t>(i) + 1);
    }
    std::ofstream(dir / "model.safetensors.index.json")
        << nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(1);
    const nlohmann::json config = {{"architectures", {"Qwen3MoeForCausalLM"}},
                                   {"model_type", "qwen3_moe"},
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
                                   {"rope_theta", 1000000.0},
                                   {"tie_word_embeddings", false},
                                   {"torch_dtype", "bfloat16"}};
    std::ofstream(dir / "config.json") << config.dump(2);
    std::printf("wrote %s: %lld layers, %.2f GB of bf16 weights\n", out_dir.c_str(), static_cast<long long>(s.layers),
                static_cast<double>(total) / 1e9);
    return 0;
}
