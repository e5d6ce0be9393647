"""CPU attention kernels: SDPA's flash kernel vs its math kernel, forward + backward, causal.

    python benchmarks/sdpa_kernels.py

Why cllm's model picks the math kernel for head sizes below 64 on CPU (cllm/kernels.py).
"""

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import median_seconds


def fwd_bwd_ms(B, H, T, D, dtype, backend, reps=15):
    q, k, v = (torch.randn(B, H, T, D, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(B, H, T, D, dtype=dtype)

    def run():
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)

    return median_seconds(run, reps, warmup=3) * 1000


if __name__ == "__main__":
    for shape in [(12, 4, 64, 32), (8, 6, 256, 64), (20, 8, 128, 32)]:
        for dtype in (torch.float32, torch.bfloat16):
            flash = fwd_bwd_ms(*shape, dtype, SDPBackend.FLASH_ATTENTION)
            math_ = fwd_bwd_ms(*shape, dtype, SDPBackend.MATH)
            print(f"B,H,T,D={shape} {str(dtype):15} flash {flash:7.2f} ms  math {math_:7.2f} ms  "
                  f"flash/math {flash / math_:.2f}")
