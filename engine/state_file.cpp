// Saving and restoring an engine's context (formats/state.md): header, context tokens, last
// logits, then each attention layer's cached keys and values for the used positions or each
// linear-attention layer's recurrent state, then an XXH3-64 of everything before it. Written
// atomically; a file that does not match the pack, the model or the context size, or fails
// its checksum, is refused (one refused on its header leaves the context as it was, one that
// fails while being read leaves it empty).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "atomic_file.hpp"
#include "engine_impl.hpp"
#include "error.hpp"
#include "hashing.hpp"
#include "pack_reader.hpp"

namespace moepack::engine {

namespace {

constexpr std::array<char, 8> kStateMagic{'M', 'O', 'E', 'P', 'K', 'S', 'T', 'A'};
constexpr uint32_t kStateVersion = 2;   // 1: no recurrent states (R = 0), read as 2
constexpr size_t kStateHeaderBytes = 48;

struct StateHeader {
    uint64_t manifest_xxh3 = 0;
    uint32_t recurrent = 0;   // R: recurrent state values per linear-attention layer
    uint32_t num_layers = 0, kv_dim = 0, vocab = 0, has_logits = 0;
    uint64_t positions = 0;
};

template <class T>
void put(std::byte* at, T v) {
    std::memcpy(at, &v, sizeof v);   // the format is little-endian, as are the supported hosts
}
template <class T>
T get(const std::byte* at) {
    T v;
    std::memcpy(&v, at, sizeof v);
    return v;
}

uint64_t manifest_hash(const Pack& pack) { return hash_file(pack.path_of("manifest.json")); }

}  // namespace

void Engine::Impl::save(const std::string& path) const {
    StateHeader h{manifest_hash(*pack), static_cast<uint32_t>(kv->recurrent_floats()),
                  static_cast<uint32_t>(config.num_layers), static_cast<uint32_t>(kv->kv_dim()),
                  static_cast<uint32_t>(config.vocab_size), has_logits ? 1u : 0u, static_cast<uint64_t>(position())};
    std::array<std::byte, kStateHeaderBytes> header{};
    std::memcpy(header.data(), kStateMagic.data(), 8);
    put(header.data() + 8, kStateVersion);
    put(header.data() + 12, h.recurrent);
    put(header.data() + 16, h.manifest_xxh3);
    put(header.data() + 24, h.num_layers);
    put(header.data() + 28, h.kv_dim);
    put(header.data() + 32, h.vocab);
    put(header.data() + 36, h.has_logits);
    put(header.data() + 40, h.positions);
    model->context_to_host(position());
    AtomicFile out(path);
    StreamHash hash;
    auto write = [&](const void* data, size_t bytes) {
        std::span<const std::byte> s(static_cast<const std::byte*>(data), bytes);
        hash.update(s);
        out.write(s);
    };
    write(header.data(), header.size());
    write(context_tokens.data(), context_tokens.size() * sizeof(int32_t));
    if (has_logits) write(last_logits.data(), last_logits.size() * sizeof(float));
    const size_t layer_bytes = static_cast<size_t>(position()) * static_cast<size_t>(kv->kv_dim()) * sizeof(float);
    for (int64_t l = 0; l < config.num_layers; ++l) {
        if (kv->is_recurrent(l)) {
            write(kv->recurrent(l), static_cast<size_t>(kv->recurrent_floats()) * sizeof(float));
            continue;
        }
        write(kv->keys(l), layer_bytes);
        write(kv->values(l), layer_bytes);
    }
    const uint64_t digest = hash.digest();
    out.write(&digest, sizeof digest);
    out.commit();
}

void Engine::Impl::load(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) fail(path, ": cannot stat: ", std::strerror(errno));
    const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
    if (file_bytes < kStateHeaderBytes + 8)
        fail(path, ": not a moepack state file (", file_bytes, " bytes, shorter than a header)");
    std::array<std::byte, kStateHeaderBytes> header{};
    pread_exact(fd, header, 0, path);
    if (std::memcmp(header.data(), kStateMagic.data(), 8) != 0) fail(path, ": not a moepack state file (bad magic)");
    const uint32_t version = get<uint32_t>(header.data() + 8);
    if (version > kStateVersion)
        fail(path, ": state format version ", version, " is newer than this engine's (", kStateVersion, ")");
    if (version < 1) fail(path, ": unknown state format version ", version);
    StateHeader h{get<uint64_t>(header.data() + 16), get<uint32_t>(header.data() + 12), get<uint32_t>(header.data() + 24),
                  get<uint32_t>(header.data() + 28), get<uint32_t>(header.data() + 32), get<uint32_t>(header.data() + 36),
                  get<uint64_t>(header.data() + 40)};
    if (h.manifest_xxh3 != manifest_hash(*pack))
        fail(path, ": the state was saved with another pack (manifest checksum differs)");
    if (h.num_layers != config.num_layers || h.kv_dim != kv->kv_dim() || h.vocab != config.vocab_size ||
        h.recurrent != kv->recurrent_floats() || h.has_logits > 1)
        fail(path, ": the state's model shape (", h.num_layers, " layers, kv width ", h.kv_dim, ", recurrent state ",
             h.recurrent, ", vocab ", h.vocab, ") does not match the pack's (", config.num_layers, ", ", kv->kv_dim(),
             ", ", kv->recurrent_floats(), ", ", config.vocab_size, ")");
    if (h.positions > static_cast<uint64_t>(options.context))
        fail(path, ": the state holds ", h.positions, " tokens, more than the context size of ", options.context,
             " (raise --ctx)");
    const uint64_t layer_bytes = h.positions * h.kv_dim * sizeof(float);
    const uint64_t recurrent_bytes = uint64_t{h.recurrent} * sizeof(float);
    uint64_t expected = kStateHeaderBytes + h.positions * sizeof(int32_t) +
                        (h.has_logits ? uint64_t{h.vocab} * sizeof(float) : 0) + 8;
    for (int64_t l = 0; l < config.num_layers; ++l) expected += kv->is_recurrent(l) ? recurrent_bytes : 2 * layer_bytes;
    if (file_bytes != expected) fail(path, ": size: expected ", expected, " bytes, got ", file_bytes);

    context_tokens.clear();
    has_logits = false;
    StreamHash hash;
    hash.update(header);
    uint64_t offset = kStateHeaderBytes;
    auto read = [&](void* data, uint64_t bytes) {
        std::span<std::byte> s(static_cast<std::byte*>(data), bytes);
        pread_exact(fd, s, offset, path);
        hash.update(s);
        offset += bytes;
    };
    std::vector<int32_t> tokens(h.positions);
    read(tokens.data(), tokens.size() * sizeof(int32_t));
    std::vector<float> logits(h.has_logits ? h.vocab : 0);
    read(logits.data(), logits.size() * sizeof(float));
    for (int64_t l = 0; l < config.num_layers; ++l) {
        if (kv->is_recurrent(l)) {
            read(kv->recurrent(l), recurrent_bytes);
            continue;
        }
        read(kv->keys(l), layer_bytes);
        read(kv->values(l), layer_bytes);
    }
    uint64_t stored = 0;
    pread_exact(fd, {reinterpret_cast<std::byte*>(&stored), 8}, offset, path);
    if (stored != hash.digest()) fail(path, ": checksum mismatch (the state file is damaged)");
    for (size_t i = 0; i < tokens.size(); ++i)
        if (tokens[i] < 0 || tokens[i] >= config.vocab_size) fail(path, ": token ", i, " id ", tokens[i], " out of range");
    model->context_from_host(static_cast<int64_t>(tokens.size()));
    context_tokens = std::move(tokens);
    if (h.has_logits) {
        std::copy(logits.begin(), logits.end(), last_logits.begin());   // the same size, in the buffer that may be pinned
        has_logits = true;
    }
}

}  // namespace moepack::engine
