// AMX kernels of the matrix products with several inputs (prefill) of affine weights, on CPUs
// with AMX-BF16 (and AMX-INT8 for 2 and 4-bit weights: see affine_rows_amx_int8 below);
// dispatched from matmul.cpp; what they do not handle falls back to the AVX-512 kernels.
//
// The BF16 kernels:
// The tile unit multiplies A [16 x 32 bf16] by B [32 x 16 bf16] into C [16 x 16 float32]
// (TDPBF16PS: pairs of products summed in float32). Here A is 16 weight rows, decoded once
// per block of 32 rows into a per-thread bf16 buffer (w = q * s + b in float32, rounded to
// bf16); B is 16 inputs, converted to bf16 once per product by MatmulInput::prepare into
// the tile layout (x_tiles, below); C accumulates over all the columns. Four C tiles hold a
// block of 32 rows x 32 inputs, so each A and B tile loaded serves two products.
//
// Accuracy: inputs are rounded to bf16 (relative error at most 2^-9), the sums are float32.
// Weights of 2 and 4 bits are rounded to bf16 too: at most 2^-9 of |w|, a few percent of a
// quantisation step. For 8-bit weights that rounding would be up to half a step and double
// their error, so each weight is held as the sum of two bf16 values (hi, the rounded weight,
// and lo, the rounded remainder: relative error 2^-17) and the tiles multiply twice as many
// columns, hi then lo, against the same inputs. tests/unit/test_matmul.cpp states and checks
// the bounds.
//
// Linux grants the AMX tile state to a process only on request (arch_prctl
// ARCH_REQ_XCOMP_PERM); amx_usable() asks once, and the kernels are used only if granted.
// Target attributes rather than compiler flags for the file: see matmul_avx2.cpp.
#include <algorithm>
#include <cstring>
#include <vector>

#include "matmul_kernels.hpp"

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "unpack_avx512.hpp"

#define MOEPACK_AMX                                                                                      \
    __attribute__((                                                                                      \
        target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16,amx-tile,amx-bf16,amx-int8")))

namespace moepack::engine::detail {

namespace {

constexpr int64_t kTile = 16;     // rows of A and C; inputs of B and C
constexpr int64_t kTileK = 32;    // bf16 columns of A per tile (64 bytes)

// The tile configuration (palette 1): tiles 0..3 are C (row block i, input block j in tile
// 2i + j), 4 and 5 are A (the two row blocks), 6 and 7 are B (the two input blocks).
struct alignas(64) TileConfig {
    uint8_t palette = 1, start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t bytes_per_row[16] = {};
    uint8_t rows[16] = {};
};

MOEPACK_AMX void load_tile_config() {
    TileConfig c;
    for (int i = 0; i < 8; ++i) {
        c.rows[i] = kTile;
        c.bytes_per_row[i] = 64;
    }
    _tile_loadconfig(&c);
}

// Whether weights of this width are held as hi + lo (see the top of the file).
template <int Bits>
constexpr int64_t kWeightParts = Bits == 8 ? 2 : 1;

// 16 bf16 values as float32 (the 16 bits become the high half).
MOEPACK_AMX inline __m512 widen_bf16x16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// 32 float32 weights (lanes 0..15 from first, 16..31 from second) as bf16 at out[0, 32) and,
// with two parts, their remainders w - bf16(w) as bf16 at remainder[0, 32).
template <int64_t Parts>
MOEPACK_AMX inline void store_bf16x32(uint16_t* out, uint16_t* remainder, __m512 first, __m512 second) {
    const __m512bh v = _mm512_cvtne2ps_pbh(second, first);
    std::memcpy(out, &v, 64);
    if constexpr (Parts == 2) {
        const __m512i bits = _mm512_loadu_si512(&v);
        // bf16 -> float32: the 16 bits become the high half
        const __m512 first_rounded = widen_bf16x16(_mm512_castsi512_si256(bits));
        const __m512 second_rounded = widen_bf16x16(_mm512_extracti64x4_epi64(bits, 1));
        const __m512bh r = _mm512_cvtne2ps_pbh(_mm512_sub_ps(second, second_rounded), _mm512_sub_ps(first, first_rounded));
        std::memcpy(remainder, &r, 64);
    }
}

// 16 codes (bytes) as float32 weights q * scale + bias, zero from lane `valid` on.
MOEPACK_AMX inline __m512 decode16(__m128i codes, __m512 scale, __m512 bias, int64_t valid) {
    const __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes)), scale, bias);
    if (valid >= 16) return v;
    return valid <= 0 ? _mm512_setzero_ps() : _mm512_maskz_mov_ps(static_cast<__mmask16>((1u << valid) - 1), v);
}

// Row r of w decoded to bf16 in out[0, padded), zeros from w.cols on (padded: w.cols rounded
// up to kTileK), and with two parts the remainders in out[padded, 2 padded).
template <int Bits>
MOEPACK_AMX void decode_row_bf16(const WeightMatrix& w, int64_t r, int64_t padded, uint16_t* out) {
    constexpr int64_t parts = kWeightParts<Bits>;
    const int64_t groups = (w.cols + w.group_size - 1) / w.group_size;
    const int64_t row_bytes = (w.cols * Bits + 31) / 32 * 4;
    const uint8_t* codes = reinterpret_cast<const uint8_t*>(w.data) + r * row_bytes;
    const uint16_t* s = w.scales + r * groups;
    const uint16_t* b = w.biases + r * groups;
    uint16_t* remainder = out + padded;
    // The group size is a multiple of 32: each run of 32 columns lies in one group, g, of
    // which `done` columns come before it.
    int64_t g = 0, done = 0;
    for (int64_t c = 0; c < padded; c += 64) {   // c < w.cols: padded < w.cols + 32
        const int64_t left = w.cols - c;
        const __m512i q = left >= 64 ? unpack64<Bits>(codes + c * Bits / 8) : unpack64_tail<Bits>(codes + c * Bits / 8, left);
        for (int half = 0; half < 2 && c + 32 * half < padded; ++half) {
            const __m512 scale = _mm512_set1_ps(bf16f(s[g])), bias = _mm512_set1_ps(bf16f(b[g]));
            const int64_t col = c + 32 * half;
            const __m128i lo = half == 0 ? _mm512_castsi512_si128(q) : _mm512_extracti32x4_epi32(q, 2);
            const __m128i hi = half == 0 ? _mm512_extracti32x4_epi32(q, 1) : _mm512_extracti32x4_epi32(q, 3);
            store_bf16x32<parts>(out + col, remainder + col, decode16(lo, scale, bias, w.cols - col),
                                 decode16(hi, scale, bias, w.cols - col - 16));
            done += 32;
            if (done == w.group_size) {
                ++g;
                done = 0;
            }
        }
    }
}

// C tiles += A (one or two row blocks at a, rows a_stride bf16 apart) x B (one or two input
// blocks of `steps` tiles of kTileK columns), once per part of the weights (part p of a row
// starts p * steps * kTileK columns in); then C is stored to c [4][16][16].
template <bool TwoRowBlocks, bool TwoInputBlocks>
MOEPACK_AMX void tile_products(const uint16_t* a, int64_t a_stride, const uint16_t* b0, const uint16_t* b1,
                               int64_t steps, int64_t parts, float* c) {
    const int64_t a_bytes = a_stride * 2;
    _tile_zero(0);
    if constexpr (TwoInputBlocks) _tile_zero(1);
    if constexpr (TwoRowBlocks) _tile_zero(2);
    if constexpr (TwoRowBlocks && TwoInputBlocks) _tile_zero(3);
    for (int64_t p = 0; p < parts; ++p)
        for (int64_t k = 0; k < steps; ++k) {
            const uint16_t* ak = a + (p * steps + k) * kTileK;
            _tile_loadd(4, ak, a_bytes);
            if constexpr (TwoRowBlocks) _tile_loadd(5, ak + kTile * a_stride, a_bytes);
            _tile_loadd(6, b0 + k * kTile * kTileK, 64);
            if constexpr (TwoInputBlocks) _tile_loadd(7, b1 + k * kTile * kTileK, 64);
            _tile_dpbf16ps(0, 4, 6);
            if constexpr (TwoInputBlocks) _tile_dpbf16ps(1, 4, 7);
            if constexpr (TwoRowBlocks) _tile_dpbf16ps(2, 5, 6);
            if constexpr (TwoRowBlocks && TwoInputBlocks) _tile_dpbf16ps(3, 5, 7);
        }
    _tile_stored(0, c, 64);
    if constexpr (TwoInputBlocks) _tile_stored(1, c + 256, 64);
    if constexpr (TwoRowBlocks) _tile_stored(2, c + 512, 64);
    if constexpr (TwoRowBlocks && TwoInputBlocks) _tile_stored(3, c + 768, 64);
}

template <int Bits>
MOEPACK_AMX void affine_rows_amx(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride, int64_t r0,
                                 int64_t r1) {
    constexpr int64_t parts = kWeightParts<Bits>;
    const int64_t padded = (w.cols + kTileK - 1) / kTileK * kTileK, steps = padded / kTileK;
    const int64_t stride = parts * padded;   // bf16 per decoded row
    const int64_t blocks = (in.n + kTile - 1) / kTile;
    thread_local std::vector<uint16_t> a;   // 2 x 16 decoded rows
    a.resize(static_cast<size_t>(2 * kTile * stride));
    alignas(64) float c[4 * kTile * kTile];
    load_tile_config();
    for (int64_t rb = r0; rb < r1; rb += 2 * kTile) {
        const int64_t nr = std::min(2 * kTile, r1 - rb);
        for (int64_t i = 0; i < nr; ++i) decode_row_bf16<Bits>(w, rb + i, padded, a.data() + i * stride);
        const bool two_rows = nr > kTile;
        for (int64_t tb = 0; tb < blocks; tb += 2) {
            const uint16_t* b0 = in.x_tiles.data() + tb * kTile * padded;
            const bool two_inputs = tb + 1 < blocks;
            const uint16_t* b1 = two_inputs ? b0 + kTile * padded : nullptr;
            if (two_rows && two_inputs) tile_products<true, true>(a.data(), stride, b0, b1, steps, parts, c);
            else if (two_rows) tile_products<true, false>(a.data(), stride, b0, b1, steps, parts, c);
            else if (two_inputs) tile_products<false, true>(a.data(), stride, b0, b1, steps, parts, c);
            else tile_products<false, false>(a.data(), stride, b0, b1, steps, parts, c);
            // C tile (i, j) row rr, column tt is y[input (tb + j) * 16 + tt, row rb + i * 16 + rr]
            for (int64_t i = 0; i < (two_rows ? 2 : 1); ++i)
                for (int64_t j = 0; j < (two_inputs ? 2 : 1); ++j) {
                    const float* tile = c + (2 * i + j) * kTile * kTile;
                    const int64_t t0 = (tb + j) * kTile, rows = std::min(kTile, nr - i * kTile);
                    for (int64_t tt = 0; tt < std::min(kTile, in.n - t0); ++tt) {
                        float* out = y + (t0 + tt) * y_stride + rb + i * kTile;
                        for (int64_t rr = 0; rr < rows; ++rr) out[rr] = tile[rr * kTile + tt];
                    }
                }
        }
    }
    _tile_release();
}

// AMX-INT8 (TDPBUSD: u8 x s8 quadruples summed into int32) for 2 and 4-bit weights in groups
// of a multiple of 64 columns. A is 16 weight rows' codes for 64 columns, unpacked to bytes in
// bit-plane order (a shift and a mask per plane, as the AVX-512 int8 kernels do); B is 16
// inputs' int8 values in the same order (MatmulInput::x_int8_tiles). The int32 tile C of one
// group is stored and each row of it joins a float accumulator with the group's scales:
//   y[t, r] = sum_g s[r, g] sx[t, g] C_g[r, t] + b[r, g] sum_g(x[t])
// the formula of the AVX-512 int8 kernels (same inputs, same accuracy).
constexpr int64_t kStep = 64;   // columns per TDPBUSD (64 bytes per tile row)

// Codes of 16 rows (rows past `nr` zero) as A tiles [steps][16][64] in plane order, and their
// scales and biases as float [16][groups].
template <int Bits>
MOEPACK_AMX void unpack_rows_int8(const WeightMatrix& w, int64_t r0, int64_t nr, int64_t steps, int64_t groups,
                                  uint8_t* a, float* scales, float* biases) {
    constexpr int per = 8 / Bits;                  // codes per byte
    constexpr int64_t step_bytes = kStep / per;   // packed bytes of 64 codes
    const int64_t row_bytes = (w.cols * Bits + 31) / 32 * 4, used_bytes = (w.cols * Bits + 7) / 8;
    const __m512i low_bits = _mm512_set1_epi8(static_cast<char>((1 << Bits) - 1));
    for (int64_t i = 0; i < kTile; ++i) {
        if (i >= nr) {
            for (int64_t st = 0; st < steps; ++st) std::memset(a + (st * kTile + i) * kStep, 0, kStep);
            for (int64_t g = 0; g < groups; ++g) scales[i * groups + g] = biases[i * groups + g] = 0;
            continue;
        }
        const uint8_t* codes = reinterpret_cast<const uint8_t*>(w.data) + (r0 + i) * row_bytes;
        for (int64_t st = 0; st < steps; ++st) {
            const int64_t left = std::min<int64_t>(step_bytes, used_bytes - st * step_bytes);
            const __mmask64 m = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
            const __m512i v = _mm512_maskz_loadu_epi8(m, codes + st * step_bytes);
            // plane k of the step's bytes lands at byte k * step_bytes
            uint8_t* out = a + (st * kTile + i) * kStep;
            for (int k = 0; k < per; ++k) {
                const __m512i p = _mm512_and_si512(_mm512_srli_epi16(v, Bits * k), low_bits);
                _mm512_mask_storeu_epi8(out + k * step_bytes, (__mmask64{1} << step_bytes) - 1, p);
            }
        }
        for (int64_t g = 0; g < groups; ++g) {
            scales[i * groups + g] = bf16f(w.scales[(r0 + i) * groups + g]);
            biases[i * groups + g] = bf16f(w.biases[(r0 + i) * groups + g]);
        }
    }
}

// Group g's int32 tile cg [16 rows][16 inputs] into the accumulators (row i: its 16 inputs),
// with the weights' scales and biases [16][groups] and the inputs' scales sx and sums gs
// [groups][16].
MOEPACK_AMX inline void scale_group(__m512* acc, const int32_t* cg, const float* sx, const float* gs,
                                    const float* scales, const float* biases, int64_t groups, int64_t g) {
    const __m512 sxg = _mm512_loadu_ps(sx + g * kTile), gsg = _mm512_loadu_ps(gs + g * kTile);
    for (int64_t i = 0; i < kTile; ++i) {
        const __m512 dot = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cg + i * kTile)), sxg);
        acc[i] = _mm512_fmadd_ps(dot, _mm512_set1_ps(scales[i * groups + g]), acc[i]);
        acc[i] = _mm512_fmadd_ps(gsg, _mm512_set1_ps(biases[i * groups + g]), acc[i]);
    }
}

// C tile C = sum over steps [st0, st1) of A tile A (from a) x B tile B (from b), stored to c.
// A macro: the tile intrinsics take their tile numbers as literals (they are pasted into the
// instruction), so a function parameter, even a template one, cannot name them.
#define MOEPACK_GROUP_TILE(C, A, B, a, b, st0, st1, c)                  \
    do {                                                                \
        _tile_zero(C);                                                  \
        for (int64_t st = (st0); st < (st1); ++st) {                    \
            _tile_loadd(A, (a) + st * kTile * kStep, kStep);            \
            _tile_loadd(B, (b) + st * kTile * kStep, kStep);            \
            _tile_dpbusd(C, A, B);                                      \
        }                                                               \
        _tile_stored(C, (c), kTile * 4);                                \
    } while (false)

template <int Bits>
MOEPACK_AMX void affine_rows_amx_int8(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride,
                                      int64_t r0, int64_t r1) {
    const int64_t steps = (w.cols + kStep - 1) / kStep, groups = (w.cols + w.group_size - 1) / w.group_size;
    const int64_t steps_per_group = w.group_size / kStep, blocks = (in.n + kTile - 1) / kTile;
    const int8_t* b_tiles = in.x_int8_tiles[MatmulInput::plane_index(Bits)].data();
    thread_local std::vector<uint8_t, CacheLineAllocator<uint8_t>> a;
    thread_local std::vector<float> scales, biases;
    a.resize(static_cast<size_t>(steps * kTile * kStep));
    scales.resize(static_cast<size_t>(kTile * groups));
    biases.resize(static_cast<size_t>(kTile * groups));
    alignas(64) int32_t c[2 * kTile * kTile];
    alignas(64) float block[kTile * kTile];   // [16 rows][16 inputs]
    const __m512i row_starts = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                  _mm512_set1_epi32(kTile));
    load_tile_config();
    for (int64_t rb = r0; rb < r1; rb += kTile) {
        const int64_t nr = std::min(kTile, r1 - rb);
        unpack_rows_int8<Bits>(w, rb, nr, steps, groups, a.data(), scales.data(), biases.data());
        for (int64_t tb = 0; tb < blocks; ++tb) {
            const int8_t* bt = b_tiles + tb * steps * kTile * kStep;
            const float* sx = in.x_scales_by_group.data() + tb * groups * kTile;   // [groups][16]
            const float* gs = in.group_sums_by_group.data() + tb * groups * kTile;
            __m512 acc[kTile];   // row i: its 16 inputs
            for (auto& v : acc) v = _mm512_setzero_ps();
            // Group g's C is made in tile g % 2 and stored while the other tile makes group
            // g + 1; then group g joins the accumulators (its store has landed by then).
            for (int64_t g = 0; g < groups; ++g) {
                const int64_t st_end = std::min(steps, (g + 1) * steps_per_group);
                int32_t* cg = c + (g % 2) * kTile * kTile;
                if (g % 2 == 0)
                    MOEPACK_GROUP_TILE(0, 4, 6, a.data(), bt, g * steps_per_group, st_end, cg);
                else
                    MOEPACK_GROUP_TILE(1, 5, 7, a.data(), bt, g * steps_per_group, st_end, cg);
                if (g > 0) scale_group(acc, c + ((g - 1) % 2) * kTile * kTile, sx, gs, scales.data(), biases.data(), groups, g - 1);
            }
            scale_group(acc, c + ((groups - 1) % 2) * kTile * kTile, sx, gs, scales.data(), biases.data(), groups,
                        groups - 1);
            // y[t0 + t, rb + i] = lane t of acc[i]: transposed through L1, so that each output
            // row gets one 64-byte store (scattered element stores to rows a multiple of 4 KB
            // apart fight over one L1 set)
            const int64_t t0 = tb * kTile, nt = std::min(kTile, in.n - t0);
            for (int64_t i = 0; i < kTile; ++i) _mm512_store_ps(block + i * kTile, acc[i]);
            const __mmask16 rows = static_cast<__mmask16>((1u << nr) - 1);
            for (int64_t t = 0; t < nt; ++t)
                _mm512_mask_storeu_ps(y + (t0 + t) * y_stride + rb, rows, _mm512_i32gather_ps(row_starts, block + t, 4));
        }
    }
    _tile_release();
}

}  // namespace

bool amx_usable() {
    static const bool usable = [] {
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
        const bool tile = (edx & (1u << 24)) != 0, amx_bf16 = (edx & (1u << 22)) != 0;
        if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
        const bool avx512_bf16 = (eax & (1u << 5)) != 0;
        if (!tile || !amx_bf16 || !avx512_bf16) return false;
        constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
        return ::syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
    }();
    return usable;
}

MOEPACK_AMX void prepare_amx_input(const float* x, int64_t n, int64_t cols, std::vector<uint16_t>& tiles) {
    const int64_t padded = (cols + kTileK - 1) / kTileK * kTileK;
    const int64_t blocks = (n + kTile - 1) / kTile;
    tiles.assign(static_cast<size_t>(blocks * kTile * padded), 0);
    auto* pairs = reinterpret_cast<uint32_t*>(tiles.data());
    alignas(64) uint32_t row[kTile];
    for (int64_t t = 0; t < n; ++t) {
        const float* xt = x + t * cols;
        // input t is column t % 16 of its block's B tiles: pair p (columns 2p, 2p + 1) of the
        // input is at [block][p][t % 16]
        uint32_t* column = pairs + (t / kTile) * (padded / 2) * kTile + t % kTile;
        for (int64_t k = 0; k < padded; k += kTileK) {
            const int64_t lo = std::clamp<int64_t>(cols - k, 0, 16), hi = std::clamp<int64_t>(cols - k - 16, 0, 16);
            const __m512 a = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << lo) - 1), xt + k);
            const __m512 b = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << hi) - 1), xt + k + 16);
            const __m512bh v = _mm512_cvtne2ps_pbh(b, a);
            std::memcpy(row, &v, 64);
            for (int64_t p = 0; p < kTile; ++p) column[(k / 2 + p) * kTile] = row[p];
        }
    }
}

bool amx_int8_usable() {
    static const bool usable = [] {
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        return amx_usable() && __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx & (1u << 25)) != 0;
    }();
    return usable;
}

MOEPACK_AMX void prepare_amx_int8_input(MatmulInput& in, int bits) {
    const int per = 8 / bits;
    const int64_t steps = (in.cols + kStep - 1) / kStep, blocks = (in.n + kTile - 1) / kTile;
    const int64_t length = in.groups * in.group;   // of each input in xq
    auto& tiles = in.x_int8_tiles[MatmulInput::plane_index(bits)];
    tiles.assign(static_cast<size_t>(blocks * steps * kTile * kStep), 0);
    // tile row k4 of step st holds, for input t, positions 4 k4 .. 4 k4 + 3 of the step, and
    // position p = k * (64 / per) + j is column st * 64 + j * per + k
    for (int64_t t = 0; t < in.n; ++t) {
        const int8_t* q = in.xq.data() + t * length;
        int8_t* block = tiles.data() + (t / kTile) * steps * kTile * kStep;
        for (int64_t st = 0; st < steps; ++st)
            for (int64_t p = 0; p < kStep; ++p) {
                const int64_t c = st * kStep + p % (kStep / per) * per + p / (kStep / per);
                if (c < length) block[(st * kTile + p / 4) * kStep + (t % kTile) * 4 + p % 4] = q[c];
            }
    }
    in.x_scales_by_group.assign(static_cast<size_t>(blocks * in.groups * kTile), 0.0f);
    in.group_sums_by_group.assign(static_cast<size_t>(blocks * in.groups * kTile), 0.0f);
    for (int64_t t = 0; t < in.n; ++t)
        for (int64_t g = 0; g < in.groups; ++g) {
            const size_t at = static_cast<size_t>(((t / kTile) * in.groups + g) * kTile + t % kTile);
            in.x_scales_by_group[at] = in.x_scales[t * in.groups + g];
            in.group_sums_by_group[at] = in.group_sums[t * in.groups + g];
        }
}

MOEPACK_AMX bool matmul_rows_amx_int8(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride,
                                      int64_t row_begin, int64_t row_end) {
    if (w.format != WeightFormat::affine || in.group != w.group_size ||
        in.x_int8_tiles[MatmulInput::plane_index(w.bits)].empty())
        return false;
    switch (w.bits) {
        case 2: affine_rows_amx_int8<2>(w, in, y, y_stride, row_begin, row_end); return true;
        case 4: affine_rows_amx_int8<4>(w, in, y, y_stride, row_begin, row_end); return true;
        default: return false;
    }
}

MOEPACK_AMX bool matmul_rows_amx(const WeightMatrix& w, const MatmulInput& in, float* y, int64_t y_stride,
                                 int64_t row_begin, int64_t row_end) {
    if (w.format != WeightFormat::affine || in.x_tiles.empty() || w.group_size % kTileK != 0) return false;
    switch (w.bits) {
        case 2: affine_rows_amx<2>(w, in, y, y_stride, row_begin, row_end); return true;
        case 4: affine_rows_amx<4>(w, in, y, y_stride, row_begin, row_end); return true;
        case 8: affine_rows_amx<8>(w, in, y, y_stride, row_begin, row_end); return true;
        default: return false;
    }
}

}  // namespace moepack::engine::detail

#else  // not x86-64 Linux: no AMX kernels

namespace moepack::engine::detail {
bool amx_usable() { return false; }
bool amx_int8_usable() { return false; }
void prepare_amx_int8_input(MatmulInput&, int) {}
bool matmul_rows_amx_int8(const WeightMatrix&, const MatmulInput&, float*, int64_t, int64_t, int64_t) { return false; }
void prepare_amx_input(const float*, int64_t, int64_t, std::vector<uint16_t>&) {}
bool matmul_rows_amx(const WeightMatrix&, const MatmulInput&, float*, int64_t, int64_t, int64_t) { return false; }
}  // namespace moepack::engine::detail

#endif
