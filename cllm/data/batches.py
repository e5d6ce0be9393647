"""Random ``[B, T]`` training windows drawn across the token shards of one split."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import CLLMError


class Batches:
    """Random ``[batch_size, block_size]`` windows of one split, drawn by a seeded numpy generator.

    ``tokens`` is one token array or a list of shards (arrays or memmaps). A window never crosses a
    shard boundary; each of the ``len(shard) - block_size`` start positions of every shard is equally
    likely, so shards are sampled in proportion to their size. With one shard the draws are exactly
    those of a single array. ``get()`` returns ``(x, y)`` int64 tensors of shape ``[B, T]`` with
    ``y`` = ``x`` shifted by one. ``state()`` is JSON-serialisable and restores the exact sequence.
    """

    def __init__(self, tokens, batch_size: int, block_size: int, seed: int, device="cpu"):
        shards = [tokens] if isinstance(tokens, np.ndarray) else list(tokens)
        windows = np.array([max(0, len(s) - block_size) for s in shards], dtype=np.int64)
        if not len(shards) or windows.sum() <= 0:
            n = max((len(s) for s in shards), default=0)
            what = f"{n} tokens" if len(shards) <= 1 else f"no shard with more than {n} tokens"
            raise CLLMError(f"split has {what}, fewer than block_size + 1 = {block_size + 1}")
        self.shards = shards
        self.tokens = shards[0] if len(shards) == 1 else None
        self._cum = np.cumsum(windows)
        self._total = int(self._cum[-1])
        self._first = self._cum - windows  # global index of each shard's first start position
        self.batch_size, self.block_size = batch_size, block_size
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.device = torch.device(device)
        self._offsets = np.arange(block_size + 1)

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self.rng.integers(0, self._total, size=self.batch_size)
        if self.tokens is not None:
            rows = self.tokens[starts[:, None] + self._offsets]
        else:
            which = np.searchsorted(self._cum, starts, side="right")
            local = starts - self._first[which]
            n = self.block_size + 1
            rows = np.stack([self.shards[w][s : s + n] for w, s in zip(which.tolist(), local.tolist())])
        window = torch.from_numpy(rows.astype(np.int64))
        if self.device.type == "cuda":
            window = window.pin_memory().to(self.device, non_blocking=True)
        return window[:, :-1], window[:, 1:]

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
