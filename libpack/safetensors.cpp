// Safetensors reader: header validation of untrusted files (never aborts; every problem is
// a moepack::Error naming the file and the tensor, with what was expected and what was found).
#include "safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "checked_math.hpp"
#include "error.hpp"

namespace moepack {
namespace {

using nlohmann::json;

std::vector<int64_t> parse_shape(const json& j, const std::string& where) {
    if (!j.is_array()) fail(where, ": \"shape\" must be an array of non-negative integers");
    std::vector<int64_t> shape;
    shape.reserve(j.size());
    for (const auto& d : j) {
        if (!d.is_number_unsigned() ||
            d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            fail(where, ": shape dimension ", d.dump(), " is not a non-negative 64-bit integer");
        shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
    }
    return shape;
}

TensorInfo parse_entry(const std::string& name, const json& entry, const std::string& label,
                       uint64_t data_start) {
    const std::string where = concat(label, ": tensor '", name, "'");
    if (!entry.is_object()) fail(where, ": entry must be a JSON object, got ", entry.type_name());
    for (const char* key : {"dtype", "shape", "data_offsets"})
        if (!entry.contains(key)) fail(where, ": missing \"", key, "\"");
    const json& dtype = entry["dtype"];
    if (!dtype.is_string()) fail(where, ": \"dtype\" must be a string");
    auto parsed = parse_dtype(dtype.get<std::string>());
    if (!parsed) fail(where, ": unknown dtype \"", dtype.get<std::string>(), "\"");

    TensorInfo t;
    t.name = name;
    t.dtype = *parsed;
    t.shape = parse_shape(entry["shape"], where);
    auto numel = checked_numel(t.shape);
    if (!numel) fail(where, ": shape ", shape_string(t.shape), " has more than 2^64 elements");
    auto nbytes = checked_mul(*numel, dtype_size(t.dtype));
    if (!nbytes) fail(where, ": shape ", shape_string(t.shape), " overflows a 64-bit byte size");
    t.numel = *numel;
    t.nbytes = *nbytes;

    const json& offs = entry["data_offsets"];
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() ||
        !offs[1].is_number_unsigned())
        fail(where, ": \"data_offsets\" must be two non-negative integers, got ", offs.dump());
    const uint64_t begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
    if (end < begin) fail(where, ": data_offsets [", begin, ", ", end, "] end before they begin");
    if (end - begin != t.nbytes)
        fail(where, ": data_offsets [", begin, ", ", end, "] hold ", end - begin, " bytes, expected ",
             t.nbytes, " for ", dtype_name(t.dtype), " ", shape_string(t.shape));
    auto absolute = checked_add(data_start, begin);
    if (!absolute) fail(where, ": data offset ", begin, " overflows");
    t.file_offset = *absolute;
    return t;
}

}  // namespace

std::string shape_string(std::span<const int64_t> shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

SafetensorsHeader parse_safetensors(std::span<const std::byte> file, const std::string& label) {
    if (file.size() < 8)
        fail(label, ": file is ", file.size(), " bytes, shorter than the 8-byte header length");
    uint64_t header_len;
    std::memcpy(&header_len, file.data(), 8);
    if (header_len > kSafetensorsMaxHeaderBytes)
        fail(label, ": header length ", header_len, " exceeds the limit of ",
             kSafetensorsMaxHeaderBytes, " bytes");
    if (header_len > file.size() - 8)
        fail(label, ": header length ", header_len, " runs past the end of the file (",
             file.size(), " bytes)");
    if (header_len < 2) fail(label, ": header length ", header_len, " is too short for JSON");

    const auto* text = reinterpret_cast<const char*>(file.data() + 8);
    // nlohmann keeps the last of duplicate keys; a callback sees each top-level key first.
    std::unordered_set<std::string> seen;
    std::string duplicate;
    auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
        if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
            auto key = parsed.get<std::string>();
            if (!seen.insert(key).second) duplicate = key;
        }
        return true;
    };
    json header = json::parse(text, text + header_len, on_event, /*allow_exceptions=*/false);
    if (header.is_discarded())
        fail(label, ": header is not valid UTF-8 JSON (", header_len, " bytes)");
    if (!duplicate.empty()) fail(label, ": tensor '", duplicate, "' appears twice in the header");
    if (!header.is_object()) fail(label, ": header must be a JSON object, got ", header.type_name());

    SafetensorsHeader out;
    out.data_start = 8 + header_len;
    const uint64_t data_size = file.size() - out.data_start;
    for (const auto& [name, entry] : header.items()) {
        if (name == "__metadata__") {
            if (!entry.is_object()) fail(label, ": __metadata__ must be an object of strings");
            for (const auto& [k, v] : entry.items()) {
                if (!v.is_string())
                    fail(label, ": __metadata__ value of \"", k, "\" must be a string, got ",
                         v.type_name());
                out.metadata[k] = v.get<std::string>();
            }
            continue;
        }
        out.tensors.push_back(parse_entry(name, entry, label, out.data_start));
    }

    // The tensors must tile the data buffer: sorted by offset, each starting where the
    // previous one ended, the last ending at the end of the file.
    std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
        return a.file_offset != b.file_offset ? a.file_offset < b.file_offset : a.nbytes < b.nbytes;
    });
    uint64_t expected = out.data_start;
    for (const auto& t : out.tensors) {
        const uint64_t rel = t.file_offset - out.data_start;
        if (t.file_offset < expected)
            fail(label, ": tensor '", t.name, "' at data offset ", rel,
                 " overlaps the previous tensor, which ends at ", expected - out.data_start);
        if (t.file_offset > expected)
            fail(label, ": tensor '", t.name, "' starts at data offset ", rel, ", expected ",
                 expected - out.data_start, " (gap in the data buffer)");
        if (t.nbytes > data_size - rel)
            fail(label, ": tensor '", t.name, "' ends at data offset ", rel + t.nbytes,
                 ", past the end of the data buffer (", data_size, " bytes)");
        expected = t.file_offset + t.nbytes;
    }
    if (expected != file.size())
        fail(label, ": tensors cover ", expected - out.data_start, " bytes of a ", data_size,
             "-byte data buffer (trailing bytes)");
    return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : map_(path), header_(parse_safetensors(map_.bytes(), path)) {
    index_.reserve(header_.tensors.size());
    for (size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

std::span<const std::byte> SafetensorsFile::data(const TensorInfo& t) const {
    return map_.bytes().subspan(t.file_offset, t.nbytes);
}

}  // namespace moepack
