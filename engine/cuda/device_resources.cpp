// DeviceMemory and VectorInput (device_resources.hpp).
#include "cuda/device_resources.hpp"

#include <algorithm>
#include <cstring>

#include "error.hpp"

namespace moepack::cuda {

DeviceMemory::DeviceMemory(size_t bytes, const char* what) {
    size_t free = 0, total = 0;
    check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    if (bytes > free)
        fail("CUDA: ", what, " needs ", static_cast<double>(bytes) / 1e9, " GB of GPU memory, ",
             static_cast<double>(free) / 1e9, " GB are free");
    check_cuda(cudaMalloc(&p_, std::max<size_t>(bytes, 1)), what);
}

namespace {

// Seconds of the fastest of a few copies of `bytes` from src to dst.
double best_copy_seconds(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    Stream stream;
    cudaEvent_t start = nullptr, end = nullptr;
    check_cuda(cudaEventCreate(&start), "cudaEventCreate");
    if (cudaEventCreate(&end) != cudaSuccess) {
        cudaEventDestroy(start);
        fail("cudaEventCreate failed");
    }
    float best = 0;
    cudaError_t status = cudaSuccess;
    for (int i = 0; i < 4 && status == cudaSuccess; ++i) {
        cudaEventRecord(start, stream);
        cudaMemcpyAsync(dst, src, bytes, kind, stream);
        cudaEventRecord(end, stream);
        status = cudaEventSynchronize(end);
        float ms = 0;
        if (status == cudaSuccess) status = cudaEventElapsedTime(&ms, start, end);
        if (i > 0 && (best == 0 || ms < best)) best = ms;   // the first copy warms up
    }
    cudaEventDestroy(start);
    cudaEventDestroy(end);
    check_cuda(status, "timing a copy");
    return static_cast<double>(best) / 1e3;
}

}  // namespace

double host_to_device_rate(size_t bytes) {
    PinnedMemory host(bytes, "copy rate probe (host)");
    std::memset(host.get(), 1, bytes);
    DeviceMemory device(bytes, "copy rate probe");
    return static_cast<double>(bytes) / best_copy_seconds(device.get(), host.get(), bytes, cudaMemcpyHostToDevice);
}

double device_memory_rate(size_t bytes) {
    DeviceMemory a(bytes, "copy rate probe"), b(bytes, "copy rate probe");
    check_cuda(cudaMemset(a.get(), 1, bytes), "cudaMemset");
    return 2.0 * static_cast<double>(bytes) / best_copy_seconds(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice);
}

VectorInput::Version* VectorInput::find(const DeviceMatrix& w) {
    for (auto& v : versions_)
        if (v.q.bits == w.bits && v.q.group_size == w.group_size) return &v;
    return nullptr;
}

void VectorInput::serve(const DeviceMatrix& w) {
    if (w.format != DeviceFormat::affine) return;
    if (w.cols != cols_) fail("CUDA: a ", w.cols, "-column matrix reads a vector of ", cols_, " values");
    if (find(w)) return;
    Version v;
    v.memory = DeviceMemory(quantized_input_bytes(n_, cols_, w.group_size), "quantised inputs");
    v.q = quantized_input_in(v.memory.get(), n_, cols_, w.group_size, w.bits);
    versions_.push_back(std::move(v));
}

void VectorInput::normalize(const float* x, const float* weight, float eps, cudaStream_t stream, int64_t rows) {
    const int64_t n = rows >= 0 ? std::min(rows, n_) : n_;
    QuantizedInput made[kMaxNormQuantizations];
    int count = 0;
    for (auto& v : versions_) {
        v.fresh = count < kMaxNormQuantizations;
        if (v.fresh) made[count++] = v.q;
    }
    rms_norm_quantized(x, x_, n, cols_, weight, eps, made, count, stream);
}

void VectorInput::prepare(const DeviceMatrix& w, cudaStream_t stream, int64_t rows) {
    if (w.format != DeviceFormat::affine) return;
    Version* v = find(w);
    if (!v) fail("CUDA: no room was made for a ", w.bits, "-bit input");
    if (v->fresh) return;
    QuantizedInput q = v->q;
    if (rows >= 0) q.n = std::min(rows, q.n);
    quantize_input(x_, q, stream);
    v->fresh = true;
}

const QuantizedInput* VectorInput::produce(const DeviceMatrix& w) {
    changed();
    if (w.format != DeviceFormat::affine) return nullptr;
    Version* v = find(w);
    if (!v) fail("CUDA: no room was made for a ", w.bits, "-bit input");
    v->fresh = true;
    return &v->q;
}

const QuantizedInput& VectorInput::quantized(const DeviceMatrix& w) const {
    for (const auto& v : versions_)
        if (v.q.bits == w.bits && v.q.group_size == w.group_size) return v.q;
    fail("CUDA: no quantised input for ", w.bits, "-bit weights");
}

ProductInput VectorInput::operator()(const DeviceMatrix& w) const {
    ProductInput in;
    in.x = x_;
    if (w.format == DeviceFormat::affine)
        for (const auto& v : versions_)
            if (v.q.bits == w.bits && v.q.group_size == w.group_size) in.quantized = &v.q;
    return in;
}

}  // namespace moepack::cuda
