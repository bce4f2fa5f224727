// Routed experts when GPU memory does not hold them all (GpuExpertCache as a cache). A decode
// token's routing (k expert ids and weights) and the experts' input cross to the host once
// per MoE layer; the experts in GPU memory are computed there; each missing one is either
// copied over on the cache's copy stream (then computed with the resident ones) or computed
// on the CPU from the expert store's RAM cache while the GPU works, the CPU's weighted sum
// added to the residual afterwards. Automatic handling splits the misses where the two are
// expected to finish together: a copy costs a measured time per expert, the CPU a time per
// call (thread wake-ups, input preparation) plus a time per expert, both calibrated at open
// and the per-expert times kept up to date while running. The next layer's experts are
// predicted and, where that pays, copied ahead (gpu_expert_prefetch.cpp). A prompt batch's
// distinct experts are copied in before its grouped products.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/gpu_decoder_state.hpp"
#include "cuda_check.hpp"
#include "expert_store.hpp"

namespace moepack::cuda {

namespace {

constexpr double kKeep = 0.875;   // weight of the past in the per-expert time averages

void average_in(double& average, double sample) { average = kKeep * average + (1.0 - kKeep) * sample; }

}  // namespace

void GpuDecoder::allocate_streaming() {
    if (!experts_ || experts_->all_resident()) return;
    auto s = std::make_unique<Streaming>();
    const int64_t K = c_.experts_per_token, H = c_.hidden_size;
    const int64_t E = c_.num_experts;
    s->host = PinnedMemory(static_cast<size_t>(5 * K + 2 * H) * sizeof(float), "expert routing (host)");
    s->ids = s->host.get<int32_t>();
    s->weights = reinterpret_cast<float*>(s->ids + K);
    s->h = s->weights + K;
    s->y = s->h + H;
    s->ids_up = reinterpret_cast<int32_t*>(s->y + H);
    s->weights_up = reinterpret_cast<float*>(s->ids_up + K);
    s->predicted = reinterpret_cast<int32_t*>(s->weights_up + K);
    s->device = DeviceMemory(static_cast<size_t>(H + 1 + E + 2 * K) * sizeof(float), "the CPU experts' sum");
    s->prediction_logits = s->device.get<float>() + H + 1;
    s->prediction_weights = s->prediction_logits + E;
    s->prediction_ids = reinterpret_cast<int32_t*>(s->prediction_weights + K);
    if (const char* v = std::getenv("MOEPACK_CUDA_PREFETCH")) s->prefetch = std::strcmp(v, "1") == 0 ? 1 : std::strcmp(v, "0") == 0 ? 0 : -1;
    s->next_moe.assign(static_cast<size_t>(c_.num_layers), -1);
    for (int64_t l = c_.num_layers - 2, next = -1; l >= 0; --l) {
        if (c_.layers[static_cast<size_t>(l + 1)].ffn == FfnKind::moe) next = l + 1;
        s->next_moe[static_cast<size_t>(l)] = next;
    }
    const float one = 1.0f;
    check_cuda(cudaMemcpy(s->device.get<float>() + H, &one, sizeof one, cudaMemcpyHostToDevice), "uploading a constant");
    s->cpu = std::make_unique<HostExperts>(ctx_.experts->layout(), ctx_.pool);
    // first estimate of a copy: the measured link rate
    s->copy_s = static_cast<double>(ctx_.experts->layout().bytes) / std::max(1.0, ctx_.device.host_to_device_bytes_s);
    streaming_ = std::move(s);
    if (ctx_.device_misses == engine::MissHandling::automatic) calibrate_cpu_experts();
}

// Times the CPU on one and on k experts of the first MoE layer (best of a few runs each):
// the difference gives the time per expert, the rest the time per call.
void GpuDecoder::calibrate_cpu_experts() {
    Streaming& s = *streaming_;
    const int64_t K = c_.experts_per_token;
    int64_t layer = 0;
    while (c_.layers[static_cast<size_t>(layer)].ffn != FfnKind::moe) ++layer;
    s.fetch.resize(static_cast<size_t>(K));
    for (int64_t j = 0; j < K; ++j) s.fetch[static_cast<size_t>(j)] = static_cast<int32_t>(j);
    s.blocks.resize(static_cast<size_t>(K));
    ctx_.experts->acquire(layer, s.fetch, s.blocks);
    std::fill_n(s.h, c_.hidden_size, 0.01f);
    const std::vector<float> weights(static_cast<size_t>(K), 1.0f / static_cast<float>(K));
    auto best_of = [&](int64_t count) {
        double best = 0;
        for (int rep = 0; rep < 4; ++rep) {
            const auto start = std::chrono::steady_clock::now();
            s.cpu->run(s.h, std::span<const std::byte* const>(s.blocks).first(static_cast<size_t>(count)),
                       std::span<const float>(weights).first(static_cast<size_t>(count)), s.y);
            const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
            if (rep > 0 && (best == 0 || took.count() < best)) best = took.count();   // the first run warms up
        }
        return best;
    };
    const double one = best_of(1), all = best_of(K);
    ctx_.experts->release_all();
    s.cpu_expert_s = std::max(1e-7, K > 1 ? (all - one) / static_cast<double>(K - 1) : one);
    s.cpu_call_s = std::max(0.0, one - s.cpu_expert_s);
}

// How many of `misses` experts the CPU computes: the split that ends soonest (CPU and copies
// running at once), fewer on the CPU on a tie.
int64_t GpuDecoder::cpu_share(int64_t misses) const {
    switch (ctx_.device_misses) {
        case engine::MissHandling::copy: return 0;
        case engine::MissHandling::cpu: return misses;
        case engine::MissHandling::automatic: break;
    }
    const Streaming& s = *streaming_;
    int64_t best = 0;
    double best_s = static_cast<double>(misses) * s.copy_s;
    for (int64_t c = 1; c <= misses; ++c) {
        const double t = std::max(s.cpu_call_s + static_cast<double>(c) * s.cpu_expert_s, static_cast<double>(misses - c) * s.copy_s);
        if (t < best_s) best = c, best_s = t;
    }
    return best;
}

void GpuDecoder::streamed_token_experts(const Layer& l, int64_t layer) {
    Streaming& s = *streaming_;
    const int64_t K = c_.experts_per_token, H = c_.hidden_size;
    predict_next_layer(layer);   // its experts come down with this layer's routing
    check_cuda(cudaMemcpyAsync(s.ids, ids_, static_cast<size_t>(K) * 4, cudaMemcpyDeviceToHost, stream_), "routing");
    check_cuda(cudaMemcpyAsync(s.weights, ew_, static_cast<size_t>(K) * 4, cudaMemcpyDeviceToHost, stream_), "routing");
    if (ctx_.device_misses != engine::MissHandling::copy)   // the CPU's experts read it
        check_cuda(cudaMemcpyAsync(s.h, h_, static_cast<size_t>(H) * 4, cudaMemcpyDeviceToHost, stream_), "expert input");
    check_cuda(cudaStreamSynchronize(stream_), "routing");
    check_prediction(layer);
    experts_->wait_for_prefetch(stream_);

    int64_t misses = 0;
    for (int64_t j = 0; j < K; ++j) misses += experts_->resident(layer, s.ids[j]) ? 0 : 1;
    int64_t to_cpu = cpu_share(misses);
    s.gpu_ids.clear(), s.gpu_weights.clear(), s.cpu_ids.clear(), s.cpu_weights.clear();
    for (int64_t j = 0; j < K; ++j) {
        const bool cpu = to_cpu > 0 && !experts_->resident(layer, s.ids[j]);
        to_cpu -= cpu ? 1 : 0;
        (cpu ? s.cpu_ids : s.gpu_ids).push_back(s.ids[j]);
        (cpu ? s.cpu_weights : s.gpu_weights).push_back(s.weights[j]);
    }
    const std::span<const int32_t> copies = experts_->place(layer, s.gpu_ids);   // valid until the next place()
    const size_t copied = copies.size();
    ctx_.device.misses += s.cpu_ids.size();
    ctx_.device.cpu_experts += s.cpu_ids.size();
    s.fetch.assign(copies.begin(), copies.end());
    s.fetch.insert(s.fetch.end(), s.cpu_ids.begin(), s.cpu_ids.end());
    s.blocks.resize(s.fetch.size());
    if (!s.fetch.empty()) ctx_.experts->acquire(layer, s.fetch, s.blocks);
    const std::span<const std::byte* const> blocks(s.blocks);
    experts_->copy_in(layer, copies, blocks.first(copied), stream_);

    prefetch_next_layer(layer);   // behind this layer's copies, ahead of the next layer's attention
    const auto kg = static_cast<int64_t>(s.gpu_ids.size());
    if (kg > 0) {
        std::copy(s.gpu_ids.begin(), s.gpu_ids.end(), s.ids_up);
        std::copy(s.gpu_weights.begin(), s.gpu_weights.end(), s.weights_up);
        check_cuda(cudaMemcpyAsync(ids_, s.ids_up, static_cast<size_t>(kg) * 4, cudaMemcpyHostToDevice, stream_), "routing");
        check_cuda(cudaMemcpyAsync(ew_, s.weights_up, static_cast<size_t>(kg) * 4, cudaMemcpyHostToDevice, stream_), "routing");
        h_in_.prepare(l.gate, stream_);
        expert_gate_up(l.gate, l.up, l.blocks, ids_, kg, h_in_(l.gate), act_, stream_);
        act_in_.changed();
        act_in_.prepare(l.down, stream_, kg);
        expert_down_add(l.down, l.blocks, ids_, ew_, kg, act_in_(l.down), x_, stream_);
    }
    if (!s.cpu_ids.empty()) {
        const auto start = std::chrono::steady_clock::now();
        s.cpu->run(s.h, blocks.subspan(copied), s.cpu_weights, s.y);
        const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
        average_in(s.cpu_expert_s, std::max(1e-7, (took.count() - s.cpu_call_s) / static_cast<double>(s.cpu_ids.size())));
        float* y = s.device.get<float>();
        check_cuda(cudaMemcpyAsync(y, s.y, static_cast<size_t>(H) * 4, cudaMemcpyHostToDevice, stream_), "CPU experts' sum");
        combine_experts(x_, y, y + H, 1, 1, H, stream_);
    }
    if (copied > 0) average_in(s.copy_s, experts_->wait_copies() / static_cast<double>(copied));
    if (!s.fetch.empty()) ctx_.experts->release_all();
}

void GpuDecoder::fetch_batch_experts(int64_t layer, int64_t n) {
    PromptState& p = *prompt_;
    const int64_t K = c_.experts_per_token;
    auto* ids = p.ids_host.get<int32_t>();
    check_cuda(cudaMemcpyAsync(ids, p.ids, static_cast<size_t>(n * K) * 4, cudaMemcpyDeviceToHost, stream_), "routing");
    check_cuda(cudaStreamSynchronize(stream_), "routing");
    std::vector<bool> used(static_cast<size_t>(c_.num_experts), false);
    std::vector<int32_t>& distinct = streaming_->fetch;
    distinct.clear();
    for (int64_t i = 0; i < n * K; ++i) {
        if (ids[i] < 0 || ids[i] >= c_.num_experts) fail("CUDA: layer ", layer, ": routed to expert ", ids[i]);
        if (!used[static_cast<size_t>(ids[i])]) distinct.push_back(ids[i]);
        used[static_cast<size_t>(ids[i])] = true;
    }
    experts_->fetch(layer, distinct, stream_);
}

}  // namespace moepack::cuda
