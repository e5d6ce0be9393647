"""A preallocated key/value cache, so each generated token costs one position's forward pass.

Shapes: L = layers, B = batch rows, H = heads, S = the cache's length (<= block_size), D = head
size, T = positions fed in one forward. ``GPT.forward(idx, kv_cache=cache)`` feeds ``idx`` [B, T]
at cache columns ``pos .. pos + T - 1``: a prefill writes the whole prompt at once, then each
decode step writes one column. Rows may be left-padded (prompts of different lengths in one
batch): row b's first ``pad[b]`` columns hold padding, its real positions start at 0 after them,
and no real query ever attends to a padding key.

``KVCache.fixed_step()`` is the same cache as a compiled one-token decode step sees it: the new
column's position is a tensor and attention runs over every column (those not filled yet masked),
so every step has the same shapes and one graph serves all positions.
"""

from __future__ import annotations

import torch


def positions_and_mask(cols: torch.Tensor, keys: torch.Tensor, pad: torch.Tensor | None,
                       batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions of the cache columns fed, cols: long [T], and their attention mask over the
    cache columns keys: long [Tk], for rows left-padded by pad: long [B] (or None): (positions long
    [B, T], mask bool [B or 1, 1, T, Tk]) as KVCache.begin describes them."""
    causal = keys[None, :] <= cols[:, None]  # [T, Tk]
    if pad is None:
        return cols.expand(batch, cols.size(0)), causal[None, None]
    positions = (cols[None, :] - pad[:, None]).clamp(min=0)
    real_key = keys[None, :] >= pad[:, None]  # [B, Tk]
    itself = keys[None, :] == cols[:, None]  # [T, Tk]
    return positions, (causal[None] & (real_key[:, None, :] | itself[None]))[:, None]


class LayerCache:
    """One layer's view of a KVCache: what the attention module sees."""

    def __init__(self, cache: "KVCache | FixedShapeStep", layer: int):
        self.cache, self.layer = cache, layer

    def update(self, k: torch.Tensor, v: torch.Tensor):
        """Store this step's k, v: [B, H, T, D]; return every key and value so far, [B, H, pos + T, D],
        and the attention mask for the step (see ``KVCache.begin``)."""
        return self.cache.update(self.layer, k, v)


class KVCache:
    def __init__(self, n_layer: int, batch: int, n_head: int, head_dim: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        # Allocated once for the whole generation; reset() reuses the memory, and nothing beyond
        # ``pos`` is ever read (or it is masked), so stale entries need no clearing. One tensor per
        # layer rather than views of one: a compiled step writing into a view of a shared tensor
        # makes Inductor copy all of it.
        shape = (batch, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.max_len, self.batch = max_len, batch
        self.layers = [LayerCache(self, i) for i in range(n_layer)]
        self.pos = 0  # columns filled, the same for every row
        self.pad: torch.Tensor | None = None  # [B] left-padding columns per row, None for none
        self._step = 0
        self._mask: torch.Tensor | None = None
        self._fixed: FixedShapeStep | None = None

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
        device = self.k[0].device
        cols = torch.arange(self.pos, self.pos + T, device=device)
        if self.pad is None and T == 1:  # the usual decode step: no mask to build
            positions, mask = cols.expand(self.batch, 1), None
        else:
            positions, mask = positions_and_mask(cols, torch.arange(self.pos + T, device=device), self.pad, self.batch)
        self._step, self._mask = T, mask
        return positions

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        end = self.pos + self._step
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end], self._mask

    def advance(self) -> None:
        """Called once every layer has stored the step begun by ``begin``."""
        self.pos += self._step

    def fixed_step(self) -> "FixedShapeStep":
        """This cache seen through fixed shapes for the next one-token step (see FixedShapeStep)."""
        if self.pos >= self.max_len:
            raise ValueError(f"KV cache full ({self.max_len} positions); slide the window (re-prefill) first")
        if self._fixed is None:
            self._fixed = FixedShapeStep(self)
        self._fixed.position.fill_(self.pos)
        return self._fixed


class FixedShapeStep:
    """A KVCache for one decode step whose shapes and Python values never change, so that
    ``torch.compile`` traces one graph for every position: the new column's position is a tensor
    (``position``, long [1]), keys and values are written there in place, and attention runs over
    all max_len columns with a mask, bool [B or 1, 1, 1, max_len], hiding columns after the new one
    and left padding. The model calls ``advance``, which does nothing here: the Python-side count
    moves on in ``finish``, outside the compiled graph.
    """

    def __init__(self, cache: KVCache):
        self.cache = cache
        self.position = torch.zeros(1, dtype=torch.long, device=cache.k[0].device)
        self.columns = torch.arange(cache.max_len, device=cache.k[0].device)
        self.layers = [LayerCache(self, i) for i in range(len(cache.k))]
        self._mask: torch.Tensor | None = None

    def begin(self, T: int) -> torch.Tensor:
        """Positions of the one new column, long [B, 1]; see KVCache.begin."""
        if T != 1:
            raise ValueError(f"a fixed-shape step feeds one position, got {T}")
        positions, self._mask = positions_and_mask(self.position, self.columns, self.cache.pad, self.cache.batch)
        return positions

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v: [B, H, 1, D] at ``position``; return the whole cache, [B, H, max_len, D], and the mask."""
        self.cache.k[layer].index_copy_(2, self.position, k)
        self.cache.v[layer].index_copy_(2, self.position, v)
        return self.cache.k[layer], self.cache.v[layer], self._mask

    def advance(self) -> None:
        pass

    def finish(self) -> None:
        """Called after the step has run: the cache now holds one more column."""
        self.cache.pos += 1
