"""Training-step throughput: the full step (forward, backward, clip, AdamW) timed after warm-up.

Every variant is a ``Trainer`` and is timed through ``Trainer.step``: the step `cllm train` runs.

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

import dataclasses
import statistics
import time
from dataclasses import dataclass

import torch

from ..config import Config
from ..data import bundled_corpus_path, read_text
from ..perf import SQUARE_GEMMS, Peak, flops_per_token, matmul_peak, measure_peak, model_gemm_shapes
from ..runtime import deterministic_cpu_kernels, resolve_device, resolve_dtype
from ..tokenizers import tokenizer_class
from .trainer import Trainer

VARIANTS = ("default", "float32-eager", "per-sequence")


@dataclass
class BenchResult:
    variant: str
    dtype: str
    compiled: bool
    tokens_per_sec: float
    step_ms: float
    mfu: float
    peak_flops: float  # the GEMM peak the MFU is relative to

    def as_dict(self) -> dict:
        return {"variant": self.variant, "dtype": self.dtype, "compiled": self.compiled,
                "tokens_per_sec": round(self.tokens_per_sec, 1), "step_ms": round(self.step_ms, 2),
                "mfu": round(self.mfu, 4), "peak_gflops": round(self.peak_flops / 1e9, 1)}


def bundled_vocab_size() -> int:
    """The character vocabulary of the bundled corpus: what `cllm train` with defaults trains on."""
    return tokenizer_class("char").train([read_text(bundled_corpus_path())]).vocab_size


class FixedBatches:
    """A batch source that hands out the same ``[B, T]`` random batch every time (in ``rows``-sized
    slices, for the per-sequence variant), with the state methods ``Trainer`` expects."""

    def __init__(self, cfg: Config, device: torch.device, rows: int | None = None, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        B, T, V = cfg.train.batch_size, cfg.model.block_size, cfg.model.vocab_size
        self.x, self.y = (torch.randint(0, V, (B, T), generator=generator).to(device) for _ in range(2))
        self.rows, self.next = rows or B, 0

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        r = slice(self.next, self.next + self.rows)
        self.next = (self.next + self.rows) % self.x.size(0)
        return self.x[r], self.y[r]

    def state(self) -> int:
        return self.next

    def set_state(self, state: int) -> None:
        self.next = state


def variant_trainer(cfg: Config, variant: str, seed: int = 0) -> Trainer:
    """A ``Trainer`` for one variant on a fixed random batch; its ``step()`` is `cllm train`'s step.

    float32-eager turns off autocast, compile and the fused AdamW kernel; per-sequence runs each
    sequence of the batch as its own micro-batch (eager, the run's dtype), the same tokens per step.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    device = resolve_device(cfg.train.device)
    B, accum = cfg.train.batch_size, cfg.train.grad_accum
    train_cfg = cfg.train
    if variant == "float32-eager":
        train_cfg = dataclasses.replace(cfg.train, dtype="float32", compile=False)
    elif variant == "per-sequence":
        train_cfg = dataclasses.replace(cfg.train, compile=False, batch_size=1, grad_accum=B * accum)
    variant_cfg = dataclasses.replace(cfg, train=train_cfg)
    torch.manual_seed(seed)
    batches = FixedBatches(cfg, device, rows=1 if variant == "per-sequence" else None, seed=seed)
    trainer = Trainer(variant_cfg, batches, device, resolve_dtype(train_cfg.dtype, device),
                      fused_optimizer=variant != "float32-eager", log=lambda *a: None)
    trainer.variant = variant
    return trainer


def interleaved_step_times(trainers: list[Trainer], warmup: int, steps: int) -> list[list[float]]:
    """Seconds of each of ``steps`` steps per trainer, taken in turn (A, B, A, B, ...) after ``warmup``
    untimed steps each (compilation), with the deterministic CPU kernels `cllm train` runs with."""
    times: list[list[float]] = [[] for _ in trainers]
    sync = torch.cuda.synchronize if trainers[0].device.type == "cuda" else (lambda: None)
    with deterministic_cpu_kernels(trainers[0].device):
        for trainer in trainers:
            for _ in range(warmup):
                trainer.step()
        for _ in range(steps):
            for trainer, ts in zip(trainers, times):
                start = time.perf_counter()
                trainer.step()
                sync()
                ts.append(time.perf_counter() - start)
    return times


def bench_variants(cfg: Config, variants: list[str], warmup: int = 3, steps: int = 10) -> list[BenchResult]:
    """Median tokens/s of each variant, steps interleaved across variants."""
    trainers = [variant_trainer(cfg, v) for v in variants]
    times = interleaved_step_times(trainers, warmup, steps)
    results = []
    for trainer, ts in zip(trainers, times):
        median = statistics.median(ts)
        tok_s = trainer.tokens_per_step / median
        peak = matmul_peak(torch.bfloat16 if trainer.dtype == "bfloat16" else torch.float32, trainer.device,
                           cfg.model, cfg.train.batch_size * cfg.model.block_size, warn=print)
        flops = flops_per_token(cfg.model, trainer.model.num_params())
        results.append(BenchResult(trainer.variant, trainer.dtype, trainer.compiled, tok_s, median * 1000,
                                   tok_s * flops / peak, peak))
    return results


def measure_peaks(cfg: Config, device: torch.device) -> dict[str, Peak]:
    """Fresh GEMM peaks per dtype (square GEMMs and the model's own shapes), and the cache that MFU
    figures read refreshed with them (unless a busy machine made the rounds disagree)."""
    tokens = cfg.train.batch_size * cfg.model.block_size
    shapes = SQUARE_GEMMS + model_gemm_shapes(cfg.model, tokens)
    peaks = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        peaks[name] = measure_peak(dtype, device, shapes)
        matmul_peak(dtype, device, cfg.model, tokens, remeasure=True)
    return peaks
