// Matrix products (engine/cpu/matmul.hpp) against a float64 reference computed from the
// dequantised weights, for every weight encoding, group size, partial last groups, odd row
// counts and several input counts; each instruction set the CPU has is checked, the portable
// kernels included (set_matmul_isa).
//
// Error bounds. u = 2^-24 (float32 unit roundoff); per output y[t, r]:
//
//  * Float kernels (f32/f16/bf16 weights; affine weights in the portable kernels and in every
//    kernel from kPrefillMinInputs inputs on): every term is an exactly rounded float product
//    or an FMA, summed along chains of at most m = cols/8 + cols/32 + 32 additions (8 or 16
//    lane partial sums, 1024-column blocks, group sums, horizontal sums), so the classic bound
//    |error| <= m u sum |term| holds. The terms are w*x for float weights, and for affine
//    weights q*s*x and b*x (the portable decode kernel sums q*x per group, and bias * sum(x));
//    decoding w = q*s + b to float adds at most u|w| per weight (q*s is exact in float: 8-bit
//    code times bf16 scale). So with A = sum_c (|q_c s_g| + |b_g|) |x_c| (= sum |w||x| for
//    float weights): |error| <= (m + 1) u A.
//
//  * Int8 kernels (affine weights in the SIMD kernels: fewer than kPrefillMinInputs inputs,
//    or with AVX-512, 2/4-bit weights and power-of-two groups, fewer than int8_max_inputs();
//    and the AMX-INT8 kernels for 2/4-bit weights in groups of multiples of 64 from
//    kAmxInt8MinInputs inputs on; detail::int8_inputs()): X is
//    replaced by sx_g * xq_c, sx_g = amax_g / 127 (amax_g = max |x| over the group), xq_c =
//    round(x_c / sx_g). Rounding to nearest gives |x_c - sx_g xq_c| <= sx_g / 2 = amax_g / 254,
//    plus a few u |x_c| from computing sx_g, 1/sx_g and the product in float: below
//    1.001 amax_g / 254. The integer dot products are exact (at most 128 * 255 * 127 < 2^24
//    per group, so also exact when converted to float), the bias term uses the exact float
//    group sums, so the only new error is sum_g s_g sum_c q_c (x_c - sx_g xq_c), bounded by
//        Q = 1.001 / 254 * sum_g |s_g| amax_g sum_{c in g} q_c,
//    on top of the float rounding above: |error| <= Q + (m + 1) u A. Relative to
//    sum |w||x|: |s_g q_c| = |w_c - b_g| <= |w_c| + |b_g| and amax_g >= |x_c|, so Q is about
//    sum |w||x| / 254 when x is spread evenly over a group and the biases are small; it is
//    larger where one value dominates its group's x or where |b_g| >> |w_c|, which is why the
//    test uses Q itself rather than a fixed fraction of sum |w||x|. Q is a worst case; the test
//    also checks that the errors have the size of independent roundings (see check_product).
//
//  * AMX kernels (affine weights, from kPrefillMinInputs inputs on where the int8 kernels do
//    not take the product, group sizes that are multiples of 32): each weight, decoded in float32 (error u|w|), and each input are
//    rounded to bf16 (relative error at most 2^-9 each; the product's at most
//    2^-8 + 2^-18), and the sums are float32: |error| <= (2^-8 + 2^-18 + (m + 2) u) A.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/matmul.hpp"
#include "cpu/matmul_kernels.hpp"
#include "dtype.hpp"
#include "pack_format.hpp"
#include "thread_pool.hpp"

namespace moepack::engine {
namespace {

constexpr double kU = 1.0 / 16777216.0;   // 2^-24

// A weight matrix with its storage and its exact (float64) dequantised values.
struct TestMatrix {
    WeightMatrix w;
    std::vector<std::byte> storage;   // exactly the bytes the matrix needs (sanitizers see over-reads)
    std::vector<double> value;        // [rows, cols] dequantised weights
    std::vector<double> abs_qs;       // affine: |q * s| per weight; float: |w|
    std::vector<double> abs_b;        // affine: |b| of the weight's group; float: 0
    std::vector<double> q;            // affine: the codes
    std::vector<double> abs_s;        // affine: |s| of the weight's group
};

TestMatrix make_matrix(WeightFormat format, int64_t rows, int64_t cols, int bits, int group, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    TestMatrix m;
    m.w.format = format;
    m.w.rows = rows;
    m.w.cols = cols;
    const size_t count = static_cast<size_t>(rows * cols);
    m.value.resize(count);
    m.abs_qs.resize(count);
    m.abs_b.assign(count, 0.0);
    if (format == WeightFormat::affine) {
        const pack::MatrixLayout l =
            pack::matrix_layout(static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), bits, group);
        m.storage.assign(l.bytes(), std::byte{0});
        m.q.resize(count);
        m.abs_s.resize(count);
        auto* words = reinterpret_cast<uint32_t*>(m.storage.data());
        auto* scales = reinterpret_cast<uint16_t*>(m.storage.data() + l.scales_offset());
        auto* biases = reinterpret_cast<uint16_t*>(m.storage.data() + l.biases_offset());
        const int64_t groups = static_cast<int64_t>(l.groups());
        std::uniform_int_distribution<uint32_t> code(0, (1u << bits) - 1);
        std::uniform_real_distribution<float> scale(0.002f, 0.03f), bias(-0.2f, 0.2f);
        for (int64_t i = 0; i < rows * groups; ++i) {
            // a few negative scales: the kernels must not assume MLX's non-negative ones
            scales[i] = float_to_bf16(i % 7 == 3 ? -scale(rng) : scale(rng));
            biases[i] = float_to_bf16(bias(rng));
        }
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
                const uint32_t q = code(rng);
                words[static_cast<uint64_t>(r) * l.row_words() + static_cast<uint64_t>(c * bits / 32)] |=
                    q << ((c * bits) % 32);
                const double s = bf16_to_float(scales[r * groups + c / group]);
                const double b = bf16_to_float(biases[r * groups + c / group]);
                const size_t i = static_cast<size_t>(r * cols + c);
                m.q[i] = q;
                m.value[i] = q * s + b;   // exact: 8-bit code times bf16, plus bf16
                m.abs_qs[i] = std::fabs(q * s);
                m.abs_b[i] = std::fabs(b);
                m.abs_s[i] = std::fabs(s);
            }
        m.w = WeightMatrix::from_record(m.storage.data(), l);
        return m;
    }
    const size_t esize = format == WeightFormat::f32 ? 4 : 2;
    m.storage.resize(count * esize);
    for (size_t i = 0; i < count; ++i) {
        const float v = normal(rng);
        double exact = 0;
        if (format == WeightFormat::f32) {
            std::memcpy(m.storage.data() + i * 4, &v, 4);
            exact = v;
        } else if (format == WeightFormat::bf16) {
            const uint16_t h = float_to_bf16(v);
            std::memcpy(m.storage.data() + i * 2, &h, 2);
            exact = bf16_to_float(h);
        } else {
            const uint16_t h = float_to_f16(v);
            std::memcpy(m.storage.data() + i * 2, &h, 2);
            exact = f16_to_float(h);
        }
        m.value[i] = exact;
        m.abs_qs[i] = std::fabs(exact);
    }
    m.w.data = m.storage.data();
    return m;
}

std::vector<float> make_inputs(int64_t n, int64_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(n * cols));
    for (auto& v : x) v = normal(rng);
    // one outlier per input (activations have them) and, in the first input, a run of zeros
    // as long as a whole group of any size (quantisation scale 0)
    for (int64_t t = 0; t < n; ++t) x[static_cast<size_t>(t * cols + (7 * t + 3) % cols)] = 20.0f;
    if (cols >= 256)
        for (int64_t c = 0; c < 128; ++c) x[static_cast<size_t>(128 + c)] = 0.0f;
    return x;
}

struct Expected {
    std::vector<double> y, float_tol, int8_tol, bf16_tol;   // [n, rows]
    std::vector<double> int8_var;                 // [n, rows]: expected variance of the int8 error
    std::vector<double> bf16_var;                 // [n, rows]: expected variance of the bf16 error
};

Expected reference(const TestMatrix& m, const std::vector<float>& x, int64_t n) {
    const int64_t rows = m.w.rows, cols = m.w.cols;
    const int group = m.w.format == WeightFormat::affine ? m.w.group_size : 32;
    const double chain = static_cast<double>(cols) / 8 + static_cast<double>(cols) / 32 + 32;
    // the AMX kernels round inputs to bf16 (relative error 2^-9) and weights to bf16, or for
    // 8-bit weights to a sum of two bf16 (2^-17)
    const double weight_rel = m.w.bits == 8 ? 1.0 / 131072 : 1.0 / 512;
    const double bf16_rel = 1.0 / 512 + weight_rel + weight_rel / 512;
    const int bf16_roundings = m.w.bits == 8 ? 1 : 2;
    Expected e;
    e.y.assign(static_cast<size_t>(n * rows), 0.0);
    e.float_tol = e.y;
    e.int8_tol = e.y;
    e.bf16_tol = e.y;
    e.int8_var = e.y;
    e.bf16_var = e.y;
    for (int64_t t = 0; t < n; ++t) {
        const float* xt = x.data() + t * cols;
        for (int64_t r = 0; r < rows; ++r) {
            double y = 0, a = 0, q = 0, var = 0, var16 = 0;
            for (int64_t g0 = 0; g0 < cols; g0 += group) {
                const int64_t g1 = std::min<int64_t>(cols, g0 + group);
                double amax = 0, qsum = 0, q2sum = 0;
                for (int64_t c = g0; c < g1; ++c) {
                    const size_t i = static_cast<size_t>(r * cols + c);
                    y += m.value[i] * xt[c];
                    // roundings to bf16 (the input's, and the weight's below 8 bits), each
                    // uniform within half an ulp of 2^(e-7): variance 2^(2e-14) / 12, about
                    // v^2 2^-16 / 6 for significands spread over [1, 2)
                    var16 += m.value[i] * m.value[i] * xt[c] * xt[c] * bf16_roundings / 6 / 65536;
                    a += (m.abs_qs[i] + m.abs_b[i]) * std::fabs(xt[c]);
                    amax = std::max(amax, std::fabs(static_cast<double>(xt[c])));
                    if (!m.q.empty()) {
                        qsum += m.q[i];
                        q2sum += m.q[i] * m.q[i];
                    }
                }
                if (!m.q.empty()) {
                    const double sg = m.abs_s[static_cast<size_t>(r * cols + g0)], sx = amax / 127;
                    q += sg * amax * qsum;
                    var += sg * sg * q2sum * sx * sx / 12;   // rounding errors uniform on [-sx/2, sx/2]
                }
            }
            const size_t o = static_cast<size_t>(t * rows + r);
            e.y[o] = y;
            e.float_tol[o] = (chain + 1) * kU * a;
            e.int8_tol[o] = 1.001 / 254 * q + e.float_tol[o];
            e.bf16_tol[o] = bf16_rel * a + e.float_tol[o] + kU * a;
            e.int8_var[o] = var;
            e.bf16_var[o] = var16;
        }
    }
    return e;
}

std::vector<MatmulIsa> isas() {
    std::vector<MatmulIsa> v;
    for (int i = 0; i <= static_cast<int>(matmul_best_isa()); ++i) v.push_back(static_cast<MatmulIsa>(i));
    return v;
}

// Restores the default kernels however a test ends.
struct IsaGuard {
    ~IsaGuard() { set_matmul_isa(matmul_best_isa()); }
};

const char* format_name(WeightFormat f) {
    switch (f) {
        case WeightFormat::f32: return "f32";
        case WeightFormat::f16: return "f16";
        case WeightFormat::bf16: return "bf16";
        case WeightFormat::affine: return "affine";
    }
    return "?";
}

// Runs the product with every kernel set and checks every output against its bound.
// With chi2_per_output, also stores the mean square of the int8 or bf16 kernels' errors
// relative to their expected variance (the largest over the kernel sets that use int8 or
// bf16 inputs; 0 if none).
void check_product(WeightFormat format, int64_t rows, int64_t cols, int bits, int group, int64_t n, uint32_t seed,
                   double* chi2_per_output = nullptr) {
    if (chi2_per_output) *chi2_per_output = 0;
    const TestMatrix m = make_matrix(format, rows, cols, bits, group, seed);
    const std::vector<float> x = make_inputs(n, cols, seed + 1);
    const Expected e = reference(m, x, n);
    IsaGuard guard;
    for (const MatmulIsa isa : isas()) {
        set_matmul_isa(isa);
        const bool int8 = detail::int8_inputs(m.w, n);
        const bool bf16 = isa == MatmulIsa::amx && format == WeightFormat::affine && !int8 &&
                          n >= detail::kPrefillMinInputs && group % 32 == 0;
        MatmulInput in(x.data(), n, cols);
        in.prepare(m.w);
        std::vector<float> y(static_cast<size_t>(n * rows), std::nanf(""));
        matmul_rows(m.w, in, y.data(), rows, 0, rows);
        int bad = 0;
        double chi2 = 0;
        const std::vector<double>& var = bf16 ? e.bf16_var : e.int8_var;
        for (size_t i = 0; i < y.size(); ++i) {
            if (var[i] > 0) {
                const double d = static_cast<double>(y[i]) - e.y[i];
                chi2 += d * d / var[i];
            }
            if (bad >= 5) continue;
            const double tol = int8 ? e.int8_tol[i] : bf16 ? e.bf16_tol[i] : e.float_tol[i];
            const double err = std::fabs(static_cast<double>(y[i]) - e.y[i]);
            if (!(err <= tol)) {
                ++bad;
                ADD_FAILURE() << format_name(format) << " bits " << bits << " group " << group << " " << rows << "x"
                              << cols << " n " << n << " isa " << matmul_isa_name(isa) << ": y[" << i / rows << ", "
                              << i % rows << "] = " << y[i] << ", reference " << e.y[i] << ", error " << err
                              << " > bound " << tol;
            }
        }
        if (chi2_per_output && (int8 || bf16))
            *chi2_per_output = std::max(*chi2_per_output, chi2 / static_cast<double>(y.size()));
    }
}

TEST(Matmul, FloatFormats) {
    for (const WeightFormat f : {WeightFormat::f32, WeightFormat::f16, WeightFormat::bf16})
        for (const int64_t cols : {256, 257, 1003})
            for (const int64_t n : {1, 2, 7, 33}) check_product(f, 37, cols, 16, 0, n, static_cast<uint32_t>(cols + n));
}

TEST(Matmul, AffineAllBitsAndGroups) {
    for (const int bits : {2, 4, 8})
        for (const int group : {32, 64, 128})
            // whole groups; a partial last group shorter than 32; one with whole 32-chunks and a tail
            for (const int64_t cols : {int64_t{5} * group, int64_t{5} * group + 19, int64_t{3} * group + 45})
                for (const int64_t n : {1, 2, 3, 7, 12, 31, 33})
                    check_product(WeightFormat::affine, 37, cols, bits, group, n,
                                  static_cast<uint32_t>(bits * 1000 + group + cols + n));
}

TEST(Matmul, AffineLongRows) {
    // the shapes of the models (expert down projection: 768 columns; q: 2048)
    for (const int bits : {2, 4, 8})
        for (const int64_t n : {1, 5}) {
            check_product(WeightFormat::affine, 9, 2048, bits, 64, n, 11);
            check_product(WeightFormat::affine, 9, 768, bits, 64, n, 12);
        }
}

// The worst-case bound Q is loose for random data (it adds |errors| that in fact partly
// cancel), loose enough to let through a scale 1% off. So the int8 errors must also have the
// size of rounding errors: their mean square relative to the variance of independent
// roundings uniform on [-sx/2, sx/2] is about 1 (a little less, as the largest |x| of each
// group is exact). It is a statistic of the roundings of X, shared by all the rows: it needs
// many groups and inputs to settle (here 4 x 3 inputs x 32..128 groups).
TEST(Matmul, AffineInt8ErrorsAreRoundingErrors) {
    if (matmul_best_isa() == MatmulIsa::portable) GTEST_SKIP() << "no int8 kernels on this CPU";
    for (const int bits : {2, 4, 8})
        for (const int group : {32, 64, 128}) {
            double mean = 0;
            for (uint32_t seed = 0; seed < 4; ++seed) {
                double chi2 = 0;
                check_product(WeightFormat::affine, 64, 4096, bits, group, 3, seed * 100 + bits + group, &chi2);
                mean += chi2 / 4;
            }
            EXPECT_GT(mean, 0.3) << "bits " << bits << " group " << group;
            EXPECT_LT(mean, 1.6) << "bits " << bits << " group " << group;
        }
}

// The same for the AMX kernels' bf16 roundings (a scale 1% off would also pass their
// worst-case bound).
TEST(Matmul, AffineBf16ErrorsAreRoundingErrors) {
    if (matmul_best_isa() != MatmulIsa::amx) GTEST_SKIP() << "no AMX kernels on this CPU";
    for (const int bits : {2, 4, 8}) {
        double mean = 0;
        for (uint32_t seed = 0; seed < 4; ++seed) {
            double chi2 = 0;
            check_product(WeightFormat::affine, 64, 1024, bits, 64, 20, seed * 100 + bits, &chi2);
            mean += chi2 / 4;
        }
        EXPECT_GT(mean, 0.3) << "bits " << bits;
        EXPECT_LT(mean, 1.6) << "bits " << bits;
    }
}

TEST(Matmul, RowRangesWriteOnlyTheirRows) {
    IsaGuard guard;
    for (const MatmulIsa isa : isas()) {
        set_matmul_isa(isa);
        for (const WeightFormat f : {WeightFormat::bf16, WeightFormat::affine})
            for (const int64_t n : {1, 9}) {
                const TestMatrix m = make_matrix(f, 41, 300, 4, 64, 5);
                const std::vector<float> x = make_inputs(n, 300, 6);
                MatmulInput in(x.data(), n, 300);
                in.prepare(m.w);
                const int64_t stride = 50;
                std::vector<float> whole(static_cast<size_t>(n * stride), -7.0f);
                matmul_rows(m.w, in, whole.data(), stride, 0, 41);
                std::vector<float> part(static_cast<size_t>(n * stride), -7.0f);
                matmul_rows(m.w, in, part.data(), stride, 5, 26);
                matmul_rows(m.w, in, part.data(), stride, 26, 27);
                for (int64_t t = 0; t < n; ++t)
                    for (int64_t r = 0; r < stride; ++r) {
                        const float got = part[static_cast<size_t>(t * stride + r)];
                        if (r >= 5 && r < 27) {
                            EXPECT_EQ(got, whole[static_cast<size_t>(t * stride + r)]);
                        } else {
                            EXPECT_EQ(got, -7.0f) << "row " << r << " written outside its range";
                        }
                    }
            }
    }
}

TEST(Matmul, ThreadPoolMatchesOneThread) {
    IsaGuard guard;
    ThreadPool pool(3);
    for (const MatmulIsa isa : isas()) {
        set_matmul_isa(isa);
        for (const int64_t n : {1, 2, 40}) {
            const TestMatrix m = make_matrix(WeightFormat::affine, 771, 256, 4, 64, 8);
            const std::vector<float> x = make_inputs(n, 256, 9);
            MatmulInput in(x.data(), n, 256);
            std::vector<float> y(static_cast<size_t>(n * 771));
            matmul(pool, m.w, in, y.data());
            std::vector<float> one(y.size());
            matmul_rows(m.w, in, one.data(), 771, 0, 771);
            EXPECT_EQ(y, one) << matmul_isa_name(isa) << " n " << n;
        }
    }
}

TEST(Matmul, DecodeRow) {
    for (const WeightFormat f : {WeightFormat::f32, WeightFormat::f16, WeightFormat::bf16, WeightFormat::affine})
        for (const int bits : {2, 4, 8}) {
            const TestMatrix m = make_matrix(f, 3, 203, bits, 32, 4);
            std::vector<float> row(203);
            for (int64_t r = 0; r < 3; ++r) {
                decode_row(m.w, r, row.data());
                for (int64_t c = 0; c < 203; ++c) {
                    const double v = m.value[static_cast<size_t>(r * 203 + c)];
                    EXPECT_LE(std::fabs(row[static_cast<size_t>(c)] - v), kU * std::fabs(v)) << r << "," << c;
                }
            }
            if (f != WeightFormat::affine) break;
        }
}

TEST(Matmul, IsaSelection) {
    IsaGuard guard;
    set_matmul_isa(MatmulIsa::portable);
    EXPECT_EQ(matmul_isa(), MatmulIsa::portable);
    set_matmul_isa(MatmulIsa::amx);   // lowered to what the CPU has
    EXPECT_EQ(matmul_isa(), matmul_best_isa());
}

}  // namespace
}  // namespace moepack::engine
