// Pre-tokenizer split by a regular expression with PCRE2 (UTF + Unicode properties, JIT):
// the text is cut into the matches and the gaps between them, in order ("Isolated").
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct pcre2_real_code_8;
struct pcre2_real_match_context_8;
struct pcre2_real_jit_stack_8;

namespace moepack::engine {

class RegexSplitter {
public:
    // Throws moepack::Error naming the pattern and the offending offset if it does not compile.
    explicit RegexSplitter(const std::string& pattern);
    ~RegexSplitter();
    RegexSplitter(RegexSplitter&&) noexcept;
    RegexSplitter& operator=(RegexSplitter&&) noexcept;

    // Appends the pieces of `text` (valid UTF-8) to `out`; empty pieces are dropped.
    void split(std::string_view text, std::vector<std::string_view>& out) const;

private:
    std::string pattern_;
    pcre2_real_code_8* code_ = nullptr;
    pcre2_real_match_context_8* context_ = nullptr;
    pcre2_real_jit_stack_8* jit_stack_ = nullptr;
};

}  // namespace moepack::engine
