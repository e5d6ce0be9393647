"""Cost of dropout's random masks on CPU: F.dropout vs cheaper ways to draw a keep-mask.

    python benchmarks/dropout_rng.py

Dropout is what keeps the `base` preset (dropout 0.2) below 2x over float32 eager (docs/BENCHMARKS.md).
"""

import torch
import torch.nn.functional as F

from common import median_seconds


def ms(fn, reps=20):
    return median_seconds(fn, reps, warmup=3) * 1000


if __name__ == "__main__":
    x = torch.randn(8 * 256, 384, dtype=torch.bfloat16)  # one base-preset activation
    print(f"F.dropout (bf16)          {ms(lambda: F.dropout(x, 0.2, True)):6.2f} ms")
    print(f"F.dropout (float32)       {ms(lambda: F.dropout(x.float(), 0.2, True)):6.2f} ms")
    print(f"bool bernoulli_ mask      {ms(lambda: torch.empty_like(x, dtype=torch.bool).bernoulli_(0.8)):6.2f} ms")
    print(f"bf16 rand < p mask        {ms(lambda: torch.rand(x.shape, dtype=torch.bfloat16) < 0.8):6.2f} ms")
    print(f"uint8 randint < t mask    {ms(lambda: torch.randint(0, 256, x.shape, dtype=torch.uint8) < 205):6.2f} ms")
