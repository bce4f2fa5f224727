// Writes safetensors files atomically.
#include "safetensors_writer.hpp"

#include <cstring>
#include <nlohmann/json.hpp>

#include "atomic_file.hpp"
#include "checked_math.hpp"
#include "error.hpp"
#include "safetensors.hpp"

namespace moepack {

std::string safetensors_header_json(const std::vector<TensorToWrite>& tensors,
                                    const std::map<std::string, std::string>& metadata) {
    // Written by hand so that the tensors keep their order (offsets follow it).
    std::string out = "{";
    if (!metadata.empty()) out += "\"__metadata__\":" + nlohmann::json(metadata).dump();
    uint64_t offset = 0;
    for (const auto& t : tensors) {
        auto numel = checked_numel(t.shape);
        if (!numel || *numel * dtype_size(t.dtype) != t.data.size())
            fail("tensor '", t.name, "': ", t.data.size(), " bytes of data do not match ",
                 dtype_name(t.dtype), " ", shape_string(t.shape));
        if (out.size() > 1) out += ",";
        out += nlohmann::json(t.name).dump() + ":{\"dtype\":\"" + std::string(dtype_name(t.dtype)) +
               "\",\"shape\":" + nlohmann::json(t.shape).dump() + ",\"data_offsets\":[" +
               std::to_string(offset) + "," + std::to_string(offset + t.data.size()) + "]}";
        offset += t.data.size();
    }
    return out + "}";
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata, bool align_data) {
    std::string header = safetensors_header_json(tensors, metadata);
    if (align_data) header.append((8 - header.size() % 8) % 8, ' ');
    const uint64_t len = header.size();
    AtomicFile out(path);
    out.write(&len, sizeof len);
    out.write(header.data(), header.size());
    for (const auto& t : tensors) out.write(t.data);
    out.commit();
}

}  // namespace moepack
