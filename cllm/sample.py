"""Text generation from a trained model: temperature, top-k and nucleus (top-p) sampling."""

from __future__ import annotations

import torch

from .errors import CLLMError
from .model import GPT
from .tokenizers import Tokenizer


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """logits: [B, V] -> [B, V] with everything outside the top-k / the top-p nucleus set to -inf."""
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already reach top_p; the first always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """idx: [B, T0] prompt ids -> [B, T0 + n] with n <= max_new_tokens (stops early if all rows hit EOS).

    temperature 0 means greedy decoding. The context is cropped to the model's block_size.
    """
    block = model.cfg.block_size
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block:])
        logits = logits[:, -1, :].float()
        if temperature == 0:
            next_id = logits.argmax(-1, keepdim=True)
        else:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
            next_id = torch.multinomial(probs, 1, generator=generator)
        if eos_id is not None:
            next_id = next_id.masked_fill(finished[:, None], eos_id)
            finished |= next_id[:, 0] == eos_id
        idx = torch.cat([idx, next_id], dim=1)
        if eos_id is not None and finished.all():
            break
    return idx


def sample_text(
    model: GPT, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, temperature: float = 0.8,
    top_k: int = 0, top_p: float = 1.0, seed: int = 0,
) -> str:
    """Prompt text -> prompt + generated continuation, reproducible for a given seed."""
    if temperature < 0 or not 0.0 < top_p <= 1.0 or top_k < 0 or max_new_tokens < 0:
        raise CLLMError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0 and max_new_tokens >= 0")
    ids = tokenizer.encode(prompt) if prompt else None
    if ids is None or len(ids) == 0:
        ids = [tokenizer.bos_id if tokenizer.bos_id is not None else 0]
    device = next(model.parameters()).device
    idx = torch.as_tensor(ids, dtype=torch.long, device=device)[None, :]
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, idx, max_new_tokens, temperature, top_k, top_p, tokenizer.eos_id, generator)
    return tokenizer.decode(out[0].tolist())
