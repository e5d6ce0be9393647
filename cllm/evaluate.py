"""Scoring a trained model on any text: mean loss, perplexity and bits per byte."""

from __future__ import annotations

import math

import torch

from .model import GPT
from .tokenizers import Tokenizer


@torch.no_grad()
def score_text(model: GPT, tokenizer: Tokenizer, text: str, batch_size: int = 32) -> dict:
    """Mean next-token loss over every token of ``text`` after the first.

    The text is cut into consecutive windows of block_size + 1 tokens that overlap by one, so each
    token is predicted exactly once, from the start of its window. Returns loss (nats/token),
    perplexity, bits_per_byte (total bits / UTF-8 bytes) and the counts they come from.
    """
    ids = torch.as_tensor(tokenizer.encode(text), dtype=torch.long)
    block = model.cfg.block_size
    device = next(model.parameters()).device
    total_nats, n_pred = 0.0, 0
    starts = list(range(0, max(len(ids) - 1, 0), block))
    for i in range(0, len(starts), batch_size):
        chunk = starts[i:i + batch_size]
        if all(len(ids) - 1 - s >= block for s in chunk):
            x = torch.stack([ids[s:s + block] for s in chunk]).to(device)
            y = torch.stack([ids[s + 1:s + block + 1] for s in chunk]).to(device)
            logits, _ = model(x)
            nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
            total_nats += nll.item()
            n_pred += y.numel()
        else:  # the ragged last window, on its own
            for s in chunk:
                length = min(block, len(ids) - 1 - s)
                x, y = ids[None, s:s + length].to(device), ids[None, s + 1:s + length + 1].to(device)
                logits, _ = model(x)
                total_nats += torch.nn.functional.cross_entropy(logits.float()[0], y[0], reduction="sum").item()
                n_pred += length
    n_bytes = len(text.encode("utf-8"))
    loss = total_nats / max(n_pred, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": total_nats / math.log(2) / max(n_bytes, 1),
        "tokens": n_pred,
        "bytes": n_bytes,
    }
