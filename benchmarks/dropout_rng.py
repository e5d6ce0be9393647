"""Cost of dropout's random masks on CPU: F.dropout, cheaper draws, Inductor's RNG and the hashed mask.

    python benchmarks/dropout_rng.py

Eager rows draw a mask the usual ways; compiled rows time `torch.compile`d functions: F.dropout
(Inductor's in-kernel RNG), cllm's hashed dropout, and the same hashed mask returned as a bool
tensor versus bf16 (Inductor's CPU code stores bool tensors slowly, which is why the model builds
its mask by integer arithmetic; docs/BENCHMARKS.md).
"""

import torch
import torch.nn.functional as F

from cllm.kernels import _mix32, hashed_dropout, hashed_keep

from common import median_seconds


def ms(fn, reps=20):
    return median_seconds(fn, reps, warmup=3) * 1000


def bool_keep(shape, p, key):
    """cllm's hashed keep-mask written as a comparison: a bool tensor (the first version)."""
    index = torch.arange(shape.numel(), dtype=torch.int32, device=key.device).view(shape)
    return _mix32(_mix32(index) ^ key) >= int(p * 2**32) - 2**31


if __name__ == "__main__":
    x = torch.randn(8 * 256, 384, dtype=torch.bfloat16)  # one base-preset activation
    print("eager, one [2048, 384] bf16 activation")
    print(f"  F.dropout (bf16)          {ms(lambda: F.dropout(x, 0.2, True)):6.2f} ms")
    print(f"  F.dropout (float32)       {ms(lambda: F.dropout(x.float(), 0.2, True)):6.2f} ms")
    print(f"  bool bernoulli_ mask      {ms(lambda: torch.empty_like(x, dtype=torch.bool).bernoulli_(0.8)):6.2f} ms")
    print(f"  bf16 rand < p mask        {ms(lambda: torch.rand(x.shape, dtype=torch.bfloat16) < 0.8):6.2f} ms")
    print(f"  uint8 randint < t mask    {ms(lambda: torch.randint(0, 256, x.shape, dtype=torch.uint8) < 205):6.2f} ms")
    scores = torch.randn(8, 6, 256, 256, dtype=torch.bfloat16)  # one base-preset layer's attention weights
    key = torch.tensor([12345], dtype=torch.int32)
    inductor = torch.compile(lambda t: F.dropout(t, 0.2, True))
    hashed = torch.compile(lambda t: hashed_dropout(t, 0.2))
    as_bool = torch.compile(lambda k: bool_keep(scores.shape, 0.2, k))
    as_bf16 = torch.compile(lambda k: hashed_keep(scores.shape, 0.2, k).to(torch.bfloat16))
    for name, t in (("[2048, 384]", x), ("[8, 6, 256, 256]", scores)):
        print(f"compiled, {name} bf16")
        print(f"  F.dropout (Inductor RNG)  {ms(lambda: inductor(t)):6.2f} ms")
        print(f"  hashed dropout            {ms(lambda: hashed(t)):6.2f} ms")
    print("compiled, the [8, 6, 256, 256] hashed mask as an output")
    print(f"  bool                      {ms(lambda: as_bool(key)):6.2f} ms")
    print(f"  bf16                      {ms(lambda: as_bf16(key)):6.2f} ms")
