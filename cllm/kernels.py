"""Attention and dropout kernels, chosen by where the model runs.

Eagerly and on GPUs, attention is PyTorch's fused ``scaled_dot_product_attention`` and dropout is
``F.dropout``. Compiled for a CPU, both are written out so Inductor can fuse them: attention as
plain matmul / mask / softmax ops, and dropout as a keyed integer hash instead of a random draw per
element (docs/BENCHMARKS.md has the measurements). The model calls ``causal_attention`` and
``Dropout`` and never needs to know which path runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def attention_backends(q: torch.Tensor) -> list[SDPBackend]:
    """Which fused-attention kernels SDPA may use for q: [B, H, T, D].

    On CPU, PyTorch's flash kernel is slower than its math kernel for head sizes below 64
    (measured: backward 2.5x slower in bfloat16 at D=32; docs/BENCHMARKS.md), so small heads use
    the math kernel there. Everywhere else SDPA picks its fastest available kernel.
    """
    if q.device.type == "cpu" and q.size(-1) < 64:
        return [SDPBackend.MATH]
    return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (xor-shift / multiply rounds) on int32, multiplies wrapping."""
    for _ in range(2):
        h = h ^ ((h >> 16) & 0xFFFF)  # logical shift on a signed type
        h = h * 0x45D9F3B
    return h ^ ((h >> 16) & 0xFFFF)


def hashed_keep(shape: torch.Size, p: float, key: torch.Tensor) -> torch.Tensor:
    """int32 [*shape] of 0 and 1, each 1 with probability 1 - p (to 2^-24): a keyed hash of its index.

    key: int32 [1]. Element i draws the top 24 bits of mix(mix(i) ^ key); nothing here draws
    random numbers, so the same (shape, key) gives the same mask eagerly and compiled. The mask is
    integer arithmetic, not a comparison: Inductor's CPU code stores and loads bool tensors
    element by element (a saved bool mask cost more than the whole hash), int32 it vectorises.
    """
    index = torch.arange(math.prod(shape), dtype=torch.int32, device=key.device).view(shape)
    uniform24 = (_mix32(_mix32(index) ^ key) >> 8) & 0xFFFFFF
    return ((uniform24 - round(p * 2**24)) >> 31) + 1  # sign bit: 0 below the threshold, 1 above


def hashed_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout of x with a hashed keep-mask and one random key per call.

    The key comes from torch's generator, so runs stay seeded and resume exactly. Compiled for CPU
    the mask is a few vectorised integer ops fused into the neighbouring kernel, where drawing a
    random number per element costs more than the attention matmuls (docs/BENCHMARKS.md).
    """
    key = torch.randint(-(2**31), 2**31 - 1, (1,), dtype=torch.int32, device=x.device)
    return x * (hashed_keep(x.shape, p, key).to(x.dtype) * (1.0 / (1.0 - p)))


def _compiled_for_cpu(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and torch.compiler.is_compiling()


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, with the hashed mask when compiled for CPU (where per-element RNG is the bottleneck)."""
    if training and 0.0 < p < 1.0 and _compiled_for_cpu(x) and x.numel() < 2**31:
        return hashed_dropout(x, p)
    return F.dropout(x, p, training)


class Dropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


# Scores materialised by the written-out CPU attention: 2^24 floats = 64 MiB per layer at most.
EXPLICIT_ATTENTION_MAX_SCORES = 2**24


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Causal softmax attention, q, k, v: [B, H, T, D] -> [B, H, T, D].

    On a CPU, with a score tensor of modest size, the attention is written out: compiled, so Inductor
    fuses scale, mask, softmax and dropout around two batched matmuls; eagerly, as a ``baddbmm``
    that adds the causal mask while scaling, a float32 softmax and a ``bmm``, which measured faster
    than SDPA's kernels in bfloat16 and for small heads (``benchmarks/sdpa_kernels.py``). Elsewhere
    (GPUs, long contexts, float32 with heads of 64 and more) SDPA's fused kernels run.
    """
    B, H, T, D = q.shape
    if q.device.type == "cpu" and B * H * T * T <= EXPLICIT_ATTENTION_MAX_SCORES:
        if torch.compiler.is_compiling():
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
            causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
            weights = F.softmax(scores.float(), dim=-1).to(q.dtype)
            return dropout(weights, dropout_p, dropout_p > 0) @ v
        if q.dtype != torch.float32 or D < 64:  # float32 with large heads: SDPA's flash kernel is as fast
            return _eager_cpu_attention(q, k, v, dropout_p)
    with sdpa_kernel(attention_backends(q)):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)


def _eager_cpu_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """The written-out causal attention in few eager kernels: SDPA's CPU math kernel adds a
    safe-softmax pass (an ``all`` over every row) and its flash kernel's backward is slow for small
    heads. Scores and softmax are float32 whatever the inputs (scores rounded to bfloat16 made the
    output 4-9x less accurate than SDPA's), the weights meet ``v`` in the inputs' dtype."""
    B, H, T, D = q.shape
    exact = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast("cpu", enabled=False):  # autocast would run the score product in bfloat16
        q, k = (t.reshape(B * H, T, D).to(exact) for t in (q, k))
        mask = torch.full((T, T), float("-inf"), dtype=exact, device=q.device).triu_(1)
        scores = torch.baddbmm(mask.expand(B * H, T, T), q, k.transpose(1, 2), alpha=1.0 / math.sqrt(D))
        weights = F.softmax(scores, dim=-1).to(v.dtype)
        if dropout_p > 0:
            weights = F.dropout(weights, dropout_p, True)
        return torch.bmm(weights, v.reshape(B * H, T, D)).view(B, H, T, D)


def cached_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of the newest Tq positions over all Tk cached ones (generation; no dropout).

    q: [B, H, Tq, D], k, v: [B, H, Tk, D] with Tq <= Tk, queries being the last Tq key positions;
    mask: bool [B or 1, 1, Tq, Tk], True where a query may attend, or None when every query sees
    every key (one new token, no padding) -> [B, H, Tq, D]. ``is_causal=True`` cannot be used here:
    SDPA aligns its causal mask to the top-left corner, which is wrong whenever Tq < Tk.
    """
    with sdpa_kernel(attention_backends(q)):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
