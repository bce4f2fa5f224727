// Timing of GPU work for the CUDA microbenchmarks: seconds per call, from CUDA events.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda_check.hpp"

namespace moepack::cuda::bench {

// Seconds per call of fn(stream), from cudaEvents around `reps` calls after a warm-up:
// launched one by one, or (graph) captured once and replayed.
template <typename Fn>
double time_per_call(int reps, bool graph, Fn fn) {
    cudaStream_t stream;
    moepack::cuda::check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
    cudaGraphExec_t exec = nullptr;
    if (graph) {
        cudaGraph_t g;
        moepack::cuda::check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
        for (int i = 0; i < reps; ++i) fn(stream);
        moepack::cuda::check_cuda(cudaStreamEndCapture(stream, &g), "capture");
        moepack::cuda::check_cuda(cudaGraphInstantiate(&exec, g, 0), "instantiate");
        cudaGraphDestroy(g);
    }
    auto run = [&] {
        if (graph)
            moepack::cuda::check_cuda(cudaGraphLaunch(exec, stream), "graph launch");
        else
            for (int i = 0; i < reps; ++i) fn(stream);
    };
    run();
    cudaEvent_t start, stop;
    moepack::cuda::check_cuda(cudaEventCreate(&start), "event");
    moepack::cuda::check_cuda(cudaEventCreate(&stop), "event");
    moepack::cuda::check_cuda(cudaEventRecord(start, stream), "record");
    run();
    moepack::cuda::check_cuda(cudaEventRecord(stop, stream), "record");
    moepack::cuda::check_cuda(cudaEventSynchronize(stop), "sync");
    float ms = 0;
    moepack::cuda::check_cuda(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    if (exec) cudaGraphExecDestroy(exec);
    cudaStreamDestroy(stream);
    return ms / 1e3 / reps;
}

}  // namespace moepack::cuda::bench
