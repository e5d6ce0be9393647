"""Scoring a model on a whole token sequence or text: mean loss, perplexity and bits per byte."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from .model import GPT
from .tokenizers import Tokenizer


@torch.no_grad()
def score_ids(model: GPT, ids, batch_size: int = 64, autocast=contextlib.nullcontext) -> tuple[float, int]:
    """Total next-token loss (nats) over ``ids`` [N], and the number of tokens predicted (N - 1).

    The sequence is cut into consecutive windows of block_size + 1 tokens that overlap by one, so
    every token after the first is predicted exactly once, from the start of its window.
    """
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    block = model.cfg.block_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_full = (len(ids) - 1) // block
    total = 0.0
    for first in range(0, n_full, batch_size):
        starts = torch.arange(first, min(first + batch_size, n_full)) * block
        window = ids[starts[:, None] + torch.arange(block + 1)].to(device)
        with autocast():
            logits, _ = model(window[:, :-1])
        total += F.cross_entropy(logits.float().flatten(0, 1), window[:, 1:].flatten(), reduction="sum").item()
    rest = ids[n_full * block:]
    if len(rest) > 1:  # the ragged last window
        with autocast():
            logits, _ = model(rest[None, :-1].to(device))
        total += F.cross_entropy(logits.float()[0], rest[1:].to(device), reduction="sum").item()
    model.train(was_training)
    return total, max(len(ids) - 1, 0)


def score_text(model: GPT, tokenizer: Tokenizer, text: str, batch_size: int = 64) -> dict:
    """Mean loss (nats/token), perplexity, and bits per byte (total bits / UTF-8 bytes) of ``text``."""
    total, n_pred = score_ids(model, tokenizer.encode(text), batch_size)
    n_bytes = len(text.encode("utf-8"))
    loss = total / max(n_pred, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": total / math.log(2) / max(n_bytes, 1),
        "tokens": n_pred,
        "bytes": n_bytes,
    }
