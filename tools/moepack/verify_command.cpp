// `moepack verify PACK [--quick]`: checks every file, tensor and expert against the manifest.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.hpp"
#include "error.hpp"
#include "pack_verify.hpp"
#include "progress.hpp"
#include "text_format.hpp"

namespace moepack::tools {

Command add_verify_command(CLI::App& app) {
    struct Options {
        std::string path;
        bool quick = false;
        int threads = 0;
    };
    auto opt = std::make_shared<Options>();
    CLI::App* cmd = app.add_subcommand("verify", "Check a pack: structure and sizes, and (unless --quick) the XXH3 "
                                                 "checksum of every file, tensor and expert");
    cmd->add_option("pack", opt->path, "pack directory")->required();
    cmd->add_flag("--quick", opt->quick, "check structure, sizes and headers only");
    cmd->add_option("--threads", opt->threads, "files hashed in parallel (default: all cores)")
        ->check(CLI::NonNegativeNumber);
    return [opt]() {
        ProgressLine line("verify");
        const VerifyReport report = verify_pack(opt->path, opt->quick, opt->threads,
                                                [&line](uint64_t done, uint64_t total) { line.update(done, total); });
        if (!opt->quick) line.finish(report.bytes_hashed);
        for (const auto& f : report.failures) std::printf("FAILED %s\n", f.c_str());
        if (!report.ok()) {
            std::printf("%s: %zu problem(s) found\n", opt->path.c_str(), report.failures.size());
            return 1;
        }
        std::printf("%s: OK (%llu files%s)\n", opt->path.c_str(), static_cast<unsigned long long>(report.files_checked),
                    opt->quick ? ", structure and sizes"
                               : concat(", ", report.pieces_checked, " tensors and experts, ",
                                        human_bytes(report.bytes_hashed), " hashed").c_str());
        return 0;
    };
}

}  // namespace moepack::tools
