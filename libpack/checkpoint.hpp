// A Hugging Face checkpoint as users download it: one .safetensors file, a directory
// with one, or a sharded directory with model.safetensors.index.json; plus config.json.
// Every tensor name is unique across shards; lookups go through one index.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "safetensors.hpp"

namespace moepack {

struct TensorRef {
    const SafetensorsFile* file;
    const TensorInfo* info;
};

class Checkpoint {
public:
    // `path` is a checkpoint directory or a single .safetensors file (then config.json is
    // looked for beside it). Throws moepack::Error naming the file that is wrong.
    static Checkpoint open(const std::string& path);

    const std::string& directory() const { return directory_; }
    // Parsed config.json; an empty object when the checkpoint has none.
    const nlohmann::json& config() const { return config_; }
    bool has_config() const { return has_config_; }
    const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
    // All tensors, sorted by name.
    const std::vector<TensorRef>& tensors() const { return sorted_; }
    // nullptr when absent.
    const TensorRef* find(const std::string& name) const;
    // Throws when absent, naming the tensor and the checkpoint.
    const TensorRef& get(const std::string& name) const;
    // Converts a floating tensor to float32 (resized to numel).
    void read_float32(const TensorRef& t, std::vector<float>& out) const;

private:
    void add_file(const std::string& path);
    void index_tensors();
    std::string directory_;
    nlohmann::json config_ = nlohmann::json::object();
    bool has_config_ = false;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::unordered_map<std::string, TensorRef> by_name_;
    std::vector<TensorRef> sorted_;
};

// Reads a small JSON file (config.json, index files) with a clear error on any problem.
nlohmann::json read_json_file(const std::string& path);

}  // namespace moepack
