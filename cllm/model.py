"""A decoder-only transformer (GPT): pre-norm blocks, fused causal attention, configurable parts.

Shapes: B = batch, T = time (<= block_size), C = n_embd, H = n_head, D = C / H, V = vocab_size.
The whole batch goes through one ``[B, T]`` forward; attention uses PyTorch's fused
``scaled_dot_product_attention(is_causal=True)``, except when compiled for a CPU, where a written-out
attention and a hashed dropout mask let Inductor fuse the elementwise work (much faster there).
The defaults are GPT-2's choices (LayerNorm, GELU MLP, tied embeddings) with RoPE positions;
ModelConfig switches in learned or fixed positional tables, RMSNorm, QK-norm, ReLU² or SwiGLU,
zero-initialised output projections and logit soft-capping.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import ModelConfig
from .crystalline import position_table


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

    Compiled for CPU with a score tensor of modest size, the attention is written out so Inductor
    fuses scale, mask, softmax and dropout around two batched matmuls; elsewhere SDPA's fused
    kernels run.
    """
    B, H, T, D = q.shape
    if _compiled_for_cpu(q) and B * H * T * T <= EXPLICIT_ATTENTION_MAX_SCORES:
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        weights = F.softmax(scores.float(), dim=-1).to(q.dtype)
        return dropout(weights, dropout_p, dropout_p > 0) @ v
    with sdpa_kernel(attention_backends(q)):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.n_embd)
    return nn.LayerNorm(cfg.n_embd, bias=cfg.bias)


def rotary_tables(n_positions: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE cos and sin, each [n_positions, head_dim / 2]."""
    freqs = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(n_positions, dtype=torch.float64), freqs)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (first half, second half) pair of x: [B, H, T, D] by its position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_embd, self.dropout, self.qk_norm = cfg.n_head, cfg.n_embd, cfg.dropout, cfg.qk_norm
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: [B, T, C] -> [B, T, C]; rotary: RoPE (cos, sin) for positions 0..T-1, or None."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # [B, T, C] -> [B, H, T, D]
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:  # bounds attention logits, which lets higher learning rates stay stable
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        y = causal_attention(q, k, v, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.mlp
        # SwiGLU has three matrices instead of two; 8/3 x width keeps the parameter count equal.
        hidden = 4 * cfg.n_embd if cfg.mlp != "swiglu" else 64 * math.ceil(8 * cfg.n_embd / 3 / 64)
        self.c_fc = nn.Linear(cfg.n_embd, hidden * (2 if cfg.mlp == "swiglu" else 1), bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, C] -> [B, T, C]"""
        h = self.c_fc(x)
        if self.kind == "swiglu":
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rotary=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rotary)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("ModelConfig.vocab_size must be set (from the tokenizer) before building the model")
        self.cfg = cfg
        # Recompute each block's activations in backward instead of storing them: less memory, ~1/3 more compute.
        self.activation_checkpointing = False
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.pos_encoding == "learned":
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        elif cfg.pos_encoding == "rope":
            cos, sin = rotary_tables(cfg.block_size, cfg.n_embd // cfg.n_head)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        elif cfg.pos_encoding != "none":
            # A fixed table, rebuilt from its definition on load, scaled like the learned init.
            table = torch.from_numpy(position_table(cfg.pos_encoding, cfg.block_size, cfg.n_embd)).float()
            self.register_buffer("pos_table", 0.02 * table, persistent=False)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # Residual projections are scaled down (or zeroed) so the residual stream's variance does
        # not grow with depth; zeroed, each block starts as the identity.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if cfg.zero_init_proj:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.embedding_init == "crystalline":
            from .crystalline import token_embedding_init

            with torch.no_grad():
                self.wte.weight.copy_(torch.from_numpy(token_embedding_init(cfg.vocab_size, cfg.n_embd, std=0.02)))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non_embedding leaves out the position table (the tied token table counts as the head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding and hasattr(self, "wpe") else n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx: [B, T] token ids; targets: [B, T] or None.

        Returns (logits [B, T, V], mean cross-entropy loss or None).
        """
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.cfg.block_size}")
        x = self.wte(idx)
        rotary = None
        if self.cfg.pos_encoding == "learned":
            x = x + self.wpe(torch.arange(T, device=idx.device))
        elif self.cfg.pos_encoding == "rope":
            rotary = (self.rope_cos[:T], self.rope_sin[:T])
        elif self.cfg.pos_encoding != "none":
            x = x + self.pos_table[:T]
        x = self.drop(x)
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, rotary, use_reentrant=False)
            else:
                x = block(x, rotary)
        logits = self.lm_head(self.ln_f(x))
        if self.cfg.logit_softcap > 0:  # smoothly bounds logits to (-cap, cap)
            logits = self.cfg.logit_softcap * torch.tanh(logits / self.cfg.logit_softcap)
        loss = None
        if targets is not None:
            # Reduced-precision logits are upcast so the softmax is computed in at least float32.
            logits32 = logits.to(torch.promote_types(logits.dtype, torch.float32))
            loss = F.cross_entropy(logits32.view(B * T, -1), targets.reshape(B * T))
        return logits, loss
