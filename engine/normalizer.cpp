// Normaliser steps; Unicode normal forms through ICU's UTF-8 interface.
#include "normalizer.hpp"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>

#include <algorithm>
#include <cstdint>

#include "error.hpp"

namespace moepack::engine {
namespace {

const icu::Normalizer2* unicode_form(NormalizerKind kind) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* n = nullptr;
    switch (kind) {
        case NormalizerKind::nfc: n = icu::Normalizer2::getNFCInstance(status); break;
        case NormalizerKind::nfkc: n = icu::Normalizer2::getNFKCInstance(status); break;
        case NormalizerKind::nfd: n = icu::Normalizer2::getNFDInstance(status); break;
        case NormalizerKind::nfkd: n = icu::Normalizer2::getNFKDInstance(status); break;
        default: fail("normalizer kind ", static_cast<int>(kind), " is not a Unicode normal form");
    }
    if (U_FAILURE(status) || !n) fail("ICU: cannot load the Unicode normalisation data: ", u_errorName(status));
    return n;
}

bool is_ascii(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

std::string normal_form(const icu::Normalizer2& n, std::string text) {
    if (is_ascii(text)) return text;  // ASCII is in every normal form
    if (text.size() > static_cast<size_t>(INT32_MAX)) fail("text of ", text.size(), " bytes is too long to normalise");
    UErrorCode status = U_ZERO_ERROR;
    const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
    if (n.isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return text;
    status = U_ZERO_ERROR;
    std::string out;
    icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
    n.normalizeUTF8(0, piece, sink, nullptr, status);
    if (U_FAILURE(status)) fail("ICU: Unicode normalisation failed: ", u_errorName(status));
    return out;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
    for (size_t pos = 0; (pos = text.find(from, pos)) != std::string::npos; pos += to.size())
        text.replace(pos, from.size(), to);
    return text;
}

bool is_unicode_form(NormalizerKind kind) { return kind != NormalizerKind::prepend && kind != NormalizerKind::replace; }

}  // namespace

Normalizer::Normalizer(const std::vector<NormalizerStep>& steps) : steps_(steps) {
    for (const auto& s : steps_)
        if (is_unicode_form(s.kind)) (void)unicode_form(s.kind);  // fails now rather than mid-encode
}

std::string Normalizer::apply(std::string_view input) const {
    std::string text(input);
    for (const auto& step : steps_) {
        if (step.kind == NormalizerKind::prepend) {
            if (!text.empty()) text.insert(0, step.pattern);
        } else if (step.kind == NormalizerKind::replace) {
            text = replace_all(std::move(text), step.pattern, step.content);
        } else {
            text = normal_form(*unicode_form(step.kind), std::move(text));
        }
    }
    return text;
}

}  // namespace moepack::engine
