// Products and row loops of the decoder blocks: see layer_compute.hpp.
#include "models/layer_compute.hpp"

#include <algorithm>
#include <vector>

#include "thread_pool.hpp"

namespace moepack::engine {

void LayerCompute::product(const WeightMatrix& w, const float* x, int64_t n, float* y) {
    input_.reset(x, n, w.cols);
    matmul(ctx_.pool, w, input_, y);
    ctx_.times.flops += matmul_flops(w, n);
    ctx_.times.weight_bytes += w.bytes();
}

void LayerCompute::products(const float* x, int64_t n,
                            std::initializer_list<std::pair<const WeightMatrix*, float*>> outs) {
    // one parallel loop over the rows of all matrices, in blocks of a multiple of 16 rows
    // (about four per thread); they share the input and its preparation
    struct Part {
        const WeightMatrix* w;
        float* y;
        int64_t first_block, grain;
    };
    int64_t group = 0;
    for (const auto& [w, y] : outs)
        if (w->format == WeightFormat::affine && group != w->group_size) {
            if (group != 0) {   // inputs prepared for one group size only: one loop each
                for (const auto& [w2, y2] : outs) product(*w2, x, n, y2);
                return;
            }
            group = w->group_size;
        }
    std::vector<Part> parts;
    int64_t blocks = 0, total_rows = 0;
    for (const auto& [w, y] : outs) total_rows += w->rows;
    const int64_t per_block = std::max<int64_t>(16, (total_rows / (4 * ctx_.pool.size()) + 15) / 16 * 16);
    input_.reset(x, n, outs.begin()->first->cols);
    for (const auto& [w, y] : outs) {
        input_.prepare(*w);
        parts.push_back({w, y, blocks, per_block});
        blocks += (w->rows + per_block - 1) / per_block;
        ctx_.times.flops += matmul_flops(*w, n);
        ctx_.times.weight_bytes += w->bytes();
    }
    ctx_.pool.parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
            size_t i = parts.size() - 1;
            while (parts[i].first_block > b) --i;
            const Part& p = parts[i];
            const int64_t r0 = (b - p.first_block) * p.grain, r1 = std::min(p.w->rows, r0 + p.grain);
            matmul_rows(*p.w, input_, p.y, p.w->rows, r0, r1);
        }
    });
}

void LayerCompute::for_rows(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    if (n < kParallelRows) {
        fn(0, n);
        return;
    }
    ctx_.pool.parallel_for(n, std::max<int64_t>(1, n / (4 * ctx_.pool.size())), fn);
}

}  // namespace moepack::engine
