"""Compiled CPU training step: written-out attention and hashed dropout vs SDPA and Inductor's RNG.

    python benchmarks/cpu_attention.py [--dropout 0.2] [--rounds 8]

Builds the `base` shape (6x384, 6 heads, T=256, B=8, V=84), compiles one model per variant and
times full bf16 training steps (forward, backward, fused AdamW), the variants' steps interleaved
in one process so machine noise hits them alike; prints each median and its ratio to the
previous default path (SDPA attention, Inductor-generated dropout masks). The variants swap
`cllm.model`'s attention and dropout functions while each model is traced.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import cllm.kernels as K
import cllm.model as M
from cllm.config import ModelConfig

from common import cpu_name
from dropout_rng import bool_keep


def sdpa_attention(q, k, v, dropout_p):
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)


def inductor_rng_dropout(x, p):
    return F.dropout(x, p, True)


def bool_mask_dropout(x, p):
    """The hashed mask as a comparison (a bool tensor), as first written."""
    key = torch.randint(-(2**31), 2**31 - 1, (1,), dtype=torch.int32, device=x.device)
    return torch.where(bool_keep(x.shape, p, key), x * (1.0 / (1.0 - p)), 0.0).to(x.dtype)


# name -> (attention, dropout used when compiled for CPU)
VARIANTS = {
    "SDPA + Inductor RNG (before)": (sdpa_attention, inductor_rng_dropout),
    "SDPA + hashed dropout": (sdpa_attention, K.hashed_dropout),
    "written-out + Inductor RNG": (K.causal_attention, inductor_rng_dropout),
    "written-out + hashed, bool mask": (K.causal_attention, bool_mask_dropout),
    "written-out + hashed (default)": (K.causal_attention, K.hashed_dropout),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    cfg = ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=84, dropout=args.dropout)
    x = torch.randint(0, cfg.vocab_size, (8, cfg.block_size))
    y = torch.randint(0, cfg.vocab_size, (8, cfg.block_size))
    runs = {}
    for name in VARIANTS:
        torch.manual_seed(0)
        model = M.GPT(cfg).train()
        runs[name] = (torch.compile(model), torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True))

    def step(name: str) -> float:
        M.causal_attention, K.hashed_dropout = VARIANTS[name]  # Dynamo guards on these globals
        compiled, opt = runs[name]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss = compiled(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for name in VARIANTS:  # compile and warm up
        for _ in range(3):
            step(name)
    times = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            times[name].append(step(name))
    medians = {name: statistics.median(t) for name, t in times.items()}
    reference = medians["SDPA + Inductor RNG (before)"]
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"base shape, dropout {args.dropout}, bf16 compiled, median of {args.rounds}")
    for name, seconds in medians.items():
        tokens_per_sec = x.numel() / seconds
        print(f"{name:34s} {seconds * 1000:7.1f} ms/step {tokens_per_sec:8,.0f} tok/s  {reference / seconds:5.2f}x")


if __name__ == "__main__":
    main()
