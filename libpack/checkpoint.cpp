// Opens single-file and sharded safetensors checkpoints and indexes their tensors.
#include "checkpoint.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "error.hpp"
#include "mapped_file.hpp"

namespace moepack {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr uint64_t kMaxJsonFileBytes = 256ull << 20;

bool is_plain_file_name(const std::string& name) {
    return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
}

}  // namespace

json read_json_file(const std::string& path) {
    MappedFile map(path);
    auto bytes = map.bytes();
    if (bytes.size() > kMaxJsonFileBytes)
        fail(path, ": ", bytes.size(), " bytes is too large for a JSON file (limit ",
             kMaxJsonFileBytes, ")");
    const auto* text = reinterpret_cast<const char*>(bytes.data());
    json j = json::parse(text, text + bytes.size(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) fail(path, ": not valid UTF-8 JSON");
    if (!j.is_object()) fail(path, ": expected a JSON object, got ", j.type_name());
    return j;
}

Checkpoint Checkpoint::open(const std::string& path) {
    Checkpoint ck;
    std::error_code ec;
    const fs::path p(path);
    if (!fs::exists(p, ec)) fail(path, ": no such file or directory");
    std::vector<std::string> shards;
    if (fs::is_directory(p, ec)) {
        ck.directory_ = p.string();
        const fs::path index = p / kIndexFile;
        if (fs::exists(index, ec)) {
            json j = read_json_file(index.string());
            if (!j.contains("weight_map") || !j["weight_map"].is_object())
                fail(index.string(), ": missing the \"weight_map\" object");
            std::map<std::string, std::set<std::string>> expected;  // shard -> tensors
            for (const auto& [tensor, shard] : j["weight_map"].items()) {
                if (!shard.is_string() || !is_plain_file_name(shard.get<std::string>()))
                    fail(index.string(), ": tensor '", tensor,
                         "' maps to an invalid shard name ", shard.dump());
                expected[shard.get<std::string>()].insert(tensor);
            }
            if (expected.empty()) fail(index.string(), ": \"weight_map\" is empty");
            for (const auto& [shard, names] : expected) {
                const fs::path shard_path = p / shard;
                if (!fs::exists(shard_path, ec))
                    fail(index.string(), ": shard '", shard, "' (holding tensor '", *names.begin(),
                         "') does not exist");
                ck.add_file(shard_path.string());
                const auto& file = *ck.files_.back();
                for (const auto& name : names)
                    if (!file.find(name))
                        fail(index.string(), ": tensor '", name, "' is mapped to shard '", shard,
                             "', which does not contain it");
                for (const auto& t : file.tensors())
                    if (!names.count(t.name))
                        fail(shard_path.string(), ": tensor '", t.name, "' is not mapped to this shard by ",
                             kIndexFile);
            }
        } else {
            for (const auto& entry : fs::directory_iterator(p, ec))
                if (entry.path().extension() == ".safetensors") shards.push_back(entry.path().string());
            if (ec) fail(path, ": cannot list directory: ", ec.message());
            if (shards.empty()) fail(path, ": no .safetensors files in this directory");
            std::sort(shards.begin(), shards.end());
            for (const auto& s : shards) ck.add_file(s);
        }
    } else {
        ck.directory_ = p.has_parent_path() ? p.parent_path().string() : ".";
        ck.add_file(p.string());
    }
    const fs::path config = fs::path(ck.directory_) / "config.json";
    if (fs::exists(config, ec)) {
        ck.config_ = read_json_file(config.string());
        ck.has_config_ = true;
    }
    ck.index_tensors();
    return ck;
}

void Checkpoint::add_file(const std::string& path) {
    files_.push_back(std::make_unique<SafetensorsFile>(path));
}

void Checkpoint::index_tensors() {
    for (const auto& f : files_) {
        for (const auto& t : f->tensors()) {
            auto [it, inserted] = by_name_.emplace(t.name, TensorRef{f.get(), &t});
            if (!inserted)
                fail(f->path(), ": tensor '", t.name, "' is also in ", it->second.file->path());
        }
    }
    sorted_.reserve(by_name_.size());
    for (const auto& [name, ref] : by_name_) sorted_.push_back(ref);
    std::sort(sorted_.begin(), sorted_.end(),
              [](const TensorRef& a, const TensorRef& b) { return a.info->name < b.info->name; });
}

const TensorRef* Checkpoint::find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &it->second;
}

const TensorRef& Checkpoint::get(const std::string& name) const {
    const TensorRef* t = find(name);
    if (!t) fail(directory_, ": checkpoint has no tensor '", name, "'");
    return *t;
}

void Checkpoint::read_float32(const TensorRef& t, std::vector<float>& out) const {
    if (!dtype_is_float(t.info->dtype))
        fail(t.file->path(), ": tensor '", t.info->name, "' is ", dtype_name(t.info->dtype),
             ", expected a floating type");
    out.resize(t.info->numel);
    to_float32(t.info->dtype, t.file->data(*t.info).data(), t.info->numel, out.data());
}

}  // namespace moepack
