// Next-layer expert prediction and prefetch for experts streamed into GPU memory. While a
// decode token's routing for MoE layer l is computed, the next MoE layer's router is applied
// to the same input (the hidden state changes little from one layer to the next, so its
// top-k foretells that layer's choice) and the predicted experts come down to the host with
// layer l's routing. At the next layer the prediction is scored against the real choice
// (DeviceCacheStats::predicted, predicted_routed). When misses are copied
// (--gpu-misses copy), once enough predictions are scored and at least kPrefetchAccuracy of
// the predicted experts were routed to, the predicted experts missing from GPU memory are
// copied ahead, behind layer l's own copies and overlapping the next layer's attention.
// Measured on the reference pack (docs/benchmarks.md): with 82 % of predictions right this
// wins 4 % with copies alone, but loses 15 % where misses are shared with the CPU (the copies
// ahead take the link while the CPU, which would have computed those misses, idles), so it
// is off there. Only from a RAM cache that holds every expert (its blocks never move, so the
// copies need no pins there). MOEPACK_CUDA_PREFETCH=1 copies ahead always, =0 never.
#include <cuda_runtime_api.h>

#include <algorithm>

#include "cuda/gpu_decoder_state.hpp"
#include "cuda_check.hpp"
#include "expert_store.hpp"

namespace moepack::cuda {

namespace {

constexpr uint64_t kPrefetchWarmup = 256;   // predicted experts scored before copies ahead may start
constexpr double kPrefetchAccuracy = 0.5;   // share of predicted experts routed to

}  // namespace

// Queues the next MoE layer's router on this layer's input and its top-k, down to the host.
void GpuDecoder::predict_next_layer(int64_t layer) {
    Streaming& s = *streaming_;
    const int64_t next = s.next_moe[static_cast<size_t>(layer)], K = c_.experts_per_token;
    if (next < 0) return;
    const Layer& n = layers_[static_cast<size_t>(next)];
    products({{n.router, s.prediction_logits}}, h_in_, GemvOutput::store);
    route(s.prediction_logits, 1, c_.num_experts, K,
          c_.routing.function == RoutingFunction::softmax_topk ? RouteFunction::softmax_topk : RouteFunction::topk_softmax,
          c_.routing.normalize_topk, static_cast<float>(c_.routing.scaling_factor), s.prediction_ids, s.prediction_weights,
          stream_);
    check_cuda(cudaMemcpyAsync(s.predicted, s.prediction_ids, static_cast<size_t>(K) * 4, cudaMemcpyDeviceToHost, stream_),
               "predicted experts");
}

// Scores the prediction made for this layer (and the experts copied ahead for it) against
// its routing (s.ids, on the host), then keeps the prediction made for the next layer.
void GpuDecoder::check_prediction(int64_t layer) {
    Streaming& s = *streaming_;
    const std::span<const int32_t> routed(s.ids, static_cast<size_t>(c_.experts_per_token));
    auto chosen = [&](int32_t e) { return std::find(routed.begin(), routed.end(), e) != routed.end(); };
    if (s.prediction_for == layer) {
        const auto hits = static_cast<uint64_t>(std::count_if(s.prediction.begin(), s.prediction.end(), chosen));
        ctx_.device.predicted += s.prediction.size();
        ctx_.device.predicted_routed += hits;
        s.predictions += s.prediction.size();
        s.predictions_routed += hits;
    }
    if (s.prefetched_for == layer)
        ctx_.device.prefetch_used += static_cast<uint64_t>(std::count_if(s.prefetched.begin(), s.prefetched.end(), chosen));
    s.prefetched.clear();
    s.prefetched_for = -1;
    const int64_t next = s.next_moe[static_cast<size_t>(layer)];
    s.prediction.assign(s.predicted, s.predicted + (next >= 0 ? c_.experts_per_token : 0));
    s.prediction_for = next;
}

void GpuDecoder::prefetch_next_layer(int64_t layer) {
    Streaming& s = *streaming_;
    const int64_t next = s.next_moe[static_cast<size_t>(layer)];
    const bool pays = s.prefetch == 1 ||
                      (s.prefetch == -1 && ctx_.device_misses == engine::MissHandling::copy && s.predictions >= kPrefetchWarmup &&
                       static_cast<double>(s.predictions_routed) >= kPrefetchAccuracy * static_cast<double>(s.predictions));
    if (next < 0 || !pays || !ctx_.experts->holds_every_expert()) return;
    std::vector<int32_t>& wanted = s.prefetched;
    std::vector<const std::byte*>& blocks = s.prefetched_blocks;
    wanted.clear(), blocks.clear();
    const auto room = static_cast<size_t>(std::max<int64_t>(0, experts_->unpinned_slots()));
    for (const int32_t e : s.prediction) {
        const std::byte* block = ctx_.experts->peek(next, e);
        if (block && !experts_->resident(next, e) && wanted.size() < room) {
            wanted.push_back(e);
            blocks.push_back(block);
        }
    }
    if (wanted.empty()) return;
    const std::span<const int32_t> copies = experts_->place(next, wanted, true);   // all of them: none is resident
    experts_->copy_in(next, copies, blocks, stream_, true);
    ctx_.device.prefetched += copies.size();
    s.prefetched_for = next;
}

}  // namespace moepack::cuda
