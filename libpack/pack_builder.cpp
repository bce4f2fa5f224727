// Staging, resume, free-space checks, manifest assembly and the final rename of a pack.
#include "pack_builder.hpp"

#include <sys/statvfs.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <memory>
#include <optional>
#include <thread>

#include "atomic_file.hpp"
#include "checkpoint.hpp"
#include "error.hpp"
#include "hashing.hpp"
#include "pack_reader.hpp"
#include "pack_writer.hpp"
#include "tokenizer_export.hpp"

namespace moepack {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kProducerVersion = "0.1.0";
constexpr const char* kJobName = ".job.json";          // staging only: what is being built
constexpr const char* kSidecarSuffix = ".done.json";   // staging only: a finished piece

std::string read_file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, ": cannot open: ", std::strerror(errno));
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_small_file(const std::string& path, const std::string& text) {
    AtomicFile f(path);
    f.write(text.data(), text.size());
    f.commit();
}

void fsync_directory(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) fail(dir, ": cannot open directory: ", std::strerror(errno));
    const int rc = ::fsync(fd);
    ::close(fd);
    if (rc != 0) fail(dir, ": fsync failed: ", std::strerror(errno));
}

std::string gib(uint64_t bytes) { return concat(static_cast<double>(bytes) / (1u << 30), " GiB"); }

void check_free_space(const std::string& dir, uint64_t needed) {
    struct statvfs st {};
    if (::statvfs(dir.c_str(), &st) != 0) fail(dir, ": cannot query free space: ", std::strerror(errno));
    const uint64_t available = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
    if (available < needed)
        fail("not enough free space in ", dir, ": the pack needs ", needed, " bytes (", gib(needed), "), ",
             available, " bytes (", gib(available), ") are free");
}

// What the pack is made from, recorded in the manifest and compared on resume and merge.
struct Source {
    json provenance;
    PackPlan plan;
    uint64_t source_bytes_per_expert = 0;
    std::unique_ptr<Checkpoint> checkpoint;
    std::unique_ptr<CheckpointSummary> summary;
    std::unique_ptr<Pack> pack;
    std::string config_path;   // copied into the pack when present
};

Source open_source(const BuildRequest& r) {
    Source s;
    if (fs::exists(fs::path(r.source) / pack::kManifestName)) {
        if (r.weights) fail(r.source, ": a pack can be a source of experts only (repack-experts)");
        s.pack = Pack::open(r.source);
        if (!s.pack->has_experts()) fail(r.source, ": the source pack has no experts");
        const pack::ExpertBlockLayout& from = s.pack->expert_layout();
        s.plan.model = s.pack->manifest().at("model");
        s.plan.num_experts = s.pack->num_experts();
        s.plan.options = r.options;
        s.plan.expert = pack::expert_block_layout(from.hidden, from.intermediate, r.options.expert_bits,
                                                  r.options.group_size, from.has_bias);
        for (const auto& l : s.pack->expert_layers()) s.plan.layers.push_back({l.layer, {}});
        s.source_bytes_per_expert = from.bytes;
        s.provenance = {{"kind", "pack"},
                        {"path", fs::absolute(r.source).lexically_normal().string()},
                        {"manifest_xxh3", pack::hash_hex(hash_file(s.pack->path_of(std::string(pack::kManifestName))))}};
        const std::string config = s.pack->path_of(std::string(pack::kConfigName));
        if (fs::exists(config)) s.config_path = config;
        return s;
    }
    s.checkpoint = std::make_unique<Checkpoint>(Checkpoint::open(r.source));
    s.summary = std::make_unique<CheckpointSummary>(summarize_checkpoint(*s.checkpoint));
    s.plan = plan_pack(*s.summary, r.options);
    if (s.summary->num_expert_instances > 0)
        s.source_bytes_per_expert = s.summary->expert_bytes / static_cast<uint64_t>(s.summary->num_expert_instances);
    json files = json::array();
    for (const auto& f : s.checkpoint->files())
        files.push_back({{"name", fs::path(f->path()).filename().string()}, {"bytes", f->file_size()}});
    s.config_path = (fs::path(s.checkpoint->directory()) / pack::kConfigName).string();
    s.provenance = {{"kind", "checkpoint"},
                    {"path", fs::absolute(s.checkpoint->directory()).lexically_normal().string()},
                    {"files", files},
                    {"config_xxh3", pack::hash_hex(hash_file(s.config_path))}};
    return s;
}

json options_json(const BuildRequest& r) {
    json o = {{"weights", r.weights}, {"experts", r.experts}};
    if (r.weights) o["dense_bits"] = r.options.dense_bits;
    if (r.experts) o["expert_bits"] = r.options.expert_bits;
    o["group_size"] = r.options.group_size;
    o["method"] = r.options.method == QuantMethod::search ? "search" : "minmax";
    return o;
}

// Same checkpoint files and config (the path may differ).
bool same_source(const json& a, const json& b) {
    auto key = [](const json& p) { return json{p.value("kind", ""), p.value("files", json()), p.value("config_xxh3", ""),
                                               p.value("manifest_xxh3", "")}; };
    return key(a) == key(b);
}

// A piece finished in staging earlier whose file still hashes to its sidecar's checksum.
std::optional<json> reusable_piece(const std::string& staging, const std::string& file, const json& job) {
    const std::string sidecar = (fs::path(staging) / (file + kSidecarSuffix)).string();
    const std::string path = (fs::path(staging) / file).string();
    if (!fs::exists(sidecar) || !fs::exists(path)) return std::nullopt;
    json entry;
    try {
        entry = read_json_file(sidecar);
    } catch (const Error&) {
        return std::nullopt;
    }
    if (entry.value("job", json()) != job) return std::nullopt;
    if (fs::file_size(path) != entry.value("file_bytes", uint64_t{0})) return std::nullopt;
    if (pack::hash_hex(hash_file(path)) != entry.value("file_xxh3", std::string())) return std::nullopt;
    entry.erase("job");
    return entry;
}

void record_piece(const std::string& staging, const std::string& file, json entry, const json& job) {
    entry["job"] = job;
    write_small_file((fs::path(staging) / (file + kSidecarSuffix)).string(), entry.dump());
}

// Hard-links the files of an existing pack's part into staging (merge of parts).
void link_into(const Pack& existing, const std::string& relative, const std::string& staging) {
    const fs::path to = fs::path(staging) / relative;
    fs::create_directories(to.parent_path());
    std::error_code ec;
    fs::remove(to, ec);
    fs::create_hard_link(existing.path_of(relative), to, ec);
    if (ec) fs::copy_file(existing.path_of(relative), to, fs::copy_options::overwrite_existing);
}

}  // namespace

std::string staging_path(const std::string& output) {
    std::string out = output;
    while (out.size() > 1 && out.back() == '/') out.pop_back();
    return out + std::string(pack::kStagingSuffix);
}

BuildResult build_pack(const BuildRequest& r) {
    if (!r.weights && !r.experts) fail("nothing to build: neither weights nor experts requested");
    Source src = open_source(r);
    PackPlan& plan = src.plan;
    if (r.experts && plan.layers.empty()) fail(r.source, ": the model has no MoE layers, so no experts to pack");
    const int threads = r.options.threads > 0 ? r.options.threads
                                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    std::string output = r.output;
    while (output.size() > 1 && output.back() == '/') output.pop_back();
    const std::string staging = staging_path(output);

    // An existing output: replaced with force, extended when it is the same source's other part.
    std::unique_ptr<Pack> existing;
    if (fs::exists(output)) {
        if (!r.force) {
            try {
                existing = Pack::open(output);
            } catch (const Error&) {
                fail(output, ": already exists; pass --force to replace it");
            }
            const json& m = existing->manifest();
            const bool clash = (r.weights && existing->has_weights()) || (r.experts && existing->has_experts());
            if (clash || !same_source(m.value("source", json()), src.provenance))
                fail(output, ": a pack already exists there", clash ? " with the part being written" : " from another source",
                     "; pass --force to replace it");
        } else if (!fs::is_directory(output)) {
            fail(output, ": exists and is not a directory");
        }
    }

    const json job = {{"source", src.provenance}, {"options", options_json(r)}, {"format_version", pack::kFormatVersion}};
    if (fs::exists(staging)) {
        bool matches = false;
        if (r.resume) {
            try {
                matches = read_json_file((fs::path(staging) / kJobName).string()) == job;
            } catch (const Error&) {
            }
            if (!matches)
                fail(staging, ": holds an unfinished conversion with other sources or options; remove it or run "
                     "without --resume");
            // files a killed run was still writing
            std::vector<fs::path> leftovers;
            for (const auto& entry : fs::recursive_directory_iterator(staging))
                if (entry.path().filename().string().find(kAtomicTempMarker) != std::string::npos)
                    leftovers.push_back(entry.path());
            for (const auto& p : leftovers) fs::remove(p);
        } else {
            fs::remove_all(staging);
        }
    }
    fs::create_directories(fs::path(staging) / pack::kExpertsDir);
    write_small_file((fs::path(staging) / kJobName).string(), job.dump());

    // What is still to be written, for the free-space check and progress.
    BuildResult result;
    result.output = output;
    std::optional<json> weights_entry;
    std::vector<std::optional<json>> layer_entries(plan.layers.size());
    uint64_t bytes_to_write = 0, source_total = 0;
    if (r.weights) {
        weights_entry = reusable_piece(staging, std::string(pack::kWeightsName), job);
        if (!weights_entry) {
            bytes_to_write += plan.weights_file_bytes;
            for (const auto& d : plan.dense) source_total += d.source.file->data(*d.source.weight).size();
        }
    }
    if (r.experts) {
        for (size_t i = 0; i < plan.layers.size(); ++i) {
            layer_entries[i] = reusable_piece(staging, pack::expert_file_name(plan.layers[i].layer), job);
            if (!layer_entries[i]) {
                bytes_to_write += plan.expert_file_bytes();
                source_total += src.source_bytes_per_expert * static_cast<uint64_t>(plan.num_experts);
            }
        }
    }
    check_free_space(staging, bytes_to_write);

    std::atomic<uint64_t> done{0};
    const ProgressFn progress = [&](uint64_t bytes) {
        const uint64_t now = done.fetch_add(bytes) + bytes;
        if (r.progress) r.progress(now, source_total);
    };
    if (r.progress) r.progress(0, source_total);
    // The weights file (mostly I/O) is written while the experts (mostly compute) are encoded.
    // A piece is recorded and announced under one lock, so that the pieces recorded are
    // exactly those announced (after_piece may end the process).
    std::mutex piece_mutex;
    auto finished = [&](const std::string& piece, const json& entry) {
        std::lock_guard lock(piece_mutex);
        record_piece(staging, piece, entry, job);
        if (r.after_piece) r.after_piece(piece);
    };
    std::future<void> weights_job;
    if (r.weights) {
        if (weights_entry) {
            ++result.pieces_reused;
        } else {
            weights_job = std::async(std::launch::async, [&] {
                weights_entry = write_weights(plan, staging, threads, progress);
                finished(std::string(pack::kWeightsName), *weights_entry);
            });
            ++result.pieces_written;
        }
    }
    std::exception_ptr experts_error;
    if (r.experts) {
        try {
            std::unique_ptr<ExpertSource> expert_source;
            if (src.pack) expert_source = std::make_unique<PackExpertSource>(*src.pack);
            else expert_source = std::make_unique<CheckpointExpertSource>(plan, src.source_bytes_per_expert);
            for (size_t i = 0; i < plan.layers.size(); ++i) {
                if (layer_entries[i]) {
                    ++result.pieces_reused;
                    continue;
                }
                layer_entries[i] = write_expert_layer(plan, i, *expert_source, staging, threads, progress);
                const std::string file = layer_entries[i]->at("file").get<std::string>();
                ++result.pieces_written;
                finished(file, *layer_entries[i]);
            }
        } catch (...) {
            experts_error = std::current_exception();
        }
    }
    if (weights_job.valid()) weights_job.get();   // rethrows the weights' error first
    if (experts_error) std::rethrow_exception(experts_error);
    result.source_bytes = done.load();

    // config.json travels with the pack for reference.
    json files = json::array();
    if (!src.config_path.empty()) {
        const std::string text = read_file_bytes(src.config_path);
        write_small_file((fs::path(staging) / pack::kConfigName).string(), text);
        files.push_back({{"path", pack::kConfigName}, {"bytes", text.size()},
                         {"xxh3", pack::hash_hex(hash_bytes(std::as_bytes(std::span(text))))}});
    }

    // The tokenizer travels with the weights part, when the checkpoint has one.
    json tokenizer_section;
    if (r.weights && src.checkpoint &&
        fs::exists(fs::path(src.checkpoint->directory()) / "tokenizer.json")) {
        for (auto [name, is_vocab] : {std::pair{pack::kTokenizerName, false}, std::pair{pack::kVocabName, true}}) {
            const std::string path = (fs::path(staging) / name).string();
            if (is_vocab) export_vocab(src.checkpoint->directory(), path);
            else export_tokenizer(src.checkpoint->directory(), path);
            files.push_back({{"path", name}, {"bytes", fs::file_size(path)}, {"xxh3", pack::hash_hex(hash_file(path))}});
        }
        tokenizer_section = {{"tokenizer", pack::kTokenizerName}, {"vocab", pack::kVocabName}};
    }

    json manifest = {{"format", "moepack"},
                     {"format_version", pack::kFormatVersion},
                     {"producer", {{"name", "moepack"}, {"version", kProducerVersion}}},
                     {"source", src.provenance},
                     {"model", plan.model}};
    auto add_file = [&](const json& entry) {
        files.push_back({{"path", entry.at("file")}, {"bytes", entry.at("file_bytes")}, {"xxh3", entry.at("file_xxh3")}});
    };
    if (weights_entry) {
        add_file(*weights_entry);
        manifest["weights"] = {{"file", weights_entry->at("file")}, {"tensors", weights_entry->at("tensors")}};
    } else if (existing && existing->has_weights()) {
        link_into(*existing, std::string(pack::kWeightsName), staging);
        manifest["weights"] = existing->manifest().at("weights");
        if (existing->manifest().contains("tokenizer")) tokenizer_section = existing->manifest()["tokenizer"];
        for (const auto& f : existing->files())
            if (f.path == pack::kWeightsName || f.path == pack::kTokenizerName || f.path == pack::kVocabName) {
                if (f.path != pack::kWeightsName) link_into(*existing, f.path, staging);
                files.push_back({{"path", f.path}, {"bytes", f.bytes}, {"xxh3", pack::hash_hex(f.xxh3)}});
            }
    }
    if (!tokenizer_section.is_null()) manifest["tokenizer"] = tokenizer_section;
    if (r.experts) {
        const pack::ExpertBlockLayout& l = plan.expert;
        json layers = json::array();
        for (const auto& e : layer_entries) {
            add_file(*e);
            layers.push_back({{"layer", e->at("layer")}, {"file", e->at("file")}, {"experts", e->at("experts")}});
        }
        manifest["experts"] = {{"bits", l.bits}, {"group_size", l.group_size}, {"hidden", l.hidden},
                               {"intermediate", l.intermediate}, {"num_experts", plan.num_experts},
                               {"has_bias", l.has_bias}, {"expert_bytes", l.bytes}, {"expert_stride", l.stride},
                               {"layers", std::move(layers)}};
    } else if (existing && existing->has_experts()) {
        manifest["experts"] = existing->manifest().at("experts");
        for (const auto& l : existing->expert_layers()) link_into(*existing, l.file, staging);
        for (const auto& f : existing->files())
            if (f.path.starts_with(std::string(pack::kExpertsDir) + "/"))
                files.push_back({{"path", f.path}, {"bytes", f.bytes}, {"xxh3", pack::hash_hex(f.xxh3)}});
    }
    manifest["files"] = files;

    // Sidecars go; the manifest is written last, then the directory takes its final name.
    fs::remove(fs::path(staging) / kJobName);
    for (const auto& f : files) fs::remove(fs::path(staging) / (f.at("path").get<std::string>() + kSidecarSuffix));
    if (fs::is_empty(fs::path(staging) / pack::kExpertsDir)) fs::remove(fs::path(staging) / pack::kExpertsDir);
    write_small_file((fs::path(staging) / pack::kManifestName).string(), manifest.dump(1));
    fsync_directory(staging);
    const fs::path parent = fs::absolute(output).parent_path();
    if (fs::exists(output)) {
        const std::string old = output + ".replaced";
        fs::remove_all(old);
        fs::rename(output, old);
        fs::rename(staging, output);
        fs::remove_all(old);
    } else {
        fs::rename(staging, output);
    }
    fsync_directory(parent.string());
    for (const auto& f : files) result.pack_bytes += f.at("bytes").get<uint64_t>();
    return result;
}

}  // namespace moepack
