// Output files that appear only when complete (temporary name, fsync, rename).
#include "atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "error.hpp"

namespace moepack {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
    temp_path_ = path_ + std::string(kAtomicTempMarker) + "XXXXXX";
    fd_ = ::mkstemp(temp_path_.data());
    if (fd_ < 0) fail(path_, ": cannot create a temporary file: ", std::strerror(errno));
    ::fchmod(fd_, 0644);   // mkstemp makes 0600; outputs are meant to be shared like any file
}

AtomicFile::~AtomicFile() {
    if (fd_ >= 0) {
        ::close(fd_);
        ::unlink(temp_path_.c_str());
    }
}

void AtomicFile::write(std::span<const std::byte> bytes) {
    if (fd_ < 0) fail(path_, ": write after commit");
    const std::byte* p = bytes.data();
    size_t left = bytes.size();
    while (left > 0) {
        ssize_t n = ::write(fd_, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            fail(path_, ": write failed after ", written_, " bytes: ",
                 n < 0 ? std::strerror(errno) : "no progress");
        p += n;
        left -= static_cast<size_t>(n);
        written_ += static_cast<uint64_t>(n);
    }
}

void AtomicFile::commit() {
    if (fd_ < 0) fail(path_, ": committed twice");
    if (::fsync(fd_) != 0) fail(path_, ": fsync failed: ", std::strerror(errno));
    if (::close(fd_) != 0) {
        fd_ = -1;
        ::unlink(temp_path_.c_str());
        fail(path_, ": close failed: ", std::strerror(errno));
    }
    fd_ = -1;
    if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
        int err = errno;
        ::unlink(temp_path_.c_str());
        fail(path_, ": rename failed: ", std::strerror(err));
    }
    const auto dir = std::filesystem::path(path_).parent_path();
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

}  // namespace moepack
