// PCRE2-backed isolated split.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex_split.hpp"

#include <pcre2.h>

#include <utility>

#include "error.hpp"

namespace moepack::engine {
namespace {

std::string pcre2_message(int code) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(code, buffer, sizeof buffer);
    return reinterpret_cast<const char*>(buffer);
}

struct MatchData {
    pcre2_match_data* data;
    explicit MatchData(const pcre2_code* code) : data(pcre2_match_data_create_from_pattern(code, nullptr)) {
        if (!data) throw std::bad_alloc();
    }
    ~MatchData() { pcre2_match_data_free(data); }
    MatchData(const MatchData&) = delete;
    MatchData& operator=(const MatchData&) = delete;
};

}  // namespace

RegexSplitter::RegexSplitter(const std::string& pattern) : pattern_(pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (!code_) fail("pre-tokenizer pattern '", pattern, "': ", pcre2_message(error), " at offset ", offset);
    // JIT is an optimisation: without it (unsupported CPU, no executable memory) matching
    // falls back to the interpreter with identical results.
    if (pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0) {
        context_ = pcre2_match_context_create(nullptr);
        jit_stack_ = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
        if (!context_ || !jit_stack_) throw std::bad_alloc();
        pcre2_jit_stack_assign(context_, nullptr, jit_stack_);
    }
}

RegexSplitter::~RegexSplitter() {
    if (jit_stack_) pcre2_jit_stack_free(jit_stack_);
    if (context_) pcre2_match_context_free(context_);
    if (code_) pcre2_code_free(code_);
}

RegexSplitter::RegexSplitter(RegexSplitter&& o) noexcept
    : pattern_(std::move(o.pattern_)),
      code_(std::exchange(o.code_, nullptr)),
      context_(std::exchange(o.context_, nullptr)),
      jit_stack_(std::exchange(o.jit_stack_, nullptr)) {}

RegexSplitter& RegexSplitter::operator=(RegexSplitter&& o) noexcept {
    std::swap(pattern_, o.pattern_);
    std::swap(code_, o.code_);
    std::swap(context_, o.context_);
    std::swap(jit_stack_, o.jit_stack_);
    return *this;
}

void RegexSplitter::split(std::string_view text, std::vector<std::string_view>& out) const {
    MatchData match(code_);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t gap_start = 0;  // end of the previous match
    size_t pos = 0;
    while (pos <= text.size()) {
        const int rc = pcre2_match(code_, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, match.data, context_);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) fail("pre-tokenizer pattern '", pattern_, "': matching failed: ", pcre2_message(rc));
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match.data);
        const size_t start = ov[0], end = ov[1];
        if (end == start) {  // empty match: nothing to cut; move on by one character
            if (start >= text.size()) break;
            pos = start + 1;
            while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
            continue;
        }
        if (start > gap_start) out.push_back(text.substr(gap_start, start - gap_start));
        out.push_back(text.substr(start, end - start));
        gap_start = pos = end;
    }
    if (gap_start < text.size()) out.push_back(text.substr(gap_start));
}

}  // namespace moepack::engine
