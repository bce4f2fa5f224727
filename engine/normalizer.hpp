// Text normalisation before pre-tokenization, as a tokenizer's `normalizer` asks: Unicode
// normal forms (through ICU), a prefix put before non-empty text, literal replacements.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tokenizer_format.hpp"

namespace moepack::engine {

class Normalizer {
public:
    explicit Normalizer(const std::vector<NormalizerStep>& steps);
    bool empty() const { return steps_.empty(); }
    // `text` must be valid UTF-8.
    std::string apply(std::string_view text) const;

private:
    std::vector<NormalizerStep> steps_;
};

}  // namespace moepack::engine
