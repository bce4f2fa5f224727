// engine::WeightMatrix -> DeviceMatrix: see weight_view.hpp.
#include "weight_view.hpp"

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

}  // namespace moepack::cuda
