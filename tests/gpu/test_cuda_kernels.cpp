// The CUDA kernels (shaders/: gemv and gemv_experts, rms_norm, swiglu, rope, attention,
// route, moe_combine) against their CPU twins on random data, on shapes that are whole
// multiples of every tile and on awkward ones (1 row, odd rows, columns that end mid-group
// and mid-word, a hidden size of 2049). Outputs are poisoned (NaN) before each run. Needs a GPU: the
// tests carry the ctest label "gpu" and tools/run-tests.sh leaves them out.
//
// gemv bound: against a float64 reference of the decoded weights, every output is a float32
// sum of at most cols terms per lane chain plus the warp reduction, so with
// A = sum_c (|q_c s_g| + |b_g|) |x_c| (sum |w||x| for float weights) and u = 2^-24:
// |error| <= (cols + 64) u A.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "blocks.hpp"
#include "cpu/matmul.hpp"
#include "model_config.hpp"
#include "thread_pool.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "kernels.hpp"
#include "pack_format.hpp"
#include "weight_view.hpp"

namespace moepack::cuda {
namespace {

constexpr double kU = 1.0 / 16777216.0;

bool have_gpu() {
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

// Device memory holding a copy of host bytes (or `bytes` of NaN poison).
class DeviceBuffer {
public:
    explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
        EXPECT_EQ(cudaMalloc(&p_, std::max<size_t>(bytes, 1)), cudaSuccess);
        EXPECT_EQ(cudaMemset(p_, 0xff, bytes_), cudaSuccess);   // NaN in every float
    }
    template <typename T>
    explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size() * sizeof(T)) {
        EXPECT_EQ(cudaMemcpy(p_, host.data(), bytes_, cudaMemcpyHostToDevice), cudaSuccess);
    }
    ~DeviceBuffer() { cudaFree(p_); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    template <typename T>
    T* as() const { return static_cast<T*>(p_); }
    template <typename T>
    std::vector<T> read() const {
        std::vector<T> out(bytes_ / sizeof(T));
        EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_EQ(cudaMemcpy(out.data(), p_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
        return out;
    }

private:
    void* p_ = nullptr;
    size_t bytes_;
};

std::vector<float> random_floats(std::mt19937& rng, size_t n, float scale) {
    std::uniform_real_distribution<float> d(-scale, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// A random matrix in one encoding: host bytes as the pack stores them, and per weight the
// magnitude that enters the error bound (|q s| + |b| for affine, |w| otherwise) and value.
struct Matrix {
    engine::WeightFormat format;
    int64_t rows, cols;
    int bits, group;
    std::vector<std::byte> bytes;
    std::vector<double> value, magnitude;   // [rows, cols]
    pack::MatrixLayout layout;
};

Matrix random_matrix(std::mt19937& rng, engine::WeightFormat format, int64_t rows, int64_t cols, int bits, int group) {
    Matrix m{format, rows, cols, bits, group, {}, {}, {}, {}};
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
        std::uniform_real_distribution<float> sd(-0.05f, 0.05f);
        for (int64_t i = 0; i < rows * groups; ++i) {
            scales[i] = float_to_bf16(sd(rng));
            biases[i] = float_to_bf16(sd(rng));
        }
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
                const uint32_t q = code(rng);
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
const Shape kShapes[] = {{1, 32}, {7, 100}, {33, 2048}, {130, 96}, {768, 2048}, {2048, 768}, {5, 4100}, {3, 17}};

void check_gemv(const Matrix& m, int64_t n, std::mt19937& rng) {
    const auto x = random_floats(rng, static_cast<size_t>(n * m.cols), 1.0f);
    DeviceBuffer w_dev(m.bytes), x_dev(x), y_dev(static_cast<size_t>(n * m.rows) * sizeof(float));
    gemv(device_matrix(view(m, w_dev.as<std::byte>())), x_dev.as<float>(), n, y_dev.as<float>(), nullptr);
    const auto y = y_dev.read<float>();
    for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < m.rows; ++r) {
            double ref = 0, a = 0;
            for (int64_t c = 0; c < m.cols; ++c) {
                const auto i = static_cast<size_t>(r * m.cols + c);
                ref += m.value[i] * x[static_cast<size_t>(t * m.cols + c)];
                a += m.magnitude[i] * std::abs(x[static_cast<size_t>(t * m.cols + c)]);
            }
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

TEST(CudaGemv, ExpertSlotsReadTheMatricesTheirIdsName) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(29);
    for (auto format : {engine::WeightFormat::affine, engine::WeightFormat::bf16}) {
        const int64_t experts = 5, rows = 96, cols = 160;
        std::vector<Matrix> ms;
        for (int64_t e = 0; e < experts; ++e)
            ms.push_back(random_matrix(rng, format, rows, cols, format == engine::WeightFormat::affine ? 4 : 16, 32));
        const size_t stride = (ms[0].bytes.size() + 255) / 256 * 256;
        std::vector<std::byte> table(stride * experts);
        for (int64_t e = 0; e < experts; ++e) std::memcpy(table.data() + e * stride, ms[static_cast<size_t>(e)].bytes.data(), ms[0].bytes.size());
        const std::vector<int32_t> ids = {3, 0, 3, 4};
        const auto count = static_cast<int64_t>(ids.size());
        for (int64_t x_slot : {int64_t{0}, cols}) {   // one input for all, or one per slot
            const auto x = random_floats(rng, static_cast<size_t>(x_slot ? count * cols : cols), 1.0f);
            DeviceBuffer table_dev(table), ids_dev(ids), x_dev(x), y_dev(static_cast<size_t>(count * rows) * sizeof(float));
            gemv_experts(device_matrix(view(ms[0], table_dev.as<std::byte>())), static_cast<int64_t>(stride), ids_dev.as<int32_t>(),
                         count, x_dev.as<float>(), x_slot, 1, y_dev.as<float>(), nullptr);
            const auto y = y_dev.read<float>();
            for (int64_t j = 0; j < count; ++j) {
                const Matrix& m = ms[static_cast<size_t>(ids[static_cast<size_t>(j)])];
                for (int64_t r = 0; r < rows; ++r) {
                    double ref = 0, a = 0;
                    for (int64_t c = 0; c < cols; ++c) {
                        const double xv = x[static_cast<size_t>(j * x_slot + c)];
                        ref += m.value[static_cast<size_t>(r * cols + c)] * xv;
                        a += m.magnitude[static_cast<size_t>(r * cols + c)] * std::abs(xv);
                    }
                    ASSERT_LE(std::abs(y[static_cast<size_t>(j * rows + r)] - ref), (cols + 64) * kU * a + 1e-30)
                        << "slot " << j << " row " << r;
                }
            }
        }
    }
}

TEST(CudaGemv, BadInputCountsAreRefused) {
    ASSERT_TRUE(have_gpu()) << "no CUDA device (these tests run on a machine with a GPU: ctest -L gpu)";
    std::mt19937 rng(3);
    const Matrix m = random_matrix(rng, engine::WeightFormat::affine, 4, 64, 4, 64);
    DeviceBuffer w_dev(m.bytes), x_dev(std::vector<float>(9 * 64, 1.0f)), y_dev(9 * 4 * sizeof(float));
    EXPECT_THROW(gemv(device_matrix(view(m, w_dev.as<std::byte>())), x_dev.as<float>(), 9, y_dev.as<float>(), nullptr),
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

        const auto up = random_floats(rng, x.size(), 3.0f);
        std::vector<float> act(x.size());
        engine::swiglu(x.data(), up.data(), act.data(), static_cast<int64_t>(x.size()));
        DeviceBuffer up_dev(up), act_dev(x.size() * sizeof(float));
        swiglu(x_dev.as<float>(), up_dev.as<float>(), act_dev.as<float>(), static_cast<int64_t>(x.size()), nullptr);
        const auto got_act = act_dev.read<float>();
        for (size_t i = 0; i < got_act.size(); ++i)
            ASSERT_NEAR(got_act[i], act[i], 4e-6 * (std::abs(act[i]) + 1e-6)) << "dim " << dim << " value " << i;
    }
}

// Largest |a - b| over the largest |b|.
double relative_max_error(const std::vector<float>& a, const std::vector<float>& b) {
    double err = 0, scale = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        err = std::max(err, std::abs(static_cast<double>(a[i]) - b[i]));
        scale = std::max(scale, std::abs(static_cast<double>(b[i])));
    }
    return err / scale;
}

TEST(CudaBlocks, RopeMatchesTheCpuTable) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(13);
    for (auto style : {RopeStyle::half, RopeStyle::interleaved})
        for (int64_t rotary : {32, 128}) {
            ModelConfig c;
            c.head_dim = 128;
            c.rope.theta = 1e6;
            c.rope.style = style;
            c.rope.rotary_dim = rotary;
            const engine::Rope cpu(c);
            const int64_t n = 5, heads = 6, position0 = 4093;
            auto x = random_floats(rng, static_cast<size_t>(n * heads * c.head_dim), 2.0f);
            DeviceBuffer x_dev(x), freq(cpu.inv_freq());
            rope(x_dev.as<float>(), n, heads, c.head_dim, rotary, style == RopeStyle::interleaved, freq.as<float>(), position0,
                 nullptr);
            cpu.apply(x.data(), n, heads, c.head_dim, position0);
            EXPECT_LE(relative_max_error(x_dev.read<float>(), x), 2e-6) << "rotary " << rotary;
        }
}

TEST(CudaBlocks, AttentionMatchesTheCpu) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(17);
    engine::ThreadPool pool(2);
    for (int64_t head_dim : {16, 20, 24, 64, 128, 256})
        for (int64_t window : {0, 7})
            for (int64_t n : {1, 4}) {
                const int64_t heads = 8, kv_heads = 2, position0 = 37, positions = position0 + n;
                const auto q = random_floats(rng, static_cast<size_t>(n * heads * head_dim), 1.0f);
                const auto k = random_floats(rng, static_cast<size_t>(positions * kv_heads * head_dim), 1.0f);
                const auto v = random_floats(rng, static_cast<size_t>(positions * kv_heads * head_dim), 1.0f);
                std::vector<float> want(q.size());
                engine::attention(pool, q.data(), k.data(), v.data(), want.data(), n, position0, heads, kv_heads, head_dim,
                                  window);
                DeviceBuffer q_dev(q), k_dev(k), v_dev(v), out(q.size() * sizeof(float));
                attention(q_dev.as<float>(), k_dev.as<float>(), v_dev.as<float>(), out.as<float>(), n, position0, heads,
                          kv_heads, head_dim, window, nullptr);
                EXPECT_LE(relative_max_error(out.read<float>(), want), 1e-5)
                    << "head_dim " << head_dim << " window " << window << " n " << n;
            }
}

TEST(CudaBlocks, RoutingMatchesTheCpu) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(19);
    for (int64_t experts : {8, 128, 512})
        for (int64_t k : {1, 4, 10})
            for (auto function : {RoutingFunction::softmax_topk, RoutingFunction::topk_softmax})
                for (bool normalize : {false, true}) {
                    if (k > experts) continue;
                    const int64_t n = 3;
                    const auto logits = random_floats(rng, static_cast<size_t>(n * experts), 4.0f);
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

TEST(CudaBlocks, MoeCombineAddsTheWeightedExpertOutputs) {
    ASSERT_TRUE(have_gpu());
    std::mt19937 rng(23);
    const int64_t n = 3, k = 8, hidden = 2049;
    auto x = random_floats(rng, static_cast<size_t>(n * hidden), 1.0f);
    const auto y = random_floats(rng, static_cast<size_t>(n * k * hidden), 1.0f);
    const auto w = random_floats(rng, static_cast<size_t>(n * k), 1.0f);
    DeviceBuffer x_dev(x), y_dev(y), w_dev(w);
    moe_combine(x_dev.as<float>(), y_dev.as<float>(), w_dev.as<float>(), n, k, hidden, nullptr);
    for (int64_t t = 0; t < n; ++t)
        for (int64_t c = 0; c < hidden; ++c) {
            float sum = 0;
            for (int64_t j = 0; j < k; ++j) sum += w[static_cast<size_t>(t * k + j)] * y[static_cast<size_t>((t * k + j) * hidden + c)];
            x[static_cast<size_t>(t * hidden + c)] += sum;
        }
    EXPECT_LE(relative_max_error(x_dev.read<float>(), x), 1e-6);
}

}  // namespace
}  // namespace moepack::cuda
