"""How far cllm's training step could still get ahead of nanoGPT's: the matmul floor of each shape.

    flock /tmp/cllm-bench.lock python benchmarks/ceiling.py [--shapes small base0 base v10k] [--steps 10]

Every implementation of a shape's model (same width, depth, context, batch, vocabulary) has to do
the same matrix products in a training step: per layer the QKV, output and two MLP projections
forward and twice backward (input and weight gradients), the four batched attention products
forward and backward, and the LM head. This script times each of those GEMMs on its own in bf16
(hot caches, this machine's threads, median of repeats) and adds them up: the *GEMM floor*, what
a step would cost if it did nothing but its matmuls at the speed this machine does them alone.
Then it runs nanoGPT's best step and cllm's default step as ``peers.py`` does (interleaved,
medians) and prints

    cllm / best nanoGPT          the ratio as it is
    floor / cllm step            how much of cllm's step is matmul work at stand-alone speed
    nanoGPT / floor              the largest ratio any implementation could reach over nanoGPT

If the last is below an issue's goal, the goal cannot be met on this machine by a faster step
of the same model, only by doing fewer FLOPs (another model) or faster GEMMs than the BLAS's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from common import cpu_name
from peers import SHAPES, load_nanogpt, run_shape, shape_config

GOALS = {"small": 2.0, "base0": 1.5, "base": 2.5}  # issue 16's ratios to nanoGPT's best


def step_gemms(cfg) -> list[tuple[str, tuple[int, ...], tuple[int, ...], bool, bool]]:
    """The GEMMs of one training step: (name, a shape, b shape, transpose a, transpose b); shapes
    with a leading batch dimension are batched (bmm). Transposes are views, as autograd passes them."""
    m, t = cfg.model, cfg.train
    N, C, T, H = t.batch_size * m.block_size, m.n_embd, m.block_size, m.n_head
    BH, D = t.batch_size * H, C // H
    hidden = 4 * C if m.mlp != "swiglu" else 64 * -(-8 * C // 3 // 64)
    up = 2 * hidden if m.mlp == "swiglu" else hidden
    gemms = []

    def linear(name, k, n):  # y[N, n] = x[N, k] @ W[n, k]^T; dx = dy @ W; dW = dy^T @ x
        gemms.extend([(f"{name} fwd", (N, k), (n, k), False, True),
                      (f"{name} dx", (N, n), (n, k), False, False),
                      (f"{name} dW", (N, n), (N, k), True, False)])

    for layer in range(m.n_layer):
        linear("qkv", C, 3 * C)
        linear("attn proj", C, C)
        linear("mlp up", C, up)
        linear("mlp down", hidden, C)
        gemms.extend([  # scores = q k^T, y = w v; backward: dw, dv, dq, dk
            ("q k^T", (BH, T, D), (BH, T, D), False, True), ("w v", (BH, T, T), (BH, T, D), False, False),
            ("dw", (BH, T, D), (BH, T, D), False, True), ("dv", (BH, T, T), (BH, T, D), True, False),
            ("dq", (BH, T, T), (BH, T, D), False, False), ("dk", (BH, T, T), (BH, T, D), True, False)])
    linear("lm head", C, m.vocab_size)
    return gemms


def gemm_seconds(a_shape, b_shape, ta: bool, tb: bool, reps: int = 30) -> float:
    """Median seconds of one bf16 product of the given layout, after warm-up."""
    a, b = torch.randn(a_shape).bfloat16(), torch.randn(b_shape).bfloat16()
    a, b = (a.transpose(-2, -1) if ta else a), (b.transpose(-2, -1) if tb else b)
    fn = torch.bmm if a.dim() == 3 else torch.mm
    for _ in range(3):
        fn(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(a, b)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_floor_ms(cfg) -> float:
    cache: dict = {}
    total = 0.0
    for _, a, b, ta, tb in step_gemms(cfg):
        key = (a, b, ta, tb)
        if key not in cache:
            cache[key] = gemm_seconds(a, b, ta, tb)
        total += cache[key]
    return total * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    nanogpt = load_nanogpt()
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; "
          f"step times are medians of {args.steps} interleaved steps, GEMMs medians of 30 alone")
    print("| shape | nanoGPT best ms | cllm ms | cllm / best nanoGPT | GEMM floor ms | floor / cllm step | "
          "nanoGPT / floor (the most any step could reach) | goal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.shapes:
        cfg = shape_config(name)
        tokens = cfg.train.batch_size * cfg.model.block_size
        r = run_shape(nanogpt, name, args.warmup, args.steps)
        best = max(r["nanoGPT float32 eager"], r["nanoGPT compiled bf16"])
        nano_ms, cllm_ms = 1000 * tokens / best, 1000 * tokens / r["cllm default"]
        floor = gemm_floor_ms(cfg)
        goal = f"≥ {GOALS[name]}x" if name in GOALS else ""
        print(f"| {name} | {nano_ms:.1f} | {cllm_ms:.1f} | {nano_ms / cllm_ms:.2f}x | {floor:.1f} | "
              f"{floor / cllm_ms:.0%} | {nano_ms / floor:.2f}x | {goal} |", flush=True)


if __name__ == "__main__":
    main()
