// engine::WeightMatrix -> DeviceMatrix: see weight_view.hpp.
#include "weight_view.hpp"

#include <algorithm>

namespace moepack::cuda {

DeviceMatrix device_matrix(const engine::WeightMatrix& w) {
    DeviceMatrix d;
    d.rows = w.rows;
    d.cols = w.cols;
    d.data = w.data;
    switch (w.format) {
        case engine::WeightFormat::f32: d.format = DeviceFormat::f32; break;
        case engine::WeightFormat::f16: d.format = DeviceFormat::f16; break;
        case engine::WeightFormat::bf16: d.format = DeviceFormat::bf16; break;
        case engine::WeightFormat::affine: {
            d.format = DeviceFormat::affine;
            d.bits = w.bits;
            d.group_size = w.group_size;
            const auto layout = pack::matrix_layout(static_cast<uint64_t>(w.rows), static_cast<uint64_t>(w.cols), w.bits,
                                                    w.group_size);
            d.row_words = static_cast<int64_t>(layout.row_words());
            d.groups = static_cast<int64_t>(layout.groups());
            d.scales = w.scales;
            d.biases = w.biases;
            break;
        }
    }
    return d;
}

std::vector<DeviceSpan> weight_spans(const std::vector<DeviceMatrix>& matrices) {
    struct Run {
        uintptr_t begin, end;
    };
    std::vector<Run> runs;
    const auto add = [&](const void* p, int64_t bytes) {
        if (p && bytes > 0) runs.push_back({reinterpret_cast<uintptr_t>(p), reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)});
    };
    for (const DeviceMatrix& m : matrices) {
        switch (m.format) {
            case DeviceFormat::f32: add(m.data, m.rows * m.cols * 4); break;
            case DeviceFormat::f16:
            case DeviceFormat::bf16: add(m.data, m.rows * m.cols * 2); break;
            case DeviceFormat::affine:
                add(m.data, m.rows * m.row_words * 4);
                add(m.scales, m.rows * m.groups * 2);
                add(m.biases, m.rows * m.groups * 2);
                break;
        }
    }
    std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) { return a.begin < b.begin; });
    std::vector<Run> merged;
    for (const Run& r : runs) {
        if (!merged.empty() && r.begin <= merged.back().end)
            merged.back().end = std::max(merged.back().end, r.end);
        else
            merged.push_back(r);
    }
    while (merged.size() > static_cast<size_t>(kMaxL2Spans)) {   // close the smallest gap
        size_t at = 1;
        for (size_t i = 2; i < merged.size(); ++i)
            if (merged[i].begin - merged[i - 1].end < merged[at].begin - merged[at - 1].end) at = i;
        merged[at - 1].end = merged[at].end;
        merged.erase(merged.begin() + static_cast<ptrdiff_t>(at));
    }
    std::vector<DeviceSpan> spans;
    for (const Run& r : merged) spans.push_back({reinterpret_cast<const void*>(r.begin), static_cast<int64_t>(r.end - r.begin)});
    return spans;
}

}  // namespace moepack::cuda
