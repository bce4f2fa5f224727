// The CUDA kernels (shaders/: quantize_input, gemv, expert_gate_up / expert_down_add, gemm,
// rms_norm, swiglu, route, embed_rows; attention's are in test_cuda_attention.cpp) against
// their CPU twins on random data, on shapes that are whole multiples of every tile and on
// awkward ones (1 row, odd rows, columns that end mid-group
// and mid-word, a hidden size of 2049). Outputs are poisoned (NaN) before each run. Needs a GPU: the
// tests carry the ctest label "gpu" and tools/run-tests.sh leaves them out.
//
// gemv bound: against a float64 reference (affine rows: of the int8 products the kernels
// define, the quantisation checked separately), every output is a float32
// sum of at most cols terms per lane chain plus the warp reduction, so with
// A = sum_c (|q_c s_g| + |b_g|) |x_c| (sum |w||x| for float weights) and u = 2^-24:
// |error| <= (cols + 64) u A.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "blocks.hpp"
#include "cpu/matmul.hpp"
#include "model_config.hpp"
#include "thread_pool.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "gpu_test_support.hpp"
#include "kernels.hpp"
#include "pack_format.hpp"
#include "weight_view.hpp"

namespace moepack::cuda {
namespace {

constexpr double kU = 1.0 / 16777216.0;

// A random matrix in one encoding: host bytes as the pack stores them, and per weight the
// magnitude that enters the error bound (|q s| + |b| for affine, |w| otherwise) and value.
struct Matrix {
    engine::WeightFormat format;
    int64_t rows, cols;
    int bits, group;
    std::vector<std::byte> bytes;
    std::vector<double> value, magnitude;   // [rows, cols]
    std::vector<uint32_t> code;             // affine: [rows, cols]
    pack::MatrixLayout layout;
};

Matrix random_matrix(std::mt19937& rng, engine::WeightFormat format, int64_t rows, int64_t cols, int bits, int group) {
    Matrix m{format, rows, cols, bits, group, {}, {}, {}, {}, {}};
    const auto n = static_cast<size_t>(rows * cols);
    m.value.resize(n);
    m.magnitude.resize(n);
    if (format == engine::WeightFormat::affine) {
        m.layout = pack::matrix_layout(static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), bits, group);
        m.bytes.assign(m.layout.bytes(), std::byte{0});
        const int64_t words = static_cast<int64_t>(m.layout.row_words()), groups = static_cast<int64_t>(m.layout.groups());
        auto* codes = reinterpret_cast<uint32_t*>(m.bytes.data());
        auto* scales = reinterpret_cast<uint16_t*>(m.bytes.data() + m.layout.scales_offset());
        auto* biases = reinterpret_cast<uint16_t*>(m.bytes.data() + m.layout.biases_offset());
        std::uniform_int_distribution<uint32_t> code(0, (1u << bits) - 1);
        m.code.resize(n);
        std::uniform_real_distribution<float> sd(-0.05f, 0.05f);
        for (int64_t i = 0; i < rows * groups; ++i) {
            scales[i] = float_to_bf16(sd(rng));
            biases[i] = float_to_bf16(sd(rng));
        }
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
                const uint32_t q = code(rng);
                m.code[static_cast<size_t>(r * cols + c)] = q;
                codes[r * words + c * bits / 32] |= q << (c * bits % 32);
                const double s = bf16_to_float(scales[r * groups + c / group]), b = bf16_to_float(biases[r * groups + c / group]);
                m.value[static_cast<size_t>(r * cols + c)] = q * s + b;
                m.magnitude[static_cast<size_t>(r * cols + c)] = std::abs(q * s) + std::abs(b);
            }
        return m;
    }
    const auto values = random_floats(rng, n, 0.5f);
    const size_t width = format == engine::WeightFormat::f32 ? 4 : 2;
    m.bytes.resize(n * width);
    for (size_t i = 0; i < n; ++i) {
        double v = values[i];
        if (format == engine::WeightFormat::f32) {
            std::memcpy(m.bytes.data() + 4 * i, &values[i], 4);
        } else {
            const uint16_t h = format == engine::WeightFormat::bf16 ? float_to_bf16(values[i]) : float_to_f16(values[i]);
            std::memcpy(m.bytes.data() + 2 * i, &h, 2);
            v = format == engine::WeightFormat::bf16 ? bf16_to_float(h) : f16_to_float(h);
        }
        m.value[i] = v;
        m.magnitude[i] = std::abs(v);
    }
    return m;
}

engine::WeightMatrix view(const Matrix& m, const std::byte* base) {
    if (m.format == engine::WeightFormat::affine) return engine::WeightMatrix::from_record(base, m.layout);
    engine::WeightMatrix w;
    w.format = m.format;
    w.rows = m.rows;
    w.cols = m.cols;
    w.data = base;
    return w;
}

struct Shape {
    int64_t rows, cols;
};
// {65536, 160}: rows read two per warp (gemv.cu's long matrices of short rows)
const Shape kShapes[] = {{1, 32}, {7, 100}, {33, 2048}, {130, 96}, {768, 2048}, {2048, 768}, {5, 4100}, {3, 17}, {65536, 160}};

// x quantised per group as quantize_input does it (the CPU decode kernels' rule), in
// natural order, with each group's scale and float sum.
struct HostQuantized {
    std::vector<int8_t> q;         // [n, groups * group]
    std::vector<float> scales;     // [n, groups]
    std::vector<double> sums;      // [n, groups]
};

HostQuantized quantize_host(const std::vector<float>& x, int64_t n, int64_t cols, int group) {
    const int64_t groups = (cols + group - 1) / group;
    HostQuantized h{std::vector<int8_t>(static_cast<size_t>(n * groups * group), 0), std::vector<float>(static_cast<size_t>(n * groups), 0.0f),
                    std::vector<double>(static_cast<size_t>(n * groups), 0.0)};
    for (int64_t t = 0; t < n; ++t)
        for (int64_t g = 0; g < groups; ++g) {
            const auto i = static_cast<size_t>(t * groups + g);
            float largest = 0;
            for (int64_t c = g * group; c < std::min<int64_t>(cols, (g + 1) * group); ++c) {
                const float v = x[static_cast<size_t>(t * cols + c)];
                largest = std::max(largest, std::abs(v));
                h.sums[i] += v;
            }
            const float scale = largest > 0 ? largest / 127.0f : 0.0f;
            h.scales[i] = scale;
            const float inv = scale != 0 ? 1.0f / scale : 0.0f;
            for (int64_t c = g * group; c < std::min<int64_t>(cols, (g + 1) * group); ++c) {
                const float v = std::min(std::max(x[static_cast<size_t>(t * cols + c)] * inv, -127.0f), 127.0f);
                h.q[static_cast<size_t>(t * groups * group + c)] = static_cast<int8_t>(std::nearbyint(v));
            }
        }
    return h;
}

// The input of products with m on the GPU: x, and for affine m its quantisation.
class DeviceInput {
public:
    DeviceInput(const Matrix& m, const std::vector<float>& x, int64_t n)
        : x_(x), q_(m.format == engine::WeightFormat::affine ? quantized_input_bytes(n, m.cols, m.group) : 1) {
        in_.x = x_.as<float>();
        if (m.format == engine::WeightFormat::affine) {
            quantized_ = quantized_input_in(q_.as<std::byte>(), n, m.cols, m.group, m.bits);
            quantize_input(x_.as<float>(), quantized_, nullptr);
            in_.quantized = &quantized_;
        }
    }
    const ProductInput& get() const { return in_; }
    const QuantizedInput& quantized() const { return quantized_; }

private:
    DeviceBuffer x_, q_;
    QuantizedInput quantized_;
    ProductInput in_;
};

// Reference of row r of m times input t, and the magnitude A of its terms (error bound
// (cols + 64) u A): affine rows against the quantised input (sum over groups of
// scale_w scale_x sum(q xq) + bias_w sum(x)), float rows against x.
std::pair<double, double> reference_dot(const Matrix& m, int64_t r, const std::vector<float>& x, const HostQuantized& hq,
                                        int64_t t) {
    double ref = 0, a = 0;
    if (m.format != engine::WeightFormat::affine) {
        for (int64_t c = 0; c < m.cols; ++c) {
            const auto i = static_cast<size_t>(r * m.cols + c);
            ref += m.value[i] * x[static_cast<size_t>(t * m.cols + c)];
            a += m.magnitude[i] * std::abs(x[static_cast<size_t>(t * m.cols + c)]);
        }
        return {ref, a};
    }
    const int64_t groups = (m.cols + m.group - 1) / m.group;
    for (int64_t g = 0; g < groups; ++g) {
        const double s = bf16_to_float(reinterpret_cast<const uint16_t*>(m.bytes.data() + m.layout.scales_offset())[r * groups + g]);
        const double b = bf16_to_float(reinterpret_cast<const uint16_t*>(m.bytes.data() + m.layout.biases_offset())[r * groups + g]);
        const double xs = hq.scales[static_cast<size_t>(t * groups + g)];
        double isum = 0, iabs = 0, xabs = 0;
        for (int64_t c = g * m.group; c < std::min<int64_t>(m.cols, (g + 1) * m.group); ++c) {
            const auto i = static_cast<size_t>(r * m.cols + c);
            const double q = m.code[i];
            const double xq = hq.q[static_cast<size_t>(t * groups * m.group + c)];
            isum += q * xq;
            iabs += std::abs(q * xq);
            xabs += std::abs(x[static_cast<size_t>(t * m.cols + c)]);
        }
        ref += s * xs * isum + b * hq.sums[static_cast<size_t>(t * groups + g)];
        a += std::abs(s * xs) * iabs + std::abs(b) * xabs;
    }
    return {ref, a};
}

// The quantised input on the GPU equals the host rule: same codes (in code-plane order),
// same scales, sums within float rounding.
void check_quantized(const DeviceInput& in, const HostQuantized& hq, const Matrix& m, int64_t n) {
    const QuantizedInput& q = in.quantized();
    const int64_t padded = q.padded(), per_word = 32 / m.bits, planes = 8 / m.bits;
    std::vector<int8_t> values(static_cast<size_t>(n * padded));
    std::vector<float> scales(static_cast<size_t>(n * q.groups)), sums(scales.size());
    ASSERT_EQ(cudaMemcpy(values.data(), q.values, values.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(scales.data(), q.scales, scales.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(sums.data(), q.sums, sums.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int64_t t = 0; t < n; ++t)
        for (int64_t c = 0; c < padded; ++c) {
            const int64_t i = c % per_word, at = c - i + (i % planes) * 4 + i / planes;
            ASSERT_EQ(values[static_cast<size_t>(t * padded + at)], hq.q[static_cast<size_t>(t * padded + c)])
                << "input " << t << " value " << c << " (" << m.bits << "-bit planes, group " << m.group << ")";
        }
    for (size_t i = 0; i < scales.size(); ++i) {
        ASSERT_EQ(scales[i], hq.scales[i]) << "group " << i;
        ASSERT_NEAR(sums[i], hq.sums[i], 1e-5 * m.group) << "group " << i;
    }
}

void check_gemv(const Matrix& m, int64_t n, std::mt19937& rng) {
    const auto x = random_floats(rng, static_cast<size_t>(n * m.cols), 1.0f);
    const HostQuantized hq = m.format == engine::WeightFormat::affine ? quantize_host(x, n, m.cols, m.group) : HostQuantized{};
    DeviceBuffer w_dev(m.bytes), y_dev(static_cast<size_t>(n * m.rows) * sizeof(float));
    const DeviceInput in(m, x, n);
    if (m.format == engine::WeightFormat::affine) check_quantized(in, hq, m, n);
    gemv(device_matrix(view(m, w_dev.as<std::byte>())), in.get(), n, y_dev.as<float>(), GemvOutput::store, nullptr);
    const auto y = y_dev.read<float>();
    for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < m.rows; ++r) {
            const auto [ref, a] = reference_dot(m, r, x, hq, t);
            const double got = y[static_cast<size_t>(t * m.rows + r)];
            ASSERT_LE(std::abs(got - ref), (static_cast<double>(m.cols) + 64) * kU * a + 1e-30)
                << "rows " << m.rows << " cols " << m.cols << " bits " << m.bits << " group " << m.group << " n " << n
                << " output [" << t << ", " << r << "]: " << got << " vs " << ref;
        }
}

TEST(CudaGemv, AffineRecordsMatchTheReference) {
    ASSERT_TRUE(have_gpu()) << "no CUDA device (these tests run on a machine with a GPU: ctest -L gpu)";
    std::mt19937 rng(7);
    for (int bits : {2, 4, 8})
        for (int group : {32, 64, 128})
            for (const Shape& s : kShapes)
                for (int64_t n : {1, 3, 8}) check_gemv(random_matrix(rng, engine::WeightFormat::affine, s.rows, s.cols, bits, group), n, rng);
}

TEST(CudaGemv, FloatWeightsMatchTheReference) {
    ASSERT_TRUE(have_gpu()) << "no CUDA device (these tests run on a machine with a GPU: ctest -L gpu)";
    std::mt19937 rng(11);
    for (auto format : {engine::WeightFormat::bf16, engine::WeightFormat::f16, engine::WeightFormat::f32})
        for (const Shape& s : kShapes)
            for (int64_t n : {1, 2, 8}) check_gemv(random_matrix(rng, format, s.rows, s.cols, 16, 0), n, rng);
}

// q, k and v in one launch, and the add mode (outputs added to what is there); with one
// input and even row counts the rows are read two per warp once there are enough of them.
TEST(CudaGemv, SeveralMatricesInOneLaunchAndAddedOutputs) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(31);
    struct Case {
        int64_t n, rows[3];
    };
    for (auto format : {engine::WeightFormat::affine, engine::WeightFormat::bf16})
        for (GemvOutput output : {GemvOutput::store, GemvOutput::add})
            for (const Case& c : {Case{2, {64, 9, 9}}, Case{1, {65536, 10, 6}}, Case{1, {65536, 9, 9}}}) {
            const int64_t cols = 320, n = c.n;
            const int64_t(&rows)[3] = c.rows;
            std::vector<Matrix> ms;
            for (int64_t r : rows) ms.push_back(random_matrix(rng, format, r, cols, 4, 64));
            const auto x = random_floats(rng, static_cast<size_t>(n * cols), 1.0f);
            const HostQuantized hq = format == engine::WeightFormat::affine ? quantize_host(x, n, cols, 64) : HostQuantized{};
            const DeviceInput in(ms[0], x, n);
            std::vector<std::unique_ptr<DeviceBuffer>> w_dev, y_dev;
            std::vector<std::vector<float>> before;
            std::vector<GemvProduct> list;
            for (const Matrix& m : ms) {
                before.push_back(random_floats(rng, static_cast<size_t>(n * m.rows), 1.0f));
                w_dev.push_back(std::make_unique<DeviceBuffer>(m.bytes));
                y_dev.push_back(std::make_unique<DeviceBuffer>(before.back()));
                list.push_back({device_matrix(view(m, w_dev.back()->as<std::byte>())), y_dev.back()->as<float>()});
            }
            gemv(list.data(), 3, in.get(), n, output, nullptr);
            for (size_t i = 0; i < ms.size(); ++i) {
                const auto y = y_dev[i]->read<float>();
                for (int64_t t = 0; t < n; ++t)
                    for (int64_t r = 0; r < ms[i].rows; ++r) {
                        auto [ref, a] = reference_dot(ms[i], r, x, hq, t);
                        const double prior = before[i][static_cast<size_t>(t * ms[i].rows + r)];
                        if (output == GemvOutput::add) ref += prior, a += std::abs(prior);
                        ASSERT_LE(std::abs(y[static_cast<size_t>(t * ms[i].rows + r)] - ref), static_cast<double>(cols + 64) * kU * a + 1e-30)
                            << "matrix " << i << " row " << r << " input " << t;
                    }
            }
        }
}

// A table of expert blocks (gate, up, down records each) and the routed experts' products;
// the blocks side by side in expert order, or in a cache's slots found through a slot table.
TEST(CudaExperts, GateUpAndDownAddMatchTheReference) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(29);
    const std::vector<int32_t> slot_of = {2, 4, 0, 1, 3};   // expert -> slot in the cached layout
    for (auto format : {engine::WeightFormat::affine, engine::WeightFormat::bf16})
        for (int bits : {2, 4, 8})
            for (bool cached : {false, true})
            for (int64_t k : {1, 4, 6, 12}) {   // the down kernel takes experts in batches of 1, 4, 2, 4
            if (format == engine::WeightFormat::bf16 && bits != 4) continue;
            const int64_t experts = 5, inter = 96, hidden = 160;
            const int b = format == engine::WeightFormat::affine ? bits : 16;
            std::vector<Matrix> gate, up, down;
            for (int64_t e = 0; e < experts; ++e) {
                gate.push_back(random_matrix(rng, format, inter, hidden, b, 32));
                up.push_back(random_matrix(rng, format, inter, hidden, b, 32));
                down.push_back(random_matrix(rng, format, hidden, inter, b, 32));
            }
            const size_t up_at = (gate[0].bytes.size() + 63) / 64 * 64, down_at = up_at + (up[0].bytes.size() + 63) / 64 * 64;
            const size_t stride = (down_at + down[0].bytes.size() + 4095) / 4096 * 4096;
            std::vector<std::byte> table(stride * experts);
            for (int64_t e = 0; e < experts; ++e) {
                std::byte* block = table.data() + (cached ? slot_of[static_cast<size_t>(e)] : e) * stride;
                std::memcpy(block, gate[e].bytes.data(), gate[e].bytes.size());
                std::memcpy(block + up_at, up[e].bytes.data(), up[e].bytes.size());
                std::memcpy(block + down_at, down[e].bytes.data(), down[e].bytes.size());
            }
            std::vector<int32_t> ids;   // repeats allowed
            std::vector<float> weights;
            for (int64_t j = 0; j < k; ++j) {
                ids.push_back(static_cast<int32_t>((3 + 2 * j) % experts));
                weights.push_back(0.5f - 0.375f * static_cast<float>(j % 3) + 0.0625f * static_cast<float>(j));
            }
            const auto x = random_floats(rng, static_cast<size_t>(hidden), 1.0f);
            auto residual = random_floats(rng, static_cast<size_t>(hidden), 1.0f);
            DeviceBuffer table_dev(table), ids_dev(ids), w_dev(weights), act_dev(static_cast<size_t>(k * inter) * 4), res_dev(residual);
            DeviceBuffer slots_dev(slot_of);
            const ExpertBlocks blocks{static_cast<int64_t>(stride), cached ? slots_dev.as<int32_t>() : nullptr};
            const DeviceInput in(gate[0], x, 1);
            const std::byte* base = table_dev.as<std::byte>();
            expert_gate_up(device_matrix(view(gate[0], base)), device_matrix(view(up[0], base + up_at)), blocks,
                           ids_dev.as<int32_t>(), k, in.get(), act_dev.as<float>(), nullptr);
            const auto act = act_dev.read<float>();
            if (k < experts) {   // distinct ids: the launch that routes itself makes the same activations and route()'s choice
                std::vector<float> logits(static_cast<size_t>(experts), -5.0f);
                for (int64_t j = 0; j < k; ++j) logits[static_cast<size_t>(ids[static_cast<size_t>(j)])] = 10.0f - static_cast<float>(j);
                DeviceBuffer logits_dev(logits), routed_act(static_cast<size_t>(k * inter) * 4), routed_ids(static_cast<size_t>(k) * 4),
                    routed_w(static_cast<size_t>(k) * 4), want_ids(static_cast<size_t>(k) * 4), want_w(static_cast<size_t>(k) * 4);
                expert_gate_up_routed(logits_dev.as<float>(), experts, RouteFunction::softmax_topk, true, 2.5f,
                                      device_matrix(view(gate[0], base)), device_matrix(view(up[0], base + up_at)), blocks, k,
                                      in.get(), routed_act.as<float>(), routed_ids.as<int32_t>(), routed_w.as<float>(), nullptr);
                route(logits_dev.as<float>(), 1, experts, k, RouteFunction::softmax_topk, true, 2.5f, want_ids.as<int32_t>(),
                      want_w.as<float>(), nullptr);
                EXPECT_EQ(routed_ids.read<int32_t>(), ids) << "bits " << b << " cached " << cached << " k " << k;
                EXPECT_EQ(routed_w.read<float>(), want_w.read<float>()) << "bits " << b << " cached " << cached << " k " << k;
                ASSERT_EQ(routed_act.read<float>(), act) << "bits " << b << " cached " << cached << " k " << k;
            }
            const HostQuantized hx = format == engine::WeightFormat::affine ? quantize_host(x, 1, hidden, 32) : HostQuantized{};
            for (int64_t j = 0; j < k; ++j)
                for (int64_t r = 0; r < inter; ++r) {
                    const auto e = static_cast<size_t>(ids[static_cast<size_t>(j)]);
                    const auto [g, ga] = reference_dot(gate[e], r, x, hx, 0);
                    const auto [u, ua] = reference_dot(up[e], r, x, hx, 0);
                    const double want = g / (1 + std::exp(-g)) * u;
                    const double bound = (static_cast<double>(hidden + 64) * kU * (ga * std::abs(u) + ua * std::abs(g)) + 4 * kU * std::abs(want)) * 2;
                    ASSERT_LE(std::abs(act[static_cast<size_t>(j * inter + r)] - want), bound + 1e-30)
                        << "bits " << b << " cached " << cached << " k " << k << " slot " << j << " row " << r;
                }
            // down: the activations the kernel made are the inputs
            Matrix down_shape = down[0];
            const DeviceInput act_in(down_shape, act, k);
            expert_down_add(device_matrix(view(down[0], base + down_at)), blocks, ids_dev.as<int32_t>(),
                            w_dev.as<float>(), k, act_in.get(), res_dev.as<float>(), nullptr);
            const auto got = res_dev.read<float>();
            const HostQuantized ha = format == engine::WeightFormat::affine ? quantize_host(act, k, inter, 32) : HostQuantized{};
            for (int64_t r = 0; r < hidden; ++r) {
                double want = residual[static_cast<size_t>(r)], a = std::abs(want);
                for (int64_t j = 0; j < k; ++j) {
                    const auto [d, da] = reference_dot(down[static_cast<size_t>(ids[static_cast<size_t>(j)])], r, act, ha, j);
                    want += weights[static_cast<size_t>(j)] * d;
                    a += std::abs(weights[static_cast<size_t>(j)]) * (da + std::abs(d));
                }
                ASSERT_LE(std::abs(got[static_cast<size_t>(r)] - want), static_cast<double>(inter + 64 + k) * kU * a + 1e-30) << "bits " << b << " cached " << cached << " k " << k << " row " << r;
            }
        }
}

// The tensor-core product: one matrix over many input rows (stored and added), and a table
// of experts over the (token, slot) pairs grouped by group_by_expert, gate+up with SwiGLU.
TEST(CudaGemm, DenseRowsMatchTheReference) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(43);
    for (int bits : {2, 4, 8})
        for (int group : {32, 64, 128})
            for (const Shape& s : {Shape{100, 320}, Shape{64, 2048}, Shape{7, 100}, Shape{130, 4100}})
                for (int64_t n : {1, 37, 70})
                    for (GemvOutput output : {GemvOutput::store, GemvOutput::add}) {
                        const Matrix m = random_matrix(rng, engine::WeightFormat::affine, s.rows, s.cols, bits, group);
                        const auto x = random_floats(rng, static_cast<size_t>(n * s.cols), 1.0f);
                        const auto before = random_floats(rng, static_cast<size_t>(n * s.rows), 1.0f);
                        const HostQuantized hq = quantize_host(x, n, s.cols, group);
                        DeviceBuffer w_dev(m.bytes), y_dev(before);
                        const DeviceInput in(m, x, n);
                        RowGroups rows;
                        rows.count = n;
                        gemm(device_matrix(view(m, w_dev.as<std::byte>())), {}, in.quantized(), rows, y_dev.as<float>(), output, nullptr);
                        const auto y = y_dev.read<float>();
                        for (int64_t t = 0; t < n; ++t)
                            for (int64_t r = 0; r < s.rows; ++r) {
                                auto [ref, a] = reference_dot(m, r, x, hq, t);
                                const double prior = before[static_cast<size_t>(t * s.rows + r)];
                                if (output == GemvOutput::add) ref += prior, a += std::abs(prior);
                                ASSERT_LE(std::abs(y[static_cast<size_t>(t * s.rows + r)] - ref),
                                          static_cast<double>(s.cols + 64) * kU * a + 1e-30)
                                    << "bits " << bits << " group " << group << " rows " << s.rows << " cols " << s.cols
                                    << " n " << n << " output [" << t << ", " << r << "]";
                            }
                    }
}

TEST(CudaGemm, GroupedExpertsMatchTheReference) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(47);
    const std::vector<int32_t> slot_of = {3, 5, 0, 2, 4, 1};   // expert -> slot in the cached layout
    for (int bits : {2, 4, 8})
        for (bool cached : {false, true}) {
        // 90 pairs per used expert: several row tiles each
        const int64_t experts = 6, inter = 96, hidden = 192, n = 150, k = 3;
        std::vector<Matrix> gate, up;
        for (int64_t e = 0; e < experts; ++e) {
            gate.push_back(random_matrix(rng, engine::WeightFormat::affine, inter, hidden, bits, 64));
            up.push_back(random_matrix(rng, engine::WeightFormat::affine, inter, hidden, bits, 64));
        }
        const size_t up_at = (gate[0].bytes.size() + 63) / 64 * 64, stride = (up_at + up[0].bytes.size() + 4095) / 4096 * 4096;
        std::vector<std::byte> table(stride * experts);
        for (int64_t e = 0; e < experts; ++e) {
            std::byte* block = table.data() + (cached ? slot_of[static_cast<size_t>(e)] : e) * stride;
            std::memcpy(block, gate[e].bytes.data(), gate[e].bytes.size());
            std::memcpy(block + up_at, up[e].bytes.data(), up[e].bytes.size());
        }
        std::vector<int32_t> ids(static_cast<size_t>(n * k));
        for (int64_t t = 0; t < n; ++t)   // k distinct experts per token, expert 5 never chosen
            for (int64_t j = 0; j < k; ++j) ids[static_cast<size_t>(t * k + j)] = static_cast<int32_t>((t * 7 + j * 2) % 5);
        const auto x = random_floats(rng, static_cast<size_t>(n * hidden), 1.0f);
        DeviceBuffer table_dev(table), ids_dev(ids), offsets((experts + 1) * 4), order(ids.size() * 4), tiles((experts + 1) * 4);
        DeviceBuffer act_dev(static_cast<size_t>(n * k * inter) * 4), slots_dev(slot_of);
        group_by_expert(ids_dev.as<int32_t>(), n, k, experts, offsets.as<int32_t>(), order.as<int32_t>(), tiles.as<int32_t>(), nullptr);
        const auto got_offsets = offsets.read<int32_t>();
        const auto got_tiles = tiles.read<int32_t>();
        ASSERT_EQ(got_tiles[0], 0);
        for (size_t e = 0; e < static_cast<size_t>(experts); ++e)   // row tiles of 32
            ASSERT_EQ(got_tiles[e + 1] - got_tiles[e], (got_offsets[e + 1] - got_offsets[e] + 31) / 32) << "expert " << e;
        auto got_order = order.read<int32_t>();
        for (int64_t e = 0; e < experts; ++e)
            for (int32_t i = got_offsets[static_cast<size_t>(e)]; i < got_offsets[static_cast<size_t>(e) + 1]; ++i)
                ASSERT_EQ(ids[static_cast<size_t>(got_order[static_cast<size_t>(i)])], e) << "pair in expert " << e << "'s rows";
        std::sort(got_order.begin(), got_order.end());
        for (size_t i = 0; i < got_order.size(); ++i) ASSERT_EQ(got_order[i], static_cast<int32_t>(i)) << "every pair once";
        const DeviceInput in(gate[0], x, n);
        RowGroups groups;
        groups.offsets = offsets.as<int32_t>(), groups.order = order.as<int32_t>(), groups.tiles = tiles.as<int32_t>();
        groups.problems = experts, groups.count = n * k, groups.input_div = k;
        const std::byte* base = table_dev.as<std::byte>();
        const ExpertBlocks blocks{static_cast<int64_t>(stride), cached ? slots_dev.as<int32_t>() : nullptr};
        gemm_swiglu(device_matrix(view(gate[0], base)), device_matrix(view(up[0], base + up_at)), blocks, in.quantized(), groups,
                    act_dev.as<float>(), nullptr);
        const auto act = act_dev.read<float>();
        const HostQuantized hx = quantize_host(x, n, hidden, 64);
        for (int64_t p = 0; p < n * k; ++p)
            for (int64_t r = 0; r < inter; ++r) {
                const auto e = static_cast<size_t>(ids[static_cast<size_t>(p)]);
                const auto [g, ga] = reference_dot(gate[e], r, x, hx, p / k);
                const auto [u, ua] = reference_dot(up[e], r, x, hx, p / k);
                const double want = g / (1 + std::exp(-g)) * u;
                const double bound = (static_cast<double>(hidden + 64) * kU * (ga * std::abs(u) + ua * std::abs(g)) + 4 * kU * std::abs(want)) * 2;
                ASSERT_LE(std::abs(act[static_cast<size_t>(p * inter + r)] - want), bound + 1e-30)
                    << "bits " << bits << " cached " << cached << " pair " << p << " row " << r;
            }
    }
}

TEST(CudaGemv, BadInputsAreRefused) {
    ASSERT_TRUE(have_gpu()) << "no CUDA device (these tests run on a machine with a GPU: ctest -L gpu)";
    std::mt19937 rng(3);
    const Matrix m = random_matrix(rng, engine::WeightFormat::affine, 4, 64, 4, 64);
    const Matrix other = random_matrix(rng, engine::WeightFormat::affine, 4, 64, 8, 64);
    DeviceBuffer w_dev(m.bytes);
    const auto x = std::vector<float>(9 * 64, 1.0f);
    const DeviceInput in(m, x, 9), wrong_bits(other, x, 9);
    DeviceBuffer y_dev(9 * 4 * sizeof(float));
    const DeviceMatrix w = device_matrix(view(m, w_dev.as<std::byte>()));
    EXPECT_THROW(gemv(w, in.get(), 9, y_dev.as<float>(), GemvOutput::store, nullptr), moepack::Error);
    EXPECT_THROW(gemv(w, wrong_bits.get(), 1, y_dev.as<float>(), GemvOutput::store, nullptr), moepack::Error);
    EXPECT_THROW(gemv(w, ProductInput{in.get().x, nullptr}, 1, y_dev.as<float>(), GemvOutput::store, nullptr), moepack::Error);
    RowGroups rows;
    rows.count = 1;
    EXPECT_THROW(gemm(w, {}, wrong_bits.quantized(), rows, y_dev.as<float>(), GemvOutput::store, nullptr), moepack::Error);
    RowGroups no_tiles;   // grouped rows without group_by_expert's tile numbering
    DeviceBuffer offsets(std::vector<int32_t>{0, 1}), order(std::vector<int32_t>{0});
    no_tiles.offsets = offsets.as<int32_t>(), no_tiles.order = order.as<int32_t>(), no_tiles.count = 1;
    EXPECT_THROW(gemm(w, {}, in.quantized(), no_tiles, y_dev.as<float>(), GemvOutput::store, nullptr), moepack::Error);
    // gate and up records laid out differently (other widths), for either kernel
    const Matrix wide = random_matrix(rng, engine::WeightFormat::affine, 4, 128, 4, 64);
    DeviceBuffer wide_dev(wide.bytes), ids_dev(std::vector<int32_t>{0});
    const DeviceMatrix up = device_matrix(view(wide, wide_dev.as<std::byte>()));
    EXPECT_THROW(expert_gate_up(w, up, {}, ids_dev.as<int32_t>(), 1, in.get(), y_dev.as<float>(), nullptr), moepack::Error);
    EXPECT_THROW(gemm_swiglu(w, up, {}, in.quantized(), rows, y_dev.as<float>(), nullptr), moepack::Error);
    // the launch that routes for itself: more experts chosen than there are, more logits than its shared memory holds
    DeviceBuffer logits_dev(std::vector<float>(20000, 0.0f)), routed_ids(64), routed_w(64);
    const auto routed = [&](int64_t experts, int64_t k) {
        expert_gate_up_routed(logits_dev.as<float>(), experts, RouteFunction::softmax_topk, false, 1.0f, w, w, {}, k, in.get(),
                              y_dev.as<float>(), routed_ids.as<int32_t>(), routed_w.as<float>(), nullptr);
    };
    EXPECT_THROW(routed(2, 3), moepack::Error);
    EXPECT_THROW(routed(20000, 1), moepack::Error);
    DeviceMatrix misaligned = w;   // scales the products copy in 4-byte words
    misaligned.scales = reinterpret_cast<const uint16_t*>(reinterpret_cast<const char*>(w.scales) + 2);
    EXPECT_THROW(gemm(misaligned, {}, in.quantized(), rows, y_dev.as<float>(), GemvOutput::store, nullptr), moepack::Error);
    // attention asked to quantise into an input of another width
    const QuantizedInput narrow = in.quantized();   // 64 columns, not 2 heads of 64
    DeviceBuffer q(2 * 64 * sizeof(float)), cache(4 * 64 * sizeof(float)), out(2 * 64 * sizeof(float));
    DeviceBuffer workspace(attention_workspace_bytes(1, 2, 64, 4));
    const DeviceBuffer pos(std::vector<int32_t>{0});
    EXPECT_THROW(attention(q.as<float>(), cache.as<float>(), cache.as<float>(), out.as<float>(), 1, pos.as<int32_t>(), 2, 1, 64, 0,
                           4, workspace.as<float>(), &narrow, nullptr),
                 moepack::Error);
    // attention over head_dim not a multiple of 4, or a cache not 16-byte aligned
    EXPECT_THROW(attention(q.as<float>(), cache.as<float>(), cache.as<float>(), out.as<float>(), 1, pos.as<int32_t>(), 2, 1, 62, 0,
                           4, workspace.as<float>(), nullptr, nullptr),
                 moepack::Error);
    EXPECT_THROW(attention(q.as<float>(), cache.as<float>() + 1, cache.as<float>(), out.as<float>(), 1, pos.as<int32_t>(), 2, 1, 64,
                           0, 3, workspace.as<float>(), nullptr, nullptr),
                 moepack::Error);
}

TEST(CudaBlocks, RmsNormAndSwigluMatchTheCpu) {
    ASSERT_TRUE(have_gpu()) << "no CUDA device (these tests run on a machine with a GPU: ctest -L gpu)";
    std::mt19937 rng(5);
    for (int64_t dim : {1, 31, 64, 2048, 4097}) {
        const int64_t n = 3;
        const auto x = random_floats(rng, static_cast<size_t>(n * dim), 2.0f);
        const auto w = random_floats(rng, static_cast<size_t>(dim), 1.5f);
        std::vector<float> want(x.size());
        engine::rms_norm_to(x.data(), want.data(), n, dim, w.data(), 1e-6f);
        DeviceBuffer x_dev(x), w_dev(w), out(x.size() * sizeof(float));
        rms_norm(x_dev.as<float>(), out.as<float>(), n, dim, w_dev.as<float>(), 1e-6f, nullptr);
        const auto got = out.read<float>();
        for (size_t i = 0; i < got.size(); ++i)
            ASSERT_NEAR(got[i], want[i], 1e-5 * (std::abs(want[i]) + 1e-3)) << "dim " << dim << " value " << i;

        // SwiGLU of the n rows, then with each row scaled by sigmoid of its gate (a shared expert's)
        const auto up = random_floats(rng, x.size(), 3.0f);
        const auto row_gates = random_floats(rng, static_cast<size_t>(n), 4.0f);
        std::vector<float> act(x.size());
        engine::swiglu(x.data(), up.data(), act.data(), static_cast<int64_t>(x.size()));
        DeviceBuffer up_dev(up), gates_dev(row_gates), act_dev(x.size() * sizeof(float));
        for (bool gated : {false, true}) {
            swiglu(x_dev.as<float>(), up_dev.as<float>(), act_dev.as<float>(), n, dim, gated ? gates_dev.as<float>() : nullptr,
                   nullptr);
            const auto got_act = act_dev.read<float>();
            for (size_t i = 0; i < got_act.size(); ++i) {
                const float scale = gated ? 1.0f / (1.0f + std::exp(-row_gates[i / static_cast<size_t>(dim)])) : 1.0f;
                ASSERT_NEAR(got_act[i], act[i] * scale, 4e-6 * (std::abs(act[i]) + 1e-6))
                    << "dim " << dim << " value " << i << " gated " << gated;
            }
        }
    }
}

// The fused norm + quantisation: its float rows are rms_norm's and its quantisations are
// quantize_input's of those rows, bit for bit, for one, two or three encodings at once.
TEST(CudaBlocks, RmsNormQuantizedEqualsNormThenQuantize) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(8);
    const int formats[3][2] = {{8, 64}, {4, 32}, {2, 128}};   // bits, group size
    for (int64_t dim : {64, 100, 2048})
        for (int count = 1; count <= 3; ++count) {
            const int64_t n = 5;
            const auto x = random_floats(rng, static_cast<size_t>(n * dim), 2.0f);
            const auto w = random_floats(rng, static_cast<size_t>(dim), 1.5f);
            DeviceBuffer x_dev(x), w_dev(w), want(x.size() * sizeof(float)), got(x.size() * sizeof(float));
            std::vector<std::unique_ptr<DeviceBuffer>> want_q, got_q;
            std::vector<QuantizedInput> wanted, made;
            for (int k = 0; k < count; ++k) {
                const size_t bytes = quantized_input_bytes(n, dim, formats[k][1]);
                want_q.push_back(std::make_unique<DeviceBuffer>(bytes));
                got_q.push_back(std::make_unique<DeviceBuffer>(bytes));
                wanted.push_back(quantized_input_in(want_q.back()->as<std::byte>(), n, dim, formats[k][1], formats[k][0]));
                made.push_back(quantized_input_in(got_q.back()->as<std::byte>(), n, dim, formats[k][1], formats[k][0]));
            }
            rms_norm(x_dev.as<float>(), want.as<float>(), n, dim, w_dev.as<float>(), 1e-6f, nullptr);
            for (const QuantizedInput& q : wanted) quantize_input(want.as<float>(), q, nullptr);
            rms_norm_quantized(x_dev.as<float>(), got.as<float>(), n, dim, w_dev.as<float>(), 1e-6f, made.data(), count, nullptr);
            EXPECT_EQ(got.read<float>(), want.read<float>()) << "dim " << dim << " count " << count;
            for (int k = 0; k < count; ++k)
                EXPECT_EQ(got_q[static_cast<size_t>(k)]->read<int8_t>(), want_q[static_cast<size_t>(k)]->read<int8_t>())
                    << "dim " << dim << " encoding " << k;
        }
    DeviceBuffer row(std::vector<float>(64, 1.0f)), w_dev(std::vector<float>(64, 1.0f)), q_mem(quantized_input_bytes(1, 64, 64));
    const QuantizedInput q = quantized_input_in(q_mem.as<std::byte>(), 1, 64, 64, 8);
    EXPECT_THROW(rms_norm_quantized(row.as<float>(), row.as<float>(), 1, 64, w_dev.as<float>(), 1e-6f, &q, 1, nullptr),
                 moepack::Error);   // in place
    DeviceBuffer out(64 * sizeof(float));
    const QuantizedInput four[4] = {q, q, q, q};
    EXPECT_THROW(rms_norm_quantized(row.as<float>(), out.as<float>(), 1, 64, w_dev.as<float>(), 1e-6f, four, 4, nullptr),
                 moepack::Error);   // more quantisations than one launch makes
}

TEST(CudaBlocks, EmbeddingRowsDecodeLikeTheCpu) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(41);
    for (auto format : {engine::WeightFormat::affine, engine::WeightFormat::bf16, engine::WeightFormat::f16, engine::WeightFormat::f32})
        for (int bits : {2, 4, 8}) {
            if (format != engine::WeightFormat::affine && bits != 8) continue;
            const Matrix m = random_matrix(rng, format, 37, 100, format == engine::WeightFormat::affine ? bits : 16, 32);
            const std::vector<int32_t> ids = {36, 0, 5, 5};
            DeviceBuffer w_dev(m.bytes), ids_dev(ids), out(ids.size() * 100 * 4);
            embed_rows(device_matrix(view(m, w_dev.as<std::byte>())), ids_dev.as<int32_t>(), 4, out.as<float>(), nullptr);
            const auto got = out.read<float>();
            std::vector<float> want(100);
            for (size_t t = 0; t < ids.size(); ++t) {
                engine::decode_row(view(m, m.bytes.data()), ids[t], want.data());
                for (size_t c = 0; c < 100; ++c)
                    ASSERT_NEAR(got[t * 100 + c], want[c], 1e-6 * (std::abs(want[c]) + 1e-3)) << "row " << ids[t] << " col " << c;
            }
        }
}

// The L2 prefetch reads whole 16-byte units inside each span (memcheck checks it stays
// inside), skips empty spans and refuses more than kMaxL2Spans.
TEST(CudaBlocks, L2PrefetchTakesRaggedSpansAndRefusesTooMany) {
    ASSERT_TRUE(have_gpu());
    DeviceBuffer buffer(size_t{3} << 20);
    const auto* base = buffer.as<std::byte>();
    const DeviceSpan spans[] = {{base + 3, 5}, {base + 17, 0}, {base + 100, (int64_t{3} << 20) - 100}, {base + 1000, 70001}};
    prefetch_to_l2(spans, 4, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<DeviceSpan> many(kMaxL2Spans + 1, DeviceSpan{base, 64});
    EXPECT_THROW(prefetch_to_l2(many.data(), kMaxL2Spans + 1, nullptr), moepack::Error);
    const DeviceSpan negative{base, -1};
    EXPECT_THROW(prefetch_to_l2(&negative, 1, nullptr), moepack::Error);
}

TEST(CudaBlocks, RoutingMatchesTheCpu) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(19);
    for (int64_t experts : {8, 128, 512, 4096})   // 4096: fewer tokens per block (shared memory)
        for (int64_t k : {1, 4, 10})
            for (auto function : {RoutingFunction::softmax_topk, RoutingFunction::topk_softmax})
                for (bool normalize : {false, true}) {
                    if (k > experts) continue;
                    const int64_t n = 11;   // more tokens than one block takes
                    auto logits = random_floats(rng, static_cast<size_t>(n * experts), 4.0f);
                    std::fill(logits.begin(), logits.begin() + experts, 0.5f);   // token 0: all tied, the lower index first
                    RoutingConfig rc;
                    rc.function = function;
                    rc.normalize_topk = normalize;
                    rc.scaling_factor = 2.5;
                    std::vector<engine::Routed> want(static_cast<size_t>(n * k));
                    for (int64_t t = 0; t < n; ++t) engine::route(rc, logits.data() + t * experts, experts, k, want.data() + t * k);
                    DeviceBuffer l_dev(logits), e_dev(static_cast<size_t>(n * k) * 4), w_dev(static_cast<size_t>(n * k) * 4);
                    route(l_dev.as<float>(), n, experts, k,
                          function == RoutingFunction::softmax_topk ? RouteFunction::softmax_topk : RouteFunction::topk_softmax,
                          normalize, 2.5f, e_dev.as<int32_t>(), w_dev.as<float>(), nullptr);
                    const auto got_e = e_dev.read<int32_t>();
                    const auto got_w = w_dev.read<float>();
                    for (size_t i = 0; i < want.size(); ++i) {
                        ASSERT_EQ(got_e[i], want[i].expert) << experts << " experts, top-" << k << ", slot " << i;
                        ASSERT_NEAR(got_w[i], want[i].weight, 1e-5 * std::abs(want[i].weight) + 1e-7)
                            << experts << " experts, top-" << k << ", slot " << i;
                    }
                }
}

}  // namespace
}  // namespace moepack::cuda
