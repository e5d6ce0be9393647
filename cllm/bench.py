"""Training-step throughput: the full step (forward, backward, clip, AdamW) timed after warm-up.

Timings are medians over several steps, and variants are compared in one process, because a
shared machine is noisy and separate runs are not comparable.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from .config import Config
from .data import bundled_corpus_path, read_text
from .model import GPT
from .tokenizers import tokenizer_class
from .train import autocast, make_optimizer, resolve_device


@dataclass
class BenchResult:
    variant: str
    tokens_per_sec: float
    step_ms: float

    def as_dict(self) -> dict:
        return {"variant": self.variant, "tokens_per_sec": round(self.tokens_per_sec, 1), "step_ms": round(self.step_ms, 2)}


def bundled_vocab_size() -> int:
    """The character vocabulary of the bundled corpus: what `cllm train` with defaults trains on."""
    return tokenizer_class("char").train([read_text(bundled_corpus_path())]).vocab_size


def time_steps(step_fn, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step_fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step_fn()
        times.append(time.perf_counter() - start)
    return times


def bench_training_step(cfg: Config, variant: str = "batched", warmup: int = 3, steps: int = 10, seed: int = 0) -> BenchResult:
    """Median tokens/s of full training steps on random tokens.

    variant "batched": one ``[B, T]`` forward/backward per micro-batch (how cllm trains).
    variant "per-sequence": the seed trainers' pattern, one ``[1, T]`` sequence at a time with
    gradients accumulated, then one optimizer step: same tokens, same update.
    """
    torch.manual_seed(seed)
    device = resolve_device(cfg.train.device)
    model = GPT(cfg.model).to(device).train()
    optimizer = make_optimizer(model, cfg.train)
    B, T, V = cfg.train.batch_size, cfg.model.block_size, cfg.model.vocab_size
    x = torch.randint(0, V, (B, T), device=device)
    y = torch.randint(0, V, (B, T), device=device)

    def step() -> None:
        for _ in range(cfg.train.grad_accum):
            if variant == "batched":
                with autocast(device, cfg.train.dtype):
                    _, loss = model(x, y)
                (loss / cfg.train.grad_accum).backward()
            else:
                for b in range(B):
                    with autocast(device, cfg.train.dtype):
                        _, loss = model(x[b:b + 1], y[b:b + 1])
                    (loss / (B * cfg.train.grad_accum)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    median = statistics.median(time_steps(step, warmup, steps))
    tokens = B * T * cfg.train.grad_accum
    return BenchResult(variant, tokens / median, median * 1000)
