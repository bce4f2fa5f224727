// CUDA resources owned by objects (released in destructors, also when a constructor throws):
// device memory, pinned host memory, a stream, an instantiated graph; and the input of a
// set of products, a vector with the int8 quantisations its affine matrices read.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "cuda_check.hpp"
#include "kernels.hpp"

namespace moepack::cuda {

// Memory owned by one object, given back by Release (cudaFree or cudaFreeHost).
template <cudaError_t (*Release)(void*)>
class OwnedMemory {
public:
    OwnedMemory() = default;
    ~OwnedMemory() {
        if (p_) Release(p_);
    }
    OwnedMemory(OwnedMemory&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    OwnedMemory& operator=(OwnedMemory&& o) noexcept {
        std::swap(p_, o.p_);
        return *this;
    }
    template <typename T = std::byte>
    T* get() const { return static_cast<T*>(p_); }

protected:
    void* p_ = nullptr;
};

// GPU memory.
class DeviceMemory : public OwnedMemory<cudaFree> {
public:
    DeviceMemory() = default;
    DeviceMemory(size_t bytes, const char* what);
};

// One device allocation carved into float arrays, each 16 bytes aligned (the kernels' vector
// loads and copies): layout(take) takes every array in turn, float* take(int64_t count); it
// runs once to size the allocation and once to hand out the pointers.
template <typename Layout>
DeviceMemory carve_floats(Layout layout, const char* what) {
    const auto padded = [](int64_t count) { return (count + 3) / 4 * 4; };
    int64_t floats = 0;
    layout([&](int64_t count) {
        floats += padded(count);
        return static_cast<float*>(nullptr);
    });
    DeviceMemory memory(static_cast<size_t>(floats) * sizeof(float), what);
    float* next = memory.get<float>();
    layout([&](int64_t count) {
        float* array = next;
        next += padded(count);
        return array;
    });
    return memory;
}

// Page-locked host memory (the target of asynchronous copies and of captured graphs' copies).
class PinnedMemory : public OwnedMemory<cudaFreeHost> {
public:
    PinnedMemory() = default;
    PinnedMemory(size_t bytes, const char* what) { check_cuda(cudaMallocHost(&p_, std::max<size_t>(bytes, 1)), what); }
};

// A non-blocking CUDA stream owned by one object.
class Stream {
public:
    Stream() { check_cuda(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate"); }
    ~Stream() { cudaStreamDestroy(s_); }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    operator cudaStream_t() const { return s_; }

private:
    cudaStream_t s_ = nullptr;
};

// An event that orders work across streams (no timing).
class Event {
public:
    Event() { check_cuda(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming), "cudaEventCreate"); }
    ~Event() { cudaEventDestroy(e_); }
    Event(const Event&) = delete;
    Event& operator=(const Event&) = delete;
    operator cudaEvent_t() const { return e_; }

private:
    cudaEvent_t e_ = nullptr;
};

// The work `enqueue` puts on a stream, captured once as a CUDA graph and replayed by
// launch(): one launch instead of hundreds. Kernel arguments are fixed at capture, so what
// changes between replays (token, position) must live in memory the kernels read.
class CapturedGraph {
public:
    CapturedGraph() = default;
    ~CapturedGraph() {
        if (exec_) cudaGraphExecDestroy(exec_);
    }
    CapturedGraph(const CapturedGraph&) = delete;
    CapturedGraph& operator=(const CapturedGraph&) = delete;
    bool ready() const { return exec_ != nullptr; }
    template <typename Enqueue>
    void capture(cudaStream_t stream, Enqueue&& enqueue);
    void launch(cudaStream_t stream) const { check_cuda(cudaGraphLaunch(exec_, stream), "cudaGraphLaunch"); }

private:
    cudaGraphExec_t exec_ = nullptr;
};

template <typename Enqueue>
void CapturedGraph::capture(cudaStream_t stream, Enqueue&& enqueue) {
    check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    cudaGraph_t graph = nullptr;
    try {
        enqueue();
    } catch (...) {
        cudaStreamEndCapture(stream, &graph);   // leave the stream usable
        if (graph) cudaGraphDestroy(graph);
        throw;
    }
    check_cuda(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
    const cudaError_t status = cudaGraphInstantiate(&exec_, graph, 0);
    cudaGraphDestroy(graph);
    check_cuda(status, "cudaGraphInstantiate");
}

// Copy rates of this GPU, measured by timing copies of `bytes` (best of a few): page-locked
// host memory to the GPU, and GPU memory to GPU memory (bytes read plus bytes written per
// second).
double host_to_device_rate(size_t bytes);
double device_memory_rate(size_t bytes);

// A vector of n rows of cols floats in device memory and its quantisations for the affine
// matrices that read it (one per bits and group size, made on demand by prepare()).
class VectorInput {
public:
    VectorInput() = default;
    VectorInput(float* x, int64_t n, int64_t cols) : x_(x), n_(n), cols_(cols) {}
    // Makes room for w's quantisation (at set-up, before any capture).
    void serve(const DeviceMatrix& w);
    // The vector becomes rms_norm(x) (x's first `rows` rows; -1: all; x is not the vector)
    // and its quantisations are made from it, in one launch.
    void normalize(const float* x, const float* weight, float eps, cudaStream_t stream, int64_t rows = -1);
    // The vector changed: quantisations made before are stale.
    void changed() {
        for (auto& v : versions_) v.fresh = false;
    }
    // The vector is about to be written by a kernel that also makes its quantisation for w:
    // that quantisation (null for float weights), marked fresh; the others stale.
    const QuantizedInput* produce(const DeviceMatrix& w);
    // Quantises the vector (its first `rows` rows; -1: all) for w unless that is fresh.
    void prepare(const DeviceMatrix& w, cudaStream_t stream, int64_t rows = -1);
    // w's quantisation (prepare(w) first); w must be affine.
    const QuantizedInput& quantized(const DeviceMatrix& w) const;
    // The input of a product with w (prepare(w) first when w is affine).
    ProductInput operator()(const DeviceMatrix& w) const;
    float* x() const { return x_; }

private:
    struct Version {
        DeviceMemory memory;
        QuantizedInput q;
        bool fresh = false;
    };
    Version* find(const DeviceMatrix& w);
    float* x_ = nullptr;
    int64_t n_ = 0, cols_ = 0;
    std::vector<Version> versions_;
};

}  // namespace moepack::cuda
