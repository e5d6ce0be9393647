"""A preallocated key/value cache, so each generated token costs one position's forward pass.

Shapes: L = layers, B = batch rows, H = heads, S = the cache's length (<= block_size), D = head
size, T = positions fed in one forward. ``GPT.forward(idx, kv_cache=cache)`` feeds ``idx`` [B, T]
at cache columns ``pos .. pos + T - 1``: a prefill writes the whole prompt at once, then each
decode step writes one column. Rows may be left-padded (prompts of different lengths in one
batch): row b's first ``pad[b]`` columns hold padding, its real positions start at 0 after them,
and no real query ever attends to a padding key.
"""

from __future__ import annotations

import torch


class LayerCache:
    """One layer's view of a KVCache: what the attention module sees."""

    def __init__(self, cache: "KVCache", layer: int):
        self.cache, self.layer = cache, layer

    def update(self, k: torch.Tensor, v: torch.Tensor):
        """Store this step's k, v: [B, H, T, D]; return every key and value so far, [B, H, pos + T, D],
        and the attention mask for the step (see ``KVCache.begin``)."""
        return self.cache.update(self.layer, k, v)


class KVCache:
    def __init__(self, n_layer: int, batch: int, n_head: int, head_dim: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        # Allocated once for the whole generation; reset() reuses the memory, and nothing beyond
        # ``pos`` is ever read, so stale entries need no clearing.
        self.k = torch.zeros(n_layer, batch, n_head, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.max_len, self.batch = max_len, batch
        self.layers = [LayerCache(self, i) for i in range(n_layer)]
        self.pos = 0  # columns filled, the same for every row
        self.pad: torch.Tensor | None = None  # [B] left-padding columns per row, None for none
        self._step = 0
        self._mask: torch.Tensor | None = None

    @classmethod
    def for_model(cls, model, batch: int, max_len: int | None = None) -> "KVCache":
        """A cache for ``model`` holding ``max_len`` positions (at most, and by default, block_size)."""
        cfg = model.cfg
        max_len = cfg.block_size if max_len is None else min(max_len, cfg.block_size)
        p = next(model.parameters())
        return cls(cfg.n_layer, batch, cfg.n_head, cfg.n_embd // cfg.n_head, max_len, p.device, p.dtype)

    def reset(self, pad: torch.Tensor | None = None) -> None:
        """Empty the cache for a new prefill; pad: [B] left-padding columns of the next prefill."""
        self.pos = 0
        self.pad = pad if pad is not None and bool((pad > 0).any()) else None

    def begin(self, T: int) -> torch.Tensor:
        """Prepare a forward of T new columns; returns their positions, long [B, T].

        Also builds the step's attention mask, bool [B or 1, 1, T, pos + T] (True = may attend):
        query column c sees key columns <= c (causal, offset by the cache position) that are not
        padding. A padding query sees only itself, so its softmax row is never empty (no NaN); its
        output is never read. One new column without padding sees every key: no mask at all.
        """
        if self.pos + T > self.max_len:
            raise ValueError(f"KV cache overflow: {self.pos} + {T} positions > {self.max_len}; "
                             "slide the window (re-prefill) first")
        device = self.k.device
        cols = torch.arange(self.pos, self.pos + T, device=device)
        keys = torch.arange(self.pos + T, device=device)
        mask = None
        if self.pad is None:
            positions = cols.expand(self.batch, T)
            if T > 1:
                mask = (keys[None, :] <= cols[:, None])[None, None]
        else:
            positions = (cols[None, :] - self.pad[:, None]).clamp(min=0)
            causal = keys[None, :] <= cols[:, None]  # [T, Tk]
            real_key = keys[None, :] >= self.pad[:, None]  # [B, Tk]
            itself = keys[None, :] == cols[:, None]  # [T, Tk]
            mask = (causal[None] & (real_key[:, None, :] | itself[None]))[:, None]
        self._step, self._mask = T, mask
        return positions

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        end = self.pos + self._step
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end], self._mask

    def advance(self) -> None:
        """Called once every layer has stored the step begun by ``begin``."""
        self.pos += self._step
