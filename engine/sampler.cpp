// Token sampling: see sampler.hpp.
#include "sampler.hpp"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "error.hpp"

namespace moepack::engine {

Sampler::Sampler(const SamplerOptions& options) : o_(options), rng_(options.seed) {
    if (o_.temperature < 0) fail("--temp must be >= 0, got ", o_.temperature);
    if (o_.top_k < 0) fail("--top-k must be >= 0, got ", o_.top_k);
    if (!(o_.top_p > 0 && o_.top_p <= 1)) fail("--top-p must be in (0, 1], got ", o_.top_p);
    if (!(o_.min_p >= 0 && o_.min_p < 1)) fail("--min-p must be in [0, 1), got ", o_.min_p);
    if (!(o_.repeat_penalty > 0)) fail("--repeat-penalty must be > 0, got ", o_.repeat_penalty);
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> recent) {
    candidates_.resize(logits.size());
    for (size_t i = 0; i < logits.size(); ++i) candidates_[i] = {logits[i], static_cast<int32_t>(i)};
    if (o_.repeat_penalty != 1.0f && o_.repeat_last_n > 0) {
        const size_t n = std::min(recent.size(), static_cast<size_t>(o_.repeat_last_n));
        std::unordered_set<int32_t> seen(recent.end() - static_cast<ptrdiff_t>(n), recent.end());
        for (int32_t id : seen) {
            if (id < 0 || static_cast<size_t>(id) >= candidates_.size()) continue;
            float& l = candidates_[static_cast<size_t>(id)].first;
            l = l > 0 ? l / o_.repeat_penalty : l * o_.repeat_penalty;
        }
    }
    auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    if (o_.temperature == 0.0f) return std::min_element(candidates_.begin(), candidates_.end(), by_logit)->second;

    size_t keep = candidates_.size();
    if (o_.top_k > 0 && static_cast<size_t>(o_.top_k) < keep) keep = static_cast<size_t>(o_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<ptrdiff_t>(keep), candidates_.end(), by_logit);
    candidates_.resize(keep);
    // probabilities at this temperature
    const float max_logit = candidates_[0].first;
    std::vector<double> p(keep);
    double total = 0;
    for (size_t i = 0; i < keep; ++i) total += p[i] = std::exp((candidates_[i].first - max_logit) / o_.temperature);
    for (auto& v : p) v /= total;
    // top-p: the smallest prefix whose mass reaches top_p
    double mass = 0;
    size_t n = 0;
    while (n < keep) {
        mass += p[n++];
        if (mass >= o_.top_p) break;
    }
    // min-p: drop tokens below min_p x the most likely one
    size_t m = 1;
    while (m < n && p[m] >= o_.min_p * p[0]) ++m;
    std::discrete_distribution<size_t> pick(p.begin(), p.begin() + static_cast<ptrdiff_t>(m));
    return candidates_[pick(rng_)].second;
}

}  // namespace moepack::engine
