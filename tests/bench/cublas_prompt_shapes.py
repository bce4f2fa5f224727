#!/usr/bin/env python3
"""What cuBLAS does with the reference model's prompt products, for comparison with
bench_cuda_gemm (the tensor-core kernels of shaders/gemm_int8.cu), on the GPU machine.

torch.matmul / torch.bmm in bf16 (cuBLAS) with weights already in bf16, for a batch of N
tokens: the dense 8-bit attn_q (4096 x 2048) and the routed experts (128 experts of 768 x
2048, top 8: N * 8 / 128 tokens per expert, gate and up as one 1536-row product, then down),
plus what turning the pack's affine codes into bf16 first would cost at the measured
device-to-device copy rate (codes and scales read, bf16 written; a lower bound for a
dequantisation kernel). Prints microseconds per call and TFLOP/s. For benchmarks only.
"""
import argparse

import torch


def time_us(fn, repeats=50):
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 128])
    args = parser.parse_args()
    dev = torch.device("cuda")
    hidden, q_rows, experts, inter, top = 2048, 4096, 128, 768, 8

    src = torch.empty(1 << 28, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy_bytes_s = 2 * src.numel() / (time_us(lambda: dst.copy_(src), 10) * 1e-6)   # read + write
    print(f"device-to-device copy: {copy_bytes_s / 1e9:.0f} GB/s (read + write)")

    def dequant_us(params, bits):
        # codes at `bits` bits, a bf16 scale and bias per 64 values read; bf16 written
        moved = params * bits / 8 + params / 64 * 4 + params * 2
        return moved / copy_bytes_s * 1e6

    w_q = torch.randn(q_rows, hidden, device=dev, dtype=torch.bfloat16)
    w_gu = torch.randn(experts, hidden, 2 * inter, device=dev, dtype=torch.bfloat16)
    w_down = torch.randn(experts, inter, hidden, device=dev, dtype=torch.bfloat16)
    print(f"{'product':<44} {'tokens':>6} {'us':>9} {'TFLOP/s':>8} {'+ dequant us':>13}")
    for n in args.tokens:
        x = torch.randn(n, hidden, device=dev, dtype=torch.bfloat16)
        us = time_us(lambda: torch.matmul(x, w_q.t()))
        print(f"{'attn_q 4096 x 2048 (bf16 weights)':<44} {n:>6} {us:>9.1f} {2 * n * q_rows * hidden / us / 1e6:>8.1f}"
              f" {us + dequant_us(q_rows * hidden, 8):>13.1f}")
        per_expert = max(1, n * top // experts)
        xe = torch.randn(experts, per_expert, hidden, device=dev, dtype=torch.bfloat16)
        us = time_us(lambda: torch.bmm(xe, w_gu))
        flops = 2 * experts * per_expert * hidden * 2 * inter
        print(f"{'experts gate+up, 128 x (1536 x 2048), bmm':<44} {n:>6} {us:>9.1f} {flops / us / 1e6:>8.1f}"
              f" {us + dequant_us(experts * 2 * inter * hidden, 4):>13.1f}")
        act = torch.randn(experts, per_expert, inter, device=dev, dtype=torch.bfloat16)
        us = time_us(lambda: torch.bmm(act, w_down))
        flops = 2 * experts * per_expert * inter * hidden
        print(f"{'experts down, 128 x (2048 x 768), bmm':<44} {n:>6} {us:>9.1f} {flops / us / 1e6:>8.1f}"
              f" {us + dequant_us(experts * inter * hidden, 4):>13.1f}")


if __name__ == "__main__":
    main()
