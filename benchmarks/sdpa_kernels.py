"""Eager CPU attention: SDPA's flash and math kernels against cllm's written-out attention, causal.

    python benchmarks/sdpa_kernels.py [--threads 2] [--model small base] [--rounds 20]

For each shape and dtype, forward only (evaluation, no_grad) and forward + backward (training)
are timed for the three, each a median after warm-up, run one after another in one process.
"written" is ``cllm.kernels.causal_attention`` run eagerly (a ``baddbmm`` that scales and adds
the causal mask, a float32 softmax, a ``bmm``), which is what the model runs eagerly on a CPU.
Shapes: small training (12x4x64x32), small evaluation batch (64 windows), base training
(8x6x256x64), the 2-layer 10k-vocabulary shape (20x8x128x32).

``--model PRESET ...`` also times whole eager bf16 steps of those presets (what `--no-compile`,
the quickstart and speedrun presets run) and an evaluation forward of 64 windows, the model's
attention switched between SDPA (the previous eager path) and the written-out one, steps
interleaved, medians.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import cllm.model
from cllm.config import Config, apply_dict, load_preset
from cllm.kernels import attention_backends, causal_attention
from cllm.runtime import autocast, deterministic_cpu_kernels
from cllm.training.bench import variant_trainer
from common import cpu_name, median_seconds


def sdpa_attention(q, k, v, dropout_p):
    """The eager CPU path before the written-out attention: SDPA, math kernel for heads < 64."""
    with sdpa_kernel(attention_backends(q)):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)


def model_ms(preset: str, rounds: int) -> dict[str, tuple[float, float]]:
    """{attention: (eager bf16 training step ms, 64-window evaluation forward ms)}, interleaved."""
    cfg = Config()
    apply_dict(cfg, load_preset(preset), "preset")
    cfg.model.vocab_size, cfg.train.compile = 65, False
    cfg.validate()
    variants = {"sdpa": sdpa_attention, "written": causal_attention}
    trainers = {name: variant_trainer(cfg, "default") for name in variants}
    windows = torch.randint(0, 65, (64, cfg.model.block_size))
    times = {name: ([], []) for name in variants}
    device = torch.device("cpu")
    with deterministic_cpu_kernels(device):
        for i in range(rounds + 3):  # 3 warm-up rounds
            for name, attention in variants.items():
                cllm.model.causal_attention = attention
                trainer = trainers[name]
                start = time.perf_counter()
                trainer.step()
                middle = time.perf_counter()
                with torch.no_grad(), autocast(device, trainer.dtype):
                    trainer.model.eval()
                    trainer.model(windows)
                    trainer.model.train()
                if i >= 3:
                    times[name][0].append(middle - start)
                    times[name][1].append(time.perf_counter() - middle)
    cllm.model.causal_attention = causal_attention
    return {name: tuple(1000 * statistics.median(t) for t in ts) for name, ts in times.items()}


def kernel(name):
    if name == "written":
        return lambda q, k, v: causal_attention(q, k, v, 0.0)
    backend = {"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}[name]

    def sdpa(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return sdpa


def times_ms(shape, dtype, name, reps=15):
    """(forward ms under no_grad, forward + backward ms)."""
    q, k, v = (torch.randn(*shape, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(*shape, dtype=dtype)
    fn = kernel(name)

    def forward():
        with torch.no_grad():
            fn(q, k, v)

    return (median_seconds(forward, reps, warmup=3) * 1000,
            median_seconds(lambda: fn(q, k, v).backward(grad), reps, warmup=3) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (default: all cores)")
    parser.add_argument("--model", nargs="*", default=[], help="presets whose whole eager steps to time too")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; ms, median of 15")
    print("| B, H, T, D | dtype | flash fwd / fwd+bwd | math fwd / fwd+bwd | written fwd / fwd+bwd | math / written (fwd, fwd+bwd) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape in [(12, 4, 64, 32), (64, 4, 64, 32), (8, 6, 256, 64), (20, 8, 128, 32)]:
        for dtype in (torch.float32, torch.bfloat16):
            r = {name: times_ms(shape, dtype, name) for name in ("flash", "math", "written")}
            cells = " | ".join(f"{f:.2f} / {fb:.2f}" for f, fb in r.values())
            ratio = f"{r['math'][0] / r['written'][0]:.2f}x, {r['math'][1] / r['written'][1]:.2f}x"
            print(f"| {shape} | {str(dtype).removeprefix('torch.')} | {cells} | {ratio} |", flush=True)
    if args.model:
        print("\n| preset | eager bf16 step: SDPA / written (ms) | ratio | eval forward, 64 windows: SDPA / written (ms) | ratio |")
        print("| --- | --- | --- | --- | --- |")
    for preset in args.model:
        r = model_ms(preset, args.rounds)
        (s_step, s_eval), (w_step, w_eval) = r["sdpa"], r["written"]
        print(f"| {preset} | {s_step:.1f} / {w_step:.1f} | {s_step / w_step:.2f}x | {s_eval:.1f} / {w_eval:.1f} | "
              f"{s_eval / w_eval:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
