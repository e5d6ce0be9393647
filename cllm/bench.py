"""Training-step throughput: the full step (forward, backward, clip, AdamW) timed after warm-up.

Variants are compared in one process with their steps interleaved (A, B, A, B, ...), and each
reports the median step time, so a shared, noisy machine slows them alike and the ratio holds.

Variants:
  default        the training path `cllm train` uses: bf16 autocast where the hardware has it,
                 torch.compile unless the config turns it off, fused AdamW
  float32-eager  the reference most PyTorch trainers run on CPU: float32, no compile, plain AdamW
  per-sequence   the seed trainers' pattern: each sequence of the batch forwarded and
                 backpropagated on its own, gradients accumulated, then one update
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch

from .config import Config
from .data import bundled_corpus_path, read_text
from .model import GPT
from .perf import flops_per_token, matmul_peak
from .tokenizers import tokenizer_class
from .runtime import autocast, compile_model, deterministic_cpu_kernels, resolve_device, resolve_dtype
from .train import make_optimizer

VARIANTS = ("default", "float32-eager", "per-sequence")


@dataclass
class BenchResult:
    variant: str
    dtype: str
    compiled: bool
    tokens_per_sec: float
    step_ms: float
    mfu: float

    def as_dict(self) -> dict:
        return {"variant": self.variant, "dtype": self.dtype, "compiled": self.compiled,
                "tokens_per_sec": round(self.tokens_per_sec, 1), "step_ms": round(self.step_ms, 2),
                "mfu": round(self.mfu, 4)}


def bundled_vocab_size() -> int:
    """The character vocabulary of the bundled corpus: what `cllm train` with defaults trains on."""
    return tokenizer_class("char").train([read_text(bundled_corpus_path())]).vocab_size


class StepRunner:
    """One variant's model, optimizer and fixed random batch; ``step()`` runs one full training step."""

    def __init__(self, cfg: Config, variant: str, seed: int = 0):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        self.cfg, self.variant = cfg, variant
        self.device = resolve_device(cfg.train.device)
        self.dtype = "float32" if variant == "float32-eager" else resolve_dtype(cfg.train.dtype, self.device)
        torch.manual_seed(seed)
        self.model = GPT(cfg.model).to(self.device).train()
        if variant == "float32-eager":
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr)
        else:
            self.optimizer = make_optimizer(self.model, cfg.train)
        self.forward = compile_model(self.model, cfg.train.compile and variant == "default", lambda *a: None)
        B, T, V = cfg.train.batch_size, cfg.model.block_size, cfg.model.vocab_size
        self.x = torch.randint(0, V, (B, T), device=self.device)
        self.y = torch.randint(0, V, (B, T), device=self.device)
        self.tokens_per_step = B * T * cfg.train.grad_accum
        self.flops_per_token = flops_per_token(cfg.model, self.model.num_params())

    def step(self) -> None:
        accum, B = self.cfg.train.grad_accum, self.cfg.train.batch_size
        rows = [slice(b, b + 1) for b in range(B)] if self.variant == "per-sequence" else [slice(None)]
        for _ in range(accum):
            for r in rows:
                with autocast(self.device, self.dtype):
                    _, loss = self.forward(self.x[r], self.y[r])
                (loss / (accum * len(rows))).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip or float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def bench_variants(cfg: Config, variants: list[str], warmup: int = 3, steps: int = 10) -> list[BenchResult]:
    """Median tokens/s of each variant, steps interleaved across variants."""
    runners = [StepRunner(cfg, v) for v in variants]
    times: list[list[float]] = [[] for _ in runners]
    with deterministic_cpu_kernels(runners[0].device):  # as `cllm train` runs
        for runner in runners:
            for _ in range(warmup):
                runner.step()
        for _ in range(steps):
            for runner, ts in zip(runners, times):
                start = time.perf_counter()
                runner.step()
                ts.append(time.perf_counter() - start)
    results = []
    for runner, ts in zip(runners, times):
        median = statistics.median(ts)
        tok_s = runner.tokens_per_step / median
        peak = matmul_peak(torch.bfloat16 if runner.dtype == "bfloat16" else torch.float32, runner.device)
        results.append(BenchResult(runner.variant, runner.dtype, runner.forward is not runner.model, tok_s,
                                   median * 1000, tok_s * runner.flops_per_token / peak))
    return results


def measure_peaks(device: torch.device) -> dict[str, float]:
    """Fresh GEMM peak (FLOP/s) per dtype on this machine (and the cache MFU figures use, refreshed)."""
    return {name: matmul_peak(dtype, device, remeasure=True)
            for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}


PHASES = {  # profiler label -> the modules (by attribute name) whose forward it covers
    "embedding": ("wte", "wpe"),
    "attention": ("attn",),
    "mlp": ("mlp",),
    "norms": ("ln_1", "ln_2", "ln_f"),
    "lm head + loss": ("lm_head",),
}


def profile_step(cfg: Config, steps: int = 5) -> list[tuple[str, float]]:
    """Per-phase milliseconds of one eager training step of the default dtype, from torch.profiler.

    Forward phases are labelled by hooks on the model's modules (so the step runs eagerly: a
    compiled graph fuses across these boundaries); backward, optimizer and data are labelled around
    their calls. Returns (phase, mean ms per step), plus "other" for what no label covers.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    from .data import Batches
    import numpy as np

    cfg = copy.deepcopy(cfg)
    cfg.train.compile = False
    runner = StepRunner(cfg, "default")
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, 200_000).astype(np.uint16)
    batches = Batches(tokens, cfg.train.batch_size, cfg.model.block_size, 0, runner.device)
    open_labels: dict[int, record_function] = {}

    def enter(label):
        def hook(module, args):
            ctx = record_function(label)
            ctx.__enter__()
            open_labels[id(module)] = ctx
        return hook

    def leave(module, args, output):
        open_labels.pop(id(module)).__exit__(None, None, None)

    for name, module in runner.model.named_modules():
        for label, attrs in PHASES.items():
            if name.split(".")[-1] in attrs:
                module.register_forward_pre_hook(enter(label))
                module.register_forward_hook(leave)

    def step():
        with record_function("data"):
            x, y = batches.get()
        with autocast(runner.device, runner.dtype):
            with record_function("loss"):
                _, loss = runner.model(x, y)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            torch.nn.utils.clip_grad_norm_(runner.model.parameters(), cfg.train.grad_clip or float("inf"))
            runner.optimizer.step()
            runner.optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            with record_function("step"):
                step()
        wall = (time.perf_counter() - start) / steps * 1000
    totals = {e.key: e.cpu_time_total / 1000 / steps for e in prof.key_averages()}
    # the LM head's label covers the matmul; the loss (cross-entropy) runs after it inside "loss"
    phases = [(label, totals.get(label, 0.0)) for label in PHASES]
    covered_forward = sum(ms for _, ms in phases)
    head_loss = max(0.0, totals.get("loss", 0.0) - covered_forward)
    phases = [(k, v + (head_loss if k == "lm head + loss" else 0.0)) for k, v in phases]
    for label in ("backward", "optimizer", "data"):
        phases.append((label, totals.get(label, 0.0)))
    phases.append(("other", max(0.0, wall - sum(ms for _, ms in phases))))
    return phases
