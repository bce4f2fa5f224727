// `moerun tokenize-bench --tokenizer PATH --text FILE [--write-ids OUT]`: encoding speed on
// a text cut at line ends into chunks of at least 4096 bytes, each encoded on its own
// without special tokens, on one thread. --write-ids stores the ids (int32 little-endian)
// for comparison with another implementation's.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "atomic_file.hpp"
#include "commands.hpp"
#include "error.hpp"
#include "mapped_file.hpp"
#include "tokenizer.hpp"

namespace moepack::tools {
namespace {

constexpr size_t kChunkBytes = 4096;

struct BenchOptions {
    std::string tokenizer;
    std::string text;
    std::string write_ids;
};

std::vector<std::string_view> chunks_of(std::string_view text) {
    std::vector<std::string_view> chunks;
    size_t start = 0, pos = 0;
    while (pos < text.size()) {
        const size_t nl = text.find('\n', pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        if (pos - start >= kChunkBytes || pos == text.size()) {
            chunks.push_back(text.substr(start, pos - start));
            start = pos;
        }
    }
    return chunks;
}

int run(const BenchOptions& opt) {
    const engine::Tokenizer tokenizer = engine::Tokenizer::load(opt.tokenizer);
    const MappedFile file(opt.text);
    const std::string_view text(reinterpret_cast<const char*>(file.bytes().data()), file.bytes().size());
    const auto chunks = chunks_of(text);
    if (chunks.empty()) fail(opt.text, ": empty text");
    (void)tokenizer.encode(chunks[0], false);  // warm-up
    std::vector<uint32_t> ids;
    const auto t0 = std::chrono::steady_clock::now();
    for (std::string_view chunk : chunks) {
        const auto part = tokenizer.encode(chunk, false);
        ids.insert(ids.end(), part.begin(), part.end());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%zu bytes in %zu chunks -> %zu tokens in %.3f s: %.2f MB/s\n", text.size(), chunks.size(),
                ids.size(), seconds, static_cast<double>(text.size()) / 1e6 / seconds);
    if (!opt.write_ids.empty()) {
        std::vector<unsigned char> le;
        le.reserve(ids.size() * 4);
        for (uint32_t id : ids)
            for (int shift = 0; shift < 32; shift += 8) le.push_back(static_cast<unsigned char>(id >> shift));
        AtomicFile out(opt.write_ids);
        out.write(le.data(), le.size());
        out.commit();
    }
    return 0;
}

}  // namespace

Command add_tokenize_bench_command(CLI::App& app) {
    auto opt = std::make_shared<BenchOptions>();
    CLI::App* cmd = app.add_subcommand("tokenize-bench", "Measure encoding speed (MB/s) on a text file");
    cmd->add_option("--tokenizer", opt->tokenizer, "tokenizer.bin, or a pack directory holding one")->required();
    cmd->add_option("--text", opt->text, "UTF-8 text file")->required();
    cmd->add_option("--write-ids", opt->write_ids, "write all ids as int32 little-endian to this file");
    return [opt]() { return run(*opt); };
}

}  // namespace moepack::tools
