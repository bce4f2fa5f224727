// Builds the PackPlan: normalised names, output encodings and offsets of the non-expert
// tensors, and the source view of every expert projection in each expert layout.
#include "pack_plan.hpp"

#include <map>
#include <tuple>

#include "error.hpp"

namespace moepack {
namespace {

using TensorIndex = std::map<std::string, const ClassifiedTensor*>;

std::string module_of(const std::string& name) { return name.substr(0, name.rfind('.')); }

std::pair<int, int> mlx_bits_and_group(const ModelConfig& c, const std::string& weight_name) {
    auto it = c.quant.overrides.find(module_of(weight_name));
    if (it != c.quant.overrides.end())
        return {static_cast<int>(it->second.first), static_cast<int>(it->second.second)};
    return {static_cast<int>(c.quant.bits), static_cast<int>(c.quant.group_size)};
}

const ClassifiedTensor* sibling(const TensorIndex& index, const std::string& weight_name, const char* part) {
    auto it = index.find(module_of(weight_name) + "." + part);
    return it == index.end() ? nullptr : it->second;
}

// The source matrix of a "weight" tensor: floating, fp8 with its block scales, or MLX codes.
// `rows`/`cols` are the logical sizes; `stacked` when the tensor has a leading expert dimension.
SourceMatrix source_of(const ModelConfig& c, const TensorIndex& index, const ClassifiedTensor& w, uint64_t rows,
                       uint64_t cols, bool stacked, uint64_t slice) {
    SourceMatrix m;
    m.file = w.ref.file;
    m.weight = w.ref.info;
    m.rows = rows;
    m.cols = cols;
    m.stacked = stacked;
    m.slice = slice;
    const DType dt = w.ref.info->dtype;
    if (dt == DType::U32 && c.quant.kind == SourceQuant::mlx_affine) {
        m.encoding = SourceEncoding::mlx_affine;
        std::tie(m.bits, m.group_size) = mlx_bits_and_group(c, w.ref.info->name);
        const auto* s = sibling(index, w.ref.info->name, "scales");
        const auto* b = sibling(index, w.ref.info->name, "biases");
        if (!s || !b) fail(w.ref.file->path(), ": MLX tensor '", w.ref.info->name, "' has no scales or biases");
        m.scales = s->ref.info;
        m.biases = b->ref.info;
        if (s->ref.file != w.ref.file || b->ref.file != w.ref.file)
            fail(w.ref.file->path(), ": MLX tensor '", w.ref.info->name, "': scales and biases in another shard");
    } else if ((dt == DType::F8_E4M3 || dt == DType::F8_E5M2) && c.quant.kind == SourceQuant::fp8_block) {
        m.encoding = SourceEncoding::fp8_block;
        const auto* s = sibling(index, w.ref.info->name, "weight_scale_inv");
        if (!s) fail(w.ref.file->path(), ": fp8 tensor '", w.ref.info->name, "' has no weight_scale_inv");
        if (s->ref.file != w.ref.file)
            fail(w.ref.file->path(), ": fp8 tensor '", w.ref.info->name, "': weight_scale_inv in another shard");
        m.scales = s->ref.info;
        m.block_rows = c.quant.block_rows;
        m.block_cols = c.quant.block_cols;
    }
    return m;
}

// Logical [rows, cols] of a non-expert weight (MLX codes unpacked).
std::pair<uint64_t, uint64_t> logical_rows_cols(const ModelConfig& c, const ClassifiedTensor& w) {
    const auto& shape = w.ref.info->shape;
    if (shape.size() == 2 && w.ref.info->dtype == DType::U32 && c.quant.kind == SourceQuant::mlx_affine) {
        const auto [bits, group] = mlx_bits_and_group(c, w.ref.info->name);
        (void)group;
        return {static_cast<uint64_t>(shape[0]), static_cast<uint64_t>(shape[1]) * 32 / static_cast<uint64_t>(bits)};
    }
    if (shape.size() == 2) return {static_cast<uint64_t>(shape[0]), static_cast<uint64_t>(shape[1])};
    return {1, w.ref.info->numel};
}

// The pack's name of a non-expert tensor: no model prefix, one spelling per role.
std::string pack_name(const ClassifiedTensor& t) {
    const std::string& src = t.ref.info->name;
    switch (t.cls.role) {
        case TensorRole::head: return "lm_head." + t.cls.part;
        case TensorRole::embedding: return "embed_tokens." + t.cls.part;
        default: break;
    }
    if (t.cls.layer < 0) return "norm." + t.cls.part;
    const std::string marker = concat("layers.", t.cls.layer, ".");
    const std::string prefix = marker.substr(0, marker.size());
    const auto at = src.find(prefix);
    std::string rest = src.substr(at + prefix.size());
    switch (t.cls.role) {
        case TensorRole::router: return prefix + "mlp.router." + t.cls.part;
        case TensorRole::shared_expert:
            return prefix + (rest.find("shared_expert_gate.") != std::string::npos ? "mlp.shared_expert_gate."
                                                                                   : "mlp.shared_expert.") +
                   t.cls.part;
        case TensorRole::dense_mlp: return prefix + "mlp." + rest.substr(rest.find('.') + 1);
        default: return prefix + rest;
    }
}

bool is_auxiliary(const ClassifiedTensor& t, const ModelConfig& c) {
    const std::string& p = t.cls.part;
    if (p.ends_with("weight_scale_inv")) return true;
    if (c.quant.kind == SourceQuant::mlx_affine && (p.ends_with("scales") || p.ends_with("biases"))) return true;
    return false;
}

DenseTensorPlan plan_dense(const ModelConfig& c, const TensorIndex& index, const ClassifiedTensor& t,
                           const PackOptions& o) {
    DenseTensorPlan d;
    d.name = pack_name(t);
    d.role = t.cls.role;
    d.layer = t.cls.layer;
    d.sources.push_back(t.ref.info->name);
    const auto [rows, cols] = logical_rows_cols(c, t);
    d.source = source_of(c, index, t, rows, cols, false, 0);
    if (d.source.scales) d.sources.push_back(d.source.scales->name);
    if (d.source.biases) d.sources.push_back(d.source.biases->name);
    const auto& shape = t.ref.info->shape;
    d.shape = shape.size() == 2 ? std::vector<int64_t>{static_cast<int64_t>(rows), static_cast<int64_t>(cols)}
                                : shape;
    d.fold_one_plus = c.norm == NormFlavour::one_plus && t.cls.role == TensorRole::norm &&
                      t.ref.info->name.find("linear_attn.") == std::string::npos;
    const bool matrix = shape.size() == 2;
    const int target_bits = t.cls.role == TensorRole::router ? std::max(o.dense_bits, 8) : o.dense_bits;
    if (d.source.encoding == SourceEncoding::mlx_affine) {
        d.encoding = DenseEncoding::affine;
        if (d.source.bits <= target_bits) {
            d.bits = d.source.bits;
            d.group_size = d.source.group_size;
            d.copy_record = true;
        } else {
            d.bits = target_bits;
            d.group_size = o.group_size;
        }
    } else if (!matrix || d.fold_one_plus) {
        d.encoding = DenseEncoding::f32;
        // a depthwise convolution's weight, [C, 1, K] (transformers) or [C, K, 1] (MLX): [C, K]
        if (shape.size() == 3 && t.cls.part.ends_with("conv1d.weight"))
            d.shape = {shape[0], static_cast<int64_t>(t.ref.info->numel) / std::max<int64_t>(1, shape[0])};
    } else if (matrix && target_bits < 16) {
        d.encoding = DenseEncoding::affine;
        d.bits = target_bits;
        d.group_size = o.group_size;
    } else {
        switch (t.ref.info->dtype) {
            case DType::F32: case DType::F64: d.encoding = DenseEncoding::f32; break;
            case DType::F16: d.encoding = DenseEncoding::f16; break;
            default: d.encoding = DenseEncoding::bf16; break;
        }
    }
    d.source.validate();
    return d;
}

// Qwen3-Next groups the input projections of its linear-attention layers by key head:
// in_proj_qkvz holds [q (dk) | k (dk) | v (r dv) | z (r dv)] per key head and in_proj_ba
// [b (r) | a (r)], r = value heads per key head. Packs hold Qwen3.5's layout instead:
// in_proj_qkv ([all q | all k | all v], the order the convolution sees), in_proj_z,
// in_proj_b and in_proj_a, each head-major. One plan in, the split plans out.
std::vector<DenseTensorPlan> split_grouped_projection(const ModelConfig& c, DenseTensorPlan d, const std::string& part) {
    const auto nk = static_cast<uint64_t>(c.linear.num_key_heads);
    const auto r = static_cast<uint64_t>(c.linear.num_value_heads / c.linear.num_key_heads);
    const auto dk = static_cast<uint64_t>(c.linear.key_head_dim), dv = static_cast<uint64_t>(c.linear.value_head_dim);
    const bool qkvz = part == "in_proj_qkvz";
    // per key head: the widths of its pieces, and which output tensor each piece goes to
    const std::vector<uint64_t> widths = qkvz ? std::vector<uint64_t>{dk, dk, r * dv, r * dv} : std::vector<uint64_t>{r, r};
    const std::vector<std::vector<size_t>> outputs = qkvz ? std::vector<std::vector<size_t>>{{0, 1, 2}, {3}}
                                                          : std::vector<std::vector<size_t>>{{0}, {1}};
    const std::vector<std::string> names = qkvz ? std::vector<std::string>{"in_proj_qkv", "in_proj_z"}
                                                : std::vector<std::string>{"in_proj_b", "in_proj_a"};
    uint64_t group = 0;
    for (uint64_t w : widths) group += w;
    if (d.source.rows != nk * group)
        fail(d.source.file->path(), ": tensor '", d.source.weight->name, "': expected ", nk * group, " rows (",
             nk, " key heads of ", group, "), got ", d.source.rows);
    std::vector<DenseTensorPlan> out;
    for (size_t o = 0; o < outputs.size(); ++o) {
        DenseTensorPlan p = d;
        p.name.replace(p.name.find(part), part.size(), names[o]);
        p.row_runs.clear();
        for (size_t piece : outputs[o]) {
            uint64_t within = 0;
            for (size_t i = 0; i < piece; ++i) within += widths[i];
            for (uint64_t g = 0; g < nk; ++g) p.row_runs.push_back({g * group + within, widths[piece]});
        }
        p.shape[0] = static_cast<int64_t>(p.rows());
        p.copy_record = false;   // MLX codes are decoded and requantized at their own width
        out.push_back(std::move(p));
    }
    return out;
}

uint64_t dense_bytes(const DenseTensorPlan& d) {
    const uint64_t numel = d.rows() * d.source.cols;
    switch (d.encoding) {
        case DenseEncoding::f32: return numel * 4;
        case DenseEncoding::f16: case DenseEncoding::bf16: return numel * 2;
        case DenseEncoding::affine: return d.layout().bytes();
    }
    return 0;
}

struct ExpertKey {
    int64_t layer, expert;
    Projection projection;
    std::string part;
    auto operator<=>(const ExpertKey&) const = default;
};

void check_projection(const ProjectionSource& p, uint64_t rows, uint64_t cols) {
    p.matrix.validate();
    const uint64_t along = p.transposed ? p.matrix.cols : p.matrix.rows;
    const uint64_t across = p.transposed ? p.matrix.rows : p.matrix.cols;
    if (p.first + (rows - 1) * p.step >= along || across != cols)
        fail(p.matrix.file->path(), ": tensor '", p.matrix.weight->name, "': expected an expert projection of [",
             rows, ", ", cols, "], got a source matrix of [", p.matrix.rows, ", ", p.matrix.cols, "]");
}

}  // namespace

const char* to_string(DenseEncoding e) {
    switch (e) {
        case DenseEncoding::f32: return "f32";
        case DenseEncoding::f16: return "f16";
        case DenseEncoding::bf16: return "bf16";
        case DenseEncoding::affine: return "affine";
    }
    return "?";
}

pack::MatrixLayout DenseTensorPlan::layout() const {
    return pack::matrix_layout(rows(), source.cols, encoding == DenseEncoding::affine ? bits : 16, group_size);
}

uint64_t DenseTensorPlan::rows() const {
    if (row_runs.empty()) return source.rows;
    uint64_t n = 0;
    for (const RowRun& run : row_runs) n += run.count;
    return n;
}

void DenseTensorPlan::read_rows(uint64_t begin, uint64_t count, float* out) const {
    if (row_runs.empty()) return source.read_rows(begin, count, out);
    uint64_t at = 0;   // stored row of the current run's start
    for (const RowRun& run : row_runs) {
        if (count == 0) return;
        if (begin < at + run.count) {
            const uint64_t skip = begin - at, take = std::min(count, run.count - skip);
            source.read_rows(run.first + skip, take, out);
            out += take * source.cols;
            begin += take;
            count -= take;
        }
        at += run.count;
    }
}

uint64_t PackPlan::expert_file_bytes() const {
    return pack::kExpertsHeaderBytes + static_cast<uint64_t>(num_experts) * expert.stride;
}

uint64_t PackPlan::total_bytes() const { return weights_file_bytes + layers.size() * expert_file_bytes(); }

PackPlan plan_pack(const CheckpointSummary& summary, const PackOptions& o) {
    if (!pack::valid_expert_bits(o.expert_bits)) fail("expert bits must be 2, 4, 8 or 16, got ", o.expert_bits);
    if (!pack::valid_dense_bits(o.dense_bits)) fail("dense bits must be 4, 8 or 16, got ", o.dense_bits);
    if (!pack::valid_group_size(o.group_size)) fail("group size must be 32, 64 or 128, got ", o.group_size);
    PackPlan plan;
    const ModelConfig& c = summary.config;
    plan.model = to_json(c);
    plan.num_experts = c.num_experts;
    plan.options = o;
    TensorIndex index;
    for (const auto& t : summary.tensors) index[t.ref.info->name] = &t;

    uint64_t offset = pack::kWeightsHeaderBytes;
    std::map<ExpertKey, const ClassifiedTensor*> experts;
    for (const auto& t : summary.tensors) {
        if (t.cls.role == TensorRole::skipped) continue;
        if (t.cls.role == TensorRole::expert) {
            experts[{t.cls.layer, t.cls.expert, t.cls.projection, t.cls.part}] = &t;
            continue;
        }
        if (is_auxiliary(t, c)) continue;
        DenseTensorPlan d = plan_dense(c, index, t, o);
        std::vector<DenseTensorPlan> stored;
        for (const char* grouped : {"in_proj_qkvz", "in_proj_ba"})
            if (c.family == Family::qwen3_next && t.cls.part == concat("linear_attn.", grouped, ".weight"))
                stored = split_grouped_projection(c, d, grouped);
        if (stored.empty()) stored.push_back(std::move(d));
        for (DenseTensorPlan& s : stored) {
            s.offset = pack::align_up(offset, pack::kTensorAlignment);
            s.bytes = dense_bytes(s);
            offset = s.offset + s.bytes;
            plan.dense.push_back(std::move(s));
        }
    }
    plan.weights_file_bytes = offset;

    if (c.num_moe_layers() == 0) return plan;
    const auto H = static_cast<uint64_t>(c.hidden_size), I = static_cast<uint64_t>(c.expert_intermediate_size);
    plan.expert = pack::expert_block_layout(H, I, o.expert_bits, o.group_size, c.expert_bias);
    const bool gpt_oss = c.family == Family::gpt_oss;
    auto find = [&](int64_t layer, int64_t e, Projection p, const std::string& part) -> const ClassifiedTensor* {
        auto it = experts.find({layer, e, p, part});
        return it == experts.end() ? nullptr : it->second;
    };
    auto require = [&](int64_t layer, int64_t e, Projection p, const std::string& part) -> const ClassifiedTensor& {
        const auto* t = find(layer, e, p, part);
        if (!t) fail("layer ", layer, ": expert ", e, " has no ", to_string(p), " ", part, " tensor");
        return *t;
    };
    for (int64_t layer = 0; layer < c.num_layers; ++layer) {
        if (c.layers[static_cast<size_t>(layer)].ffn != FfnKind::moe) continue;
        LayerSourcePlan lp;
        lp.layer = layer;
        for (int64_t e = 0; e < c.num_experts; ++e) {
            const auto ue = static_cast<uint64_t>(e);
            ExpertSourcePlan x;
            switch (summary.layout) {
                case ExpertLayout::per_expert:
                case ExpertLayout::mlx_stacked: {
                    const bool stacked = summary.layout == ExpertLayout::mlx_stacked;
                    const int64_t key = stacked ? -1 : e;
                    if (find(layer, key, Projection::gate, "bias"))
                        fail("layer ", layer, ": per-expert projection biases are not supported");
                    x.gate.matrix = source_of(c, index, require(layer, key, Projection::gate, "weight"), I, H, stacked, ue);
                    x.up.matrix = source_of(c, index, require(layer, key, Projection::up, "weight"), I, H, stacked, ue);
                    x.down.matrix = source_of(c, index, require(layer, key, Projection::down, "weight"), H, I, stacked, ue);
                    break;
                }
                case ExpertLayout::fused: {
                    const bool mxfp4 = find(layer, -1, Projection::gate_up, "blocks") != nullptr;
                    if (mxfp4) {
                        for (auto [proj, rows, cols, target] :
                             {std::tuple{Projection::gate_up, 2 * I, H, &x.gate}, std::tuple{Projection::down, H, I, &x.down}}) {
                            const auto& blocks = require(layer, -1, proj, "blocks");
                            const auto& scales = require(layer, -1, proj, "scales");
                            SourceMatrix& m = target->matrix;
                            m = source_of(c, index, blocks, rows, cols, true, ue);
                            m.encoding = SourceEncoding::mxfp4;
                            m.scales = scales.ref.info;
                        }
                        x.up = x.gate;
                        x.gate.step = x.up.step = 2;   // GPT-OSS interleaves gate and up rows
                        x.up.first = 1;
                    } else if (gpt_oss) {   // [E, H, 2I] and [E, I, H]: input dimension first
                        x.gate.matrix = source_of(c, index, require(layer, -1, Projection::gate_up, "weight"), H, 2 * I, true, ue);
                        x.down.matrix = source_of(c, index, require(layer, -1, Projection::down, "weight"), I, H, true, ue);
                        x.gate.transposed = x.down.transposed = true;
                        x.up = x.gate;
                        x.gate.step = x.up.step = 2;
                        x.up.first = 1;
                    } else {   // [E, 2I, H] (gate rows then up rows) and [E, H, I]
                        x.gate.matrix = source_of(c, index, require(layer, -1, Projection::gate_up, "weight"), 2 * I, H, true, ue);
                        x.down.matrix = source_of(c, index, require(layer, -1, Projection::down, "weight"), H, I, true, ue);
                        x.up = x.gate;
                        x.up.first = I;
                    }
                    if (c.expert_bias) {
                        const auto& gu = require(layer, -1, Projection::gate_up, "bias");
                        const auto& dn = require(layer, -1, Projection::down, "bias");
                        const auto expect = [&](const ClassifiedTensor& t, uint64_t n) {
                            const auto& s = t.ref.info->shape;
                            if (s.size() != 2 || s[0] != c.num_experts || static_cast<uint64_t>(s[1]) != n ||
                                !dtype_is_float(t.ref.info->dtype))
                                fail(t.ref.file->path(), ": tensor '", t.ref.info->name, "': expected a floating [",
                                     c.num_experts, ", ", n, "] expert bias, got ", dtype_name(t.ref.info->dtype), " ",
                                     shape_string(s));
                        };
                        expect(gu, 2 * I);
                        expect(dn, H);
                        x.gate_bias = BiasSource{gu.ref.file, gu.ref.info, ue, 0, 2};
                        x.up_bias = BiasSource{gu.ref.file, gu.ref.info, ue, 1, 2};
                        x.down_bias = BiasSource{dn.ref.file, dn.ref.info, ue, 0, 1};
                    }
                    break;
                }
                case ExpertLayout::none: fail("layer ", layer, ": MoE layer without experts");
            }
            check_projection(x.gate, I, H);
            check_projection(x.up, I, H);
            check_projection(x.down, H, I);
            lp.experts.push_back(std::move(x));
        }
        plan.layers.push_back(std::move(lp));
    }
    return plan;
}

void read_projection(const ProjectionSource& p, uint64_t rows, uint64_t cols, float* out,
                     std::vector<float>& scratch) {
    if (!p.transposed && p.step == 1) {
        p.matrix.read_rows(p.first, rows, out);
        return;
    }
    if (!p.transposed) {
        for (uint64_t i = 0; i < rows; ++i) p.matrix.read_rows(p.first + i * p.step, 1, out + i * cols);
        return;
    }
    scratch.resize(p.matrix.rows * p.matrix.cols);
    p.matrix.read_rows(0, p.matrix.rows, scratch.data());
    for (uint64_t i = 0; i < rows; ++i)
        for (uint64_t j = 0; j < cols; ++j) out[i * cols + j] = scratch[j * p.matrix.cols + p.first + i * p.step];
}

void read_bias(const BiasSource& b, uint64_t count, float* out) {
    const uint64_t width = static_cast<uint64_t>(b.tensor->shape[1]);
    std::vector<float> row(width);
    const auto data = b.file->data(*b.tensor);
    to_float32(b.tensor->dtype, data.data() + b.slice * width * dtype_size(b.tensor->dtype), width, row.data());
    for (uint64_t i = 0; i < count; ++i) out[i] = row[b.first + i * b.step];
}

}  // namespace moepack
