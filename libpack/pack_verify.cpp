// Pack verification: header comparison, streaming re-hash of files and pieces, padding checks.
#include "pack_verify.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "error.hpp"
#include "hashing.hpp"
#include "ordered_pool.hpp"
#include "pack_format.hpp"
#include "pack_reader.hpp"

namespace moepack {
namespace {

struct Piece {
    uint64_t offset = 0, bytes = 0, xxh3 = 0;
    std::string name;   // "tensor 'x'" or "layer 3 expert 7"
};

struct FileCheck {
    std::string path;                // relative
    uint64_t bytes = 0, xxh3 = 0;
    std::vector<std::byte> header;   // expected header bytes (empty: none)
    std::vector<Piece> pieces;       // sorted by offset
};

std::string first_difference(std::span<const std::byte> expected, std::span<const std::byte> got) {
    for (size_t i = 0; i < expected.size() && i < got.size(); ++i)
        if (expected[i] != got[i])
            return concat("header byte ", i, " is 0x", std::hex, static_cast<int>(got[i]), ", expected 0x",
                          static_cast<int>(expected[i]));
    return {};
}

std::vector<FileCheck> plan_checks(const Pack& p) {
    std::vector<FileCheck> checks;
    for (const auto& f : p.files()) checks.push_back({f.path, f.bytes, f.xxh3, {}, {}});
    auto find = [&](const std::string& path) -> FileCheck& {
        for (auto& c : checks)
            if (c.path == path) return c;
        fail(p.directory(), ": '", path, "' is not in the manifest's file list");
    };
    if (p.has_weights()) {
        FileCheck& c = find(std::string(pack::kWeightsName));
        const auto h = pack::encode(pack::WeightsHeader{pack::kFormatVersion, p.tensors().size(), c.bytes});
        c.header.assign(h.begin(), h.end());
        for (const auto& t : p.tensors())
            c.pieces.push_back({t.piece.offset, t.piece.bytes, t.piece.xxh3, concat("tensor '", t.name, "'")});
    }
    if (p.has_experts()) {
        const auto& l = p.expert_layout();
        for (const auto& layer : p.expert_layers()) {
            FileCheck& c = find(layer.file);
            const auto bytes = pack::encode(pack::experts_header(l, layer.layer, p.num_experts()));
            c.header.assign(bytes.begin(), bytes.end());
            for (size_t e = 0; e < layer.experts.size(); ++e)
                c.pieces.push_back({layer.experts[e].offset, layer.experts[e].bytes, layer.experts[e].xxh3,
                                    concat("layer ", layer.layer, " expert ", e)});
        }
    }
    for (auto& c : checks)
        std::sort(c.pieces.begin(), c.pieces.end(), [](const Piece& a, const Piece& b) { return a.offset < b.offset; });
    return checks;
}

class FileReader {
public:
    explicit FileReader(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
        if (fd_ < 0) fail(path, ": cannot open: ", std::strerror(errno));
    }
    ~FileReader() { ::close(fd_); }
    int fd() const { return fd_; }
private:
    std::string path_;
    int fd_;
};

// One sequential pass: whole-file hash, piece hashes, header bytes and zero padding.
void check_file(const Pack& p, const FileCheck& c, bool quick, std::vector<std::string>& failures,
                std::atomic<uint64_t>& hashed, const std::function<void(uint64_t)>& advance) {
    const std::string full = p.path_of(c.path);
    FileReader reader(full);
    if (!c.header.empty()) {
        std::vector<std::byte> got(c.header.size());
        pread_exact(reader.fd(), got, 0, full);
        const std::string diff = first_difference(c.header, got);
        if (!diff.empty()) failures.push_back(concat(full, ": ", diff));
    }
    if (quick) return;
    StreamHash file_hash, piece_hash;
    std::vector<std::byte> buffer(uint64_t{4} << 20);
    size_t piece = 0;
    bool in_piece = false;
    bool padding_reported = false;
    const uint64_t header_end = c.header.size();
    for (uint64_t at = 0; at < c.bytes;) {
        const uint64_t n = std::min<uint64_t>(buffer.size(), c.bytes - at);
        pread_exact(reader.fd(), std::span(buffer).first(n), at, full);
        file_hash.update(std::span(buffer).first(n));
        // Walk the chunk: bytes inside pieces feed the piece hash; others must be zero.
        uint64_t pos = at;
        while (pos < at + n) {
            if (!in_piece && piece < c.pieces.size() && pos == c.pieces[piece].offset) {
                piece_hash.reset();
                in_piece = true;
            }
            if (in_piece) {
                const Piece& pc = c.pieces[piece];
                const uint64_t take = std::min(at + n, pc.offset + pc.bytes) - pos;
                piece_hash.update(std::span(buffer).subspan(pos - at, take));
                pos += take;
                if (pos == pc.offset + pc.bytes) {
                    const uint64_t got = piece_hash.digest();
                    if (got != pc.xxh3)
                        failures.push_back(concat(full, ": ", pc.name, " (bytes ", pc.offset, "..", pc.offset + pc.bytes,
                                                  "): checksum ", pack::hash_hex(got), ", expected ",
                                                  pack::hash_hex(pc.xxh3)));
                    in_piece = false;
                    ++piece;
                }
                continue;
            }
            const uint64_t gap_end = std::min(at + n, piece < c.pieces.size() ? c.pieces[piece].offset : c.bytes);
            if (pos >= header_end && !c.header.empty() && !padding_reported) {
                for (uint64_t i = pos; i < gap_end; ++i)
                    if (buffer[i - at] != std::byte{0}) {
                        failures.push_back(concat(full, ": padding byte at offset ", i, " is not zero"));
                        padding_reported = true;
                        break;
                    }
            }
            pos = gap_end;
        }
        at += n;
        hashed += n;
        advance(n);
    }
    const uint64_t digest = file_hash.digest();
    if (digest != c.xxh3)
        failures.push_back(concat(full, ": file checksum ", pack::hash_hex(digest), ", expected ", pack::hash_hex(c.xxh3)));
}

}  // namespace

VerifyReport verify_pack(const std::string& directory, bool quick, int threads,
                         const std::function<void(uint64_t, uint64_t)>& progress) {
    VerifyReport report;
    std::unique_ptr<Pack> p;
    std::vector<FileCheck> checks;
    try {
        p = Pack::open(directory);
        checks = plan_checks(*p);
        for (const auto& c : checks)
            if (!c.header.empty()) {   // the decoders give the clearest message for a bad header
                std::vector<std::byte> bytes(c.header.size());
                FileReader reader(p->path_of(c.path));
                pread_exact(reader.fd(), bytes, 0, p->path_of(c.path));
                if (c.path == pack::kWeightsName) pack::decode_weights_header(bytes, p->path_of(c.path));
                else pack::decode_experts_header(bytes, p->path_of(c.path));
            }
    } catch (const Error& e) {
        report.failures.push_back(e.what());
        if (!p) return report;
    }
    uint64_t total = 0;
    for (const auto& c : checks) total += c.bytes;
    std::atomic<uint64_t> hashed{0}, done{0};
    std::mutex mutex;
    const int workers = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    parallel_for(checks.size(), workers, [&](size_t i) {
        std::vector<std::string> failures;
        try {
            check_file(*p, checks[i], quick, failures, hashed, [&](uint64_t n) {
                const uint64_t now = done.fetch_add(n) + n;
                if (progress) progress(now, total);
            });
        } catch (const Error& e) {
            failures.push_back(e.what());
        }
        std::lock_guard lock(mutex);
        report.failures.insert(report.failures.end(), failures.begin(), failures.end());
    });
    std::sort(report.failures.begin(), report.failures.end());
    report.failures.erase(std::unique(report.failures.begin(), report.failures.end()), report.failures.end());
    report.files_checked = checks.size();
    report.bytes_hashed = hashed.load();
    for (const auto& c : checks) report.pieces_checked += quick ? 0 : c.pieces.size();
    return report;
}

}  // namespace moepack
