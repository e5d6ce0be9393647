"""A decoder-only transformer (GPT): pre-norm blocks, fused causal attention, configurable parts.

Shapes: B = batch, T = time (<= block_size), C = n_embd, H = n_head, D = C / H, V = vocab_size.
The whole batch goes through one ``[B, T]`` forward; attention and dropout come from
``cllm.kernels`` (fused SDPA, or written-out ops Inductor fuses when compiled for a CPU).
Generation passes a KV cache (``cllm.inference``): the forward then continues what the cache
holds, so each new token costs one position; without one (training, eval) nothing changes.
Compilation and activation checkpointing are applied from outside (``cllm.runtime``).
The defaults are GPT-2's choices (LayerNorm, GELU MLP, tied embeddings) with RoPE positions;
ModelConfig switches in learned or fixed positional tables, RMSNorm, QK-norm, ReLU² or SwiGLU,
zero-initialised output projections and logit soft-capping.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .crystalline import position_table
from .kernels import Dropout, cached_attention, causal_attention


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

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
                kv=None) -> torch.Tensor:
        """x: [B, T, C] -> [B, T, C]; rotary: RoPE (cos, sin) for x's positions, or None.

        kv: None (training, eval: T positions from 0, causal) or a ``cllm.inference.LayerCache``
        that stores this step's keys and values and returns all earlier ones to attend over.
        """
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # [B, T, C] -> [B, H, T, D]
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:  # bounds attention logits, which lets higher learning rates stay stable
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if kv is None:
            y = causal_attention(q, k, v, self.dropout if self.training else 0.0)
        else:
            k, v, mask = kv.update(k, v)
            y = cached_attention(q, k, v, mask)
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

    def forward(self, x: torch.Tensor, rotary=None, kv=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rotary, kv)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("ModelConfig.vocab_size must be set (from the tokenizer) before building the model")
        self.cfg = cfg
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

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache=None):
        """idx: [B, T] token ids; targets: [B, T] or None.

        kv_cache: None, or a ``cllm.inference.KVCache``: idx then continues what the cache holds,
        at per-row positions the cache supplies (offset by what it holds, less left padding), and
        its keys and values are stored there (generation; see cllm/inference/generate.py).
        Returns (logits [B, T, V], mean cross-entropy loss or None).
        """
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.cfg.block_size}")
        x = self.wte(idx)
        rotary = None
        if kv_cache is None:  # positions 0..T-1 for every row
            if self.cfg.pos_encoding == "learned":
                x = x + self.wpe(torch.arange(T, device=idx.device))
            elif self.cfg.pos_encoding == "rope":
                rotary = (self.rope_cos[:T], self.rope_sin[:T])
            elif self.cfg.pos_encoding != "none":
                x = x + self.pos_table[:T]
        else:  # each row's own positions, [B, T]
            pos = kv_cache.begin(T)
            if self.cfg.pos_encoding == "learned":
                x = x + self.wpe(pos)
            elif self.cfg.pos_encoding == "rope":  # [B, T, D/2] -> [B, 1, T, D/2], broadcast over heads
                rotary = (self.rope_cos[pos][:, None], self.rope_sin[pos][:, None])
            elif self.cfg.pos_encoding != "none":
                x = x + self.pos_table[pos]
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, rotary) if kv_cache is None else block(x, rotary, kv_cache.layers[i])
        if kv_cache is not None:
            kv_cache.advance()
        logits = self.lm_head(self.ln_f(x))
        if self.cfg.logit_softcap > 0:  # smoothly bounds logits to (-cap, cap)
            logits = self.cfg.logit_softcap * torch.tanh(logits / self.cfg.logit_softcap)
        loss = None
        if targets is not None:
            # Reduced-precision logits are upcast so the softmax is computed in at least float32.
            logits32 = logits.to(torch.promote_types(logits.dtype, torch.float32))
            loss = F.cross_entropy(logits32.view(B * T, -1), targets.reshape(B * T))
        return logits, loss
