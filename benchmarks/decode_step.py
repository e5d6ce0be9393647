"""What bounds one cached decode step of the `base` shape: the step against a full 256-token
forward, in float32, with pre-transposed float32 weights, in bfloat16, and compiled
(``compiled_decode_step``, what `cllm sample --compile` runs).

    python benchmarks/decode_step.py [--rounds 400]

One token is decoded at cache position 200 (no window slide), the variants taking turns
(A, B, C, ...), medians; then the full 256-token forward that the uncached loop runs for every token,
per variant. The ratio full / step is the most a KV cache can give on this machine before window
slides and sampling. For reference: the step's 24 one-row products alone, and the time to stream
the float32 weights once (a sum over a 43 MB tensor).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from cllm.config import ModelConfig, load_preset
from cllm.inference import KVCache, compiled_decode_step
from cllm.model import GPT

from common import cpu_name


class TransposedLinear(nn.Module):
    """A Linear whose weight is stored transposed ([in, out], contiguous): one row times it reads
    the weight row after row (x @ W^T as an axpy sweep) instead of one dot product per output."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight_t, self.bias = linear.weight.detach().t().contiguous(), linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.size(-1))
        out = flat @ self.weight_t if self.bias is None else torch.addmm(self.bias, flat, self.weight_t)
        return out.view(*x.shape[:-1], -1)


def transposed(model: GPT) -> GPT:
    model = copy.deepcopy(model)
    for block in model.blocks:
        for parent, name in ((block.attn, "c_attn"), (block.attn, "c_proj"), (block.mlp, "c_fc"), (block.mlp, "c_proj")):
            setattr(parent, name, TransposedLinear(getattr(parent, name)))
    return model


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    cfg = ModelConfig(**{**load_preset("base")["model"], "dropout": 0.0, "vocab_size": 84})
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    variants = {"float32": model, "float32, transposed weights": transposed(model),
                "bfloat16": copy.deepcopy(model).to(torch.bfloat16), "float32, compiled step": model}
    compiled = compiled_decode_step(model)
    idx = torch.randint(0, cfg.vocab_size, (1, cfg.block_size), generator=torch.Generator().manual_seed(1))
    caches = {}
    for name, m in variants.items():
        caches[name] = KVCache.for_model(m, 1)
        m(idx[:, :200], kv_cache=caches[name])
    steps: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds + 50):  # the first 50 rounds warm up (and compile)
        for name, m in variants.items():
            caches[name].pos = 200  # decode the same position again: no slide, same work every round
            start = time.perf_counter()
            if name.endswith("compiled step"):
                compiled(idx[:, 200:201], caches[name])
            else:
                m(idx[:, 200:201], kv_cache=caches[name])
            if r >= 50:
                steps[name].append(time.perf_counter() - start)
    fulls: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(12):
        for name, m in variants.items():
            start = time.perf_counter()
            m(idx)
            fulls[name].append(time.perf_counter() - start)
    linears = [m for m in model.blocks.modules() if isinstance(m, nn.Linear)]
    rows = {n: torch.randn(1, n) for n in {m.in_features for m in linears}}
    # The step's one-row matrix products alone, every block's weights in turn: ATen's addmm against
    # the same product written as a multiply and a sum, which Inductor compiles into one streaming
    # reduction over the weight (what compiled_decode_step has Inductor do).
    reduction = torch.compile(lambda x, w, b: (x[:, None, :] * w).sum(-1) + b, dynamic=False)
    products: dict[str, list[float]] = {"addmm": [], "compiled multiply-sum": []}
    for r in range(70):
        for kind, fn in (("addmm", F.linear), ("compiled multiply-sum", reduction)):
            start = time.perf_counter()
            for m in linears:
                fn(rows[m.in_features], m.weight, m.bias)
            if r >= 10:
                products[kind].append(time.perf_counter() - start)
    weights = torch.randn(sum(p.numel() for p in model.parameters()))
    reads = []
    for _ in range(30):
        start = time.perf_counter()
        weights.sum()
        reads.append(time.perf_counter() - start)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; base shape, cache at 200")
    print("| variant | decode step (ms) | full 256-token forward (ms) | full / step |")
    print("| --- | ---: | ---: | ---: |")
    for name in variants:
        step, full = statistics.median(steps[name]) * 1e3, statistics.median(fulls[name][2:]) * 1e3
        print(f"| {name} | {step:.2f} | {full:.2f} | {full / step:.1f}x |")
    alone = ", ".join(f"{kind} {statistics.median(t) * 1e3:.2f} ms" for kind, t in products.items())
    print(f"the {len(linears)} one-row float32 products alone: {alone}; "
          f"reading {weights.numel() * 4 / 1e6:.0f} MB of float32 once: {statistics.median(reads) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
