"""Sampling from a trained model: a KV-cached decode loop over a batch of (left-padded) prompts.

One prefill pass runs the prompt(s) through the model and fills the cache; each further token is
one position's forward pass over the cache. Sampling is temperature / top-k / top-p (temperature
0: greedy) with an optional repetition penalty, per-row EOS, and stop strings at the text level.

Past block_size (a sliding window): the model has no positions beyond block_size, so when a new
token no longer fits in the cache, the cache is emptied and refilled (one prefill) with the most
recent ``window_keep`` tokens (default 3/4 of block_size), and generation goes on at positions
from there. The context a token sees therefore shrinks to window_keep tokens at each slide and
grows back to block_size; ``window_keep = block_size`` re-prefills the last block_size tokens at
every step, which is exactly what the uncached loop computes (and costs what it costs). In a
left-padded batch all rows slide together, when the widest row fills the window, so past
block_size a padded row's tokens can differ from running that prompt alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from ..errors import CLLMError
from ..runtime import torch_compile
from ..tokenizers import Tokenizer
from ..tokenizers.base import PAD_ID
from .kv_cache import KVCache
from .stream import StreamDecoder

Generators = torch.Generator | Sequence[torch.Generator] | None


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


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al., 2019): logits [B, V] of the tokens already in a
    row's context (seen: bool [B, V]) are divided by ``penalty`` if positive, multiplied if negative,
    so penalty > 1 makes every repeat less likely whatever the sign of its logit."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                generator: Generators) -> torch.Tensor:
    """logits: float [B, V] -> chosen ids, long [B]. A list of generators draws row b from the b-th,
    so each row of a batch samples exactly what it would alone with that generator."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
    if isinstance(generator, (list, tuple)):
        return torch.cat([torch.multinomial(probs[b:b + 1], 1, generator=g)[0] for b, g in enumerate(generator)])
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = PAD_ID,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths -> (ids long [B, T] right-aligned, pad long [B] columns of padding)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    T = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    for b, p in enumerate(prompts):
        idx[b, T - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
    pad = torch.tensor([T - len(p) for p in prompts], dtype=torch.long)
    return idx.to(device), pad.to(device)


@dataclass
class Step:
    ids: torch.Tensor  # long [B]: the token chosen for each row (EOS or padding once a row is done)
    logits: torch.Tensor  # float32 [B, V]: the model's logits it was drawn from (before penalty, temperature)


@torch.no_grad()
def decode_steps(
    model, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int = 0,
    top_p: float = 1.0, repetition_penalty: float = 1.0, eos_id: int | None = None,
    generator: Generators = None, pad: torch.Tensor | None = None, done: torch.Tensor | None = None,
    use_cache: bool = True, window_keep: int | None = None, step_fn: Callable | None = None,
) -> Iterator[Step]:
    """Yield one Step per generated position, for idx: long [B, T0] prompts (left-padded by
    ``pad``: long [B], see ``left_pad``).

    done: bool [B], rows that are finished; the loop sets it for rows that emit ``eos_id`` and the
    caller may set it between steps (stop strings). Finished rows get ``eos_id`` (or <pad>) from
    then on; the loop ends when all rows are done. use_cache=False recomputes the last block_size
    tokens at every step (the reference; equal-length prompts only). step_fn(ids [B, 1], cache)
    -> logits [B, 1, V] replaces the one-token decode forward (e.g. a compiled one).
    """
    B, T0 = idx.shape
    block = model.cfg.block_size
    if not use_cache and pad is not None and bool((pad > 0).any()):
        raise ValueError("uncached generation needs prompts of equal length (no padding)")
    size = min(block, T0 + max_new_tokens)  # the cache never holds more than the run can need
    keep = block - block // 4 if window_keep is None else window_keep
    if not 1 <= keep <= block:
        raise ValueError(f"window_keep must be in 1..{block} (block_size), got {keep}")
    keep = min(keep, size)
    out = torch.empty(B, T0 + max_new_tokens, dtype=torch.long, device=idx.device)
    out[:, :T0] = idx
    n = T0  # columns of out filled
    done = torch.zeros(B, dtype=torch.bool, device=idx.device) if done is None else done
    filler = eos_id if eos_id is not None else PAD_ID
    seen = None
    if repetition_penalty != 1.0:  # which tokens each row's context holds (its prompt, not padding)
        real = torch.ones_like(idx) if pad is None else (torch.arange(T0, device=idx.device) >= pad[:, None]).long()
        seen = torch.zeros(B, model.cfg.vocab_size, dtype=torch.long, device=idx.device).scatter_add_(1, idx, real) > 0
    cache = KVCache.for_model(model, B, size) if use_cache else None

    def prefill(start: int) -> torch.Tensor:
        """Refill the cache with columns start..n-1; logits of the last one, [B, V]."""
        cache.reset(None if pad is None else (pad - start).clamp(min=0))
        return model(out[:, start:n], kv_cache=cache)[0][:, -1]

    if max_new_tokens <= 0:
        return
    logits = prefill(max(0, T0 - size)) if use_cache else model(out[:, max(0, n - block):n])[0][:, -1]
    for step in range(max_new_tokens):
        logits = logits.float()
        scores = logits if seen is None else apply_repetition_penalty(logits, seen, repetition_penalty)
        ids = sample_next(scores, temperature, top_k, top_p, generator)
        ids = ids.masked_fill(done, filler)
        if eos_id is not None:
            done |= ids == eos_id
        out[:, n] = ids
        n += 1
        if seen is not None:
            seen[torch.arange(B, device=ids.device), ids] = True
        yield Step(ids, logits)
        if step == max_new_tokens - 1 or bool(done.all()):
            return
        if not use_cache:
            logits = model(out[:, max(0, n - block):n])[0][:, -1]
        elif cache.pos == cache.max_len:  # the new token does not fit: slide the window
            logits = prefill(n - keep)
        elif step_fn is not None:
            logits = step_fn(ids[:, None], cache)[:, -1]
        else:
            logits = model(ids[:, None], kv_cache=cache)[0][:, -1]


def generate(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, eos_id: int | None = None, generator: Generators = None, **options) -> torch.Tensor:
    """idx: long [B, T0] prompt ids -> [B, T0 + n], n <= max_new_tokens (fewer if every row hit EOS).

    temperature 0 means greedy decoding; options are decode_steps' keyword arguments.
    """
    steps = [s.ids for s in decode_steps(model, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                                          top_p=top_p, eos_id=eos_id, generator=generator, **options)]
    return torch.cat([idx, torch.stack(steps, 1)], 1) if steps else idx


# Inductor writes a product with one row (a decode step's every Linear) as a multiply and a sum,
# one streaming pass over the weight, instead of calling ATen's addmm, which is slower at M = 1
# on CPUs (benchmarks/decode_step.py); products wider than 2,048 stay as they are.
DECODE_COMPILE_OPTIONS = {"post_grad_fusion_options": {"decompose_mm_pass": {}}}


def compiled_decode_step(model, log: Callable[[str], None] = print) -> Callable:
    """A step_fn for decode_steps: the one-token forward under ``torch.compile``.

    The step runs through the cache's fixed-shape view (``KVCache.fixed_step``): the position is a
    tensor and attention covers the whole preallocated cache, masked, so one graph serves every
    position without recompiling. If compilation fails (no C++ compiler, say) the first call logs
    a note and everything runs eagerly.
    """
    def fixed_shape_step(ids: torch.Tensor, view) -> torch.Tensor:
        return model(ids, kv_cache=view)[0]

    compiled = torch_compile(fixed_shape_step, dynamic=False, options=DECODE_COMPILE_OPTIONS)
    state = {"compiled": False, "eager": False}

    def run(ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        if state["eager"]:
            return model(ids, kv_cache=cache)[0]
        view = cache.fixed_step()
        if state["compiled"]:
            logits = compiled(ids, view)
        else:
            try:  # compilation happens before anything runs, so a failure leaves the cache as it was
                logits = compiled(ids, view)
                state["compiled"] = True
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
                log(f"note: torch.compile of the decode step failed ({type(e).__name__}), running eagerly")
                state["eager"] = True
                return model(ids, kv_cache=cache)[0]
        view.finish()
        return logits

    return run


def check_sampling(max_new_tokens: int, temperature: float, top_k: int, top_p: float,
                   repetition_penalty: float = 1.0) -> None:
    """CLLMError naming the first bad setting and its value."""
    for ok, message in (
        (max_new_tokens >= 0, f"max_new_tokens must be >= 0, got {max_new_tokens}"),
        (temperature >= 0, f"temperature must be >= 0, got {temperature:g}"),
        (top_k >= 0, f"top_k must be >= 0, got {top_k}"),
        (0.0 < top_p <= 1.0, f"top_p must be in (0, 1], got {top_p:g}"),
        (repetition_penalty > 0, f"repetition_penalty must be > 0, got {repetition_penalty:g}"),
    ):
        if not ok:
            raise CLLMError(message)


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """A prompt's ids; an empty prompt starts from <bos>."""
    ids = tokenizer.encode(prompt).tolist() if prompt else []
    return ids or [tokenizer.bos_id if tokenizer.bos_id is not None else 0]


def generate_text(
    model, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int, *, temperature: float = 0.8,
    top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0, stop: Sequence[str] = (),
    seed: int | Sequence[int] = 0, on_text: Callable[[int, str], None] | None = None, **options,
) -> list[str]:
    """Continue every prompt in one batch (left-padded); returns each row's generated text.

    Row b samples with its own generator, seeded ``seed + b`` (or ``seed[b]``), so a row's text does
    not depend on the rest of the batch. A row ends at EOS or just before the first of ``stop``
    (the stop string is not included). on_text(row, text) receives each row's text as it becomes
    final (streaming). options: decode_steps' keyword arguments (use_cache, window_keep, step_fn).
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    device = next(model.parameters()).device
    idx, pad = left_pad([encode_prompt(tokenizer, p) for p in prompts], device=device)
    seeds = [seed + b for b in range(len(prompts))] if isinstance(seed, int) else list(seed)
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    decoders = [StreamDecoder(tokenizer, stop) for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    eos = tokenizer.eos_id
    for step in decode_steps(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             repetition_penalty=repetition_penalty, eos_id=eos, generator=generators,
                             pad=pad, done=done, **options):
        for b, i in enumerate(step.ids.tolist()):
            dec = decoders[b]
            if dec.stopped or i == eos:
                continue
            text = dec.push([i])
            if text and on_text is not None:
                on_text(b, text)
            if dec.stopped:
                done[b] = True
    for b, dec in enumerate(decoders):
        text = dec.flush()
        if text and on_text is not None:
            on_text(b, text)
    return [dec.text for dec in decoders]


def sample_text(
    model, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, temperature: float = 0.8,
    top_k: int = 0, top_p: float = 1.0, seed: int = 0,
) -> str:
    """Prompt text -> prompt + generated continuation, reproducible for a given seed."""
    return prompt + generate_text(model, tokenizer, [prompt], max_new_tokens, temperature=temperature,
                                  top_k=top_k, top_p=top_p, seed=seed)[0]
