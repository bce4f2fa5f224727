// `moepack inspect PACK`: the pack's files with sizes and checksums, its quantization,
// its model, and optionally every tensor.
#include <cstdio>
#include <filesystem>
#include <map>

#include "commands.hpp"
#include "error.hpp"
#include "pack_format.hpp"
#include "pack_reader.hpp"
#include "text_format.hpp"

namespace moepack::tools {

bool is_pack_directory(const std::string& path) {
    return std::filesystem::is_directory(path) && std::filesystem::exists(std::filesystem::path(path) / pack::kManifestName);
}

int inspect_pack(const std::string& path, bool json, bool tensors) {
    const auto p = Pack::open(path);
    const nlohmann::json& m = p->manifest();
    uint64_t total = 0;
    for (const auto& f : p->files()) total += f.bytes;
    std::map<std::string, std::pair<int, uint64_t>> encodings;   // "bf16" / "affine 4-bit g64" -> count, bytes
    for (const auto& t : p->tensors()) {
        std::string key = to_string(t.encoding);
        if (t.encoding == DenseEncoding::affine) key += concat(" ", t.bits, "-bit g", t.group_size);
        encodings[key].first++;
        encodings[key].second += t.piece.bytes;
    }
    if (json) {
        nlohmann::json j = {{"path", path},
                            {"format_version", m.at("format_version")},
                            {"producer", m.value("producer", nlohmann::json())},
                            {"source", m.value("source", nlohmann::json())},
                            {"architecture", m.at("model").value("model_type", "")},
                            {"total_bytes", total},
                            {"has_weights", p->has_weights()},
                            {"has_experts", p->has_experts()},
                            {"has_tokenizer", !p->tokenizer_file().empty()},
                            {"files", nlohmann::json::array()}};
        for (const auto& f : p->files())
            j["files"].push_back({{"path", f.path}, {"bytes", f.bytes}, {"xxh3", pack::hash_hex(f.xxh3)}});
        if (p->has_experts()) {
            const auto& l = p->expert_layout();
            j["experts"] = {{"bits", l.bits},         {"group_size", l.group_size}, {"num_layers", p->expert_layers().size()},
                            {"num_experts", p->num_experts()}, {"expert_bytes", l.bytes}, {"expert_stride", l.stride}};
        }
        if (p->has_weights()) {
            j["weights"] = nlohmann::json::object();
            for (const auto& [k, v] : encodings) j["weights"][k] = {{"tensors", v.first}, {"bytes", v.second}};
            if (tensors) j["tensors"] = m.at("weights").at("tensors");
        }
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    std::printf("pack            %s (format version %d)\n", path.c_str(), m.at("format_version").get<int>());
    std::printf("architecture    %s\n", m.at("model").value("model_type", "?").c_str());
    std::printf("source          %s\n", m.value("source", nlohmann::json::object()).value("path", "?").c_str());
    if (p->has_experts()) {
        const auto& l = p->expert_layout();
        std::printf("experts         %zu layers x %lld experts, %s, %s per expert (%s with alignment)\n",
                    p->expert_layers().size(), static_cast<long long>(p->num_experts()),
                    l.bits == 16 ? "bf16" : concat(l.bits, "-bit affine, group ", l.group_size).c_str(),
                    human_bytes(l.bytes).c_str(), human_bytes(l.stride).c_str());
    } else {
        std::printf("experts         (none in this pack)\n");
    }
    if (p->has_weights()) {
        std::printf("weights         %zu tensors\n", p->tensors().size());
        for (const auto& [k, v] : encodings)
            std::printf("  %-22s %4d tensors, %s\n", k.c_str(), v.first, human_bytes(v.second).c_str());
    } else {
        std::printf("weights         (none in this pack)\n");
    }
    std::printf("tokenizer       %s\n", p->tokenizer_file().empty() ? "(none: the checkpoint had no tokenizer.json)"
                                                                 : (p->tokenizer_file() + ", " + p->vocab_file()).c_str());
    std::printf("files           %zu, %s, every file, tensor and expert with an XXH3-64 checksum\n", p->files().size(),
                human_bytes(total).c_str());
    for (const auto& f : p->files())
        std::printf("  %-28s %12s  xxh3 %s\n", f.path.c_str(), human_bytes(f.bytes).c_str(), pack::hash_hex(f.xxh3).c_str());
    if (tensors && p->has_weights()) {
        std::printf("\n%-56s %-18s %-16s %12s\n", "tensor", "shape", "encoding", "bytes");
        for (const auto& t : p->tensors()) {
            std::string shape = "[";
            for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape[i]);
            shape += "]";
            std::string enc = to_string(t.encoding);
            if (t.encoding == DenseEncoding::affine) enc += concat(" ", t.bits, "b g", t.group_size);
            std::printf("%-56s %-18s %-16s %12llu\n", t.name.c_str(), shape.c_str(), enc.c_str(),
                        static_cast<unsigned long long>(t.piece.bytes));
        }
    }
    return 0;
}

}  // namespace moepack::tools
