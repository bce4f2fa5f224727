// The steps qwen3_next and qwen3_5_moe add to the CUDA decoder, for a decode token (inside
// its graph) and a prompt batch alike: Gated DeltaNet layers (the projections through the
// decode or prompt products, the convolution and the delta rule through
// shaders/gated_deltanet.cu, the output projection added to the residual) with each layer's
// recurrent state (the convolution's last K - 1 inputs, then S) in GPU memory, zeroed at a
// context's start and copied with the KV cache when a state is saved or loaded; and the
// shared expert scaled by sigmoid(shared_expert_gate . h), the scale applied to its
// activations before the (linear) down product. Gated attention's split and gate are in
// the attention blocks (gpu_decoder.cpp, gpu_prompt.cpp). CPU references:
// models/gated_deltanet.cpp, models/decoder.cpp.
#include <cuda_runtime_api.h>

#include "cuda/gpu_decoder_state.hpp"
#include "cuda_check.hpp"

namespace moepack::cuda {

void GpuDecoder::allocate_recurrent_states() {
    // each layer's state 16-byte aligned, S after the convolution's rows
    const int64_t stride = (ctx_.kv.recurrent_floats() + 3) / 4 * 4;
    int64_t linear = 0;
    for (const Layer& l : layers_) linear += l.linear ? 1 : 0;
    if (linear == 0) return;
    recurrent_bytes_ = static_cast<size_t>(linear * stride) * sizeof(float);
    recurrent_ = DeviceMemory(recurrent_bytes_, "linear-attention states");
    float* next = recurrent_.get<float>();
    for (Layer& l : layers_)
        if (l.linear) {
            l.state = next;
            next += stride;
        }
    check_cuda(cudaMemset(recurrent_.get(), 0, recurrent_bytes_), "clearing the linear-attention states");
}

void GpuDecoder::clear_recurrent_states() {
    if (recurrent_bytes_ > 0)
        check_cuda(cudaMemsetAsync(recurrent_.get(), 0, recurrent_bytes_, stream_), "clearing the linear-attention states");
}

void GpuDecoder::serve_hybrid(HybridBuffers& b, VectorInput& h_in) const {
    for (const Layer& l : layers_) {
        if (l.linear) {
            for (const DeviceMatrix* m : {&l.in_qkv, &l.in_z, &l.in_b, &l.in_a}) h_in.serve(*m);
            b.o_in.serve(l.out_proj);
        }
        if (l.shared) {
            for (const DeviceMatrix* m : {&l.shared_gate, &l.shared_up, &l.shared_score}) h_in.serve(*m);
            b.shared_act_in.serve(l.shared_down);
        }
    }
}

void GpuDecoder::project(std::initializer_list<GemvProduct> list, VectorInput& in, int64_t n, GemvOutput output) {
    if (n == 1) return products(list, in, output);
    for (const GemvProduct& p : list) rows_product(p.w, in, n, p.y, output);
}

void GpuDecoder::linear_attention_block(const Layer& l, int64_t n, HybridBuffers& b, VectorInput& h_in, float* x) {
    const int64_t C = linear_channels_, K = c_.linear.conv_kernel;
    project({{l.in_qkv, b.mixed}, {l.in_z, b.z}, {l.in_b, b.b}, {l.in_a, b.a}}, h_in, n, GemvOutput::store);
    gated_deltanet_convolve(b.mixed, n, C, K, l.conv, l.state, b.conv_out, stream_);
    gated_deltanet_recur(delta_rule_, b.conv_out, n, b.b, b.a, l.a_log, l.dt_bias, b.z, l.linear_norm, l.state + (K - 1) * C, b.o,
                         stream_);
    b.o_in.changed();
    project({{l.out_proj, x}}, b.o_in, n, GemvOutput::add);
}

void GpuDecoder::shared_expert(const Layer& l, int64_t n, HybridBuffers& b, VectorInput& h_in, float* x) {
    const int64_t S = c_.shared_expert_intermediate_size;
    project({{l.shared_gate, b.shared_g}, {l.shared_up, b.shared_u}, {l.shared_score, b.shared_s}}, h_in, n, GemvOutput::store);
    swiglu(b.shared_g, b.shared_u, b.shared_g, n, S, b.shared_s, stream_);
    b.shared_act_in.changed();
    project({{l.shared_down, x}}, b.shared_act_in, n, GemvOutput::add);
}

}  // namespace moepack::cuda
