// XXH3-64 helpers over xxHash's header-only build.
#include "hashing.hpp"

#include <fcntl.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <vector>

#include "error.hpp"

namespace moepack {

struct StreamHash::State {
    XXH3_state_t* xxh = XXH3_createState();
    ~State() { XXH3_freeState(xxh); }
};

uint64_t hash_bytes(std::span<const std::byte> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

StreamHash::StreamHash() : state_(std::make_unique<State>()) {
    if (!state_->xxh) throw std::bad_alloc();
    reset();
}
StreamHash::~StreamHash() = default;
void StreamHash::reset() { XXH3_64bits_reset(state_->xxh); }
void StreamHash::update(std::span<const std::byte> bytes) { XXH3_64bits_update(state_->xxh, bytes.data(), bytes.size()); }
uint64_t StreamHash::digest() const { return XXH3_64bits_digest(state_->xxh); }

uint64_t hash_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
    StreamHash hash;
    std::vector<std::byte> buffer(uint64_t{4} << 20);
    for (;;) {
        const ssize_t n = ::read(fd, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int err = errno;
            ::close(fd);
            fail(path, ": read error: ", std::strerror(err));
        }
        if (n == 0) break;
        hash.update(std::span(buffer).first(static_cast<size_t>(n)));
    }
    ::close(fd);
    return hash.digest();
}

}  // namespace moepack
