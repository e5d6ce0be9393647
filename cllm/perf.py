"""Speed bookkeeping: model FLOPs per token, the machine's measured matmul peak, MFU, memory.

MFU (model FLOPs utilisation) = achieved model FLOP/s / peak FLOP/s, where
  model FLOPs per token = 6 * N + 12 * n_layer * block_size * n_embd
N counts every parameter used in a matmul (all but the position table; the tied token embedding
counts once, as the LM head). 6N is the forward (2N) and backward (4N) multiply-adds of the weight
matmuls; 12·L·T·C is attention's QKᵀ and AV products at full context (PaLM appendix B; nanoGPT).
The peak is measured here, on this machine, not read from a spec sheet: the best median throughput
of square GEMMs and the model's own GEMM shapes, timed in interleaved rounds so that a busy
machine shows up as spread instead of a silently low peak (and an inflated MFU).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ModelConfig


def flops_per_token(cfg: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token: 6 * n_params + 12 * n_layer * block_size * n_embd."""
    return 6.0 * n_params + 12.0 * cfg.n_layer * cfg.block_size * cfg.n_embd


def model_gemm_shapes(cfg: ModelConfig, tokens: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of the model's weight matmuls for ``tokens`` = batch_size * block_size rows:
    the QKV and output projections, the MLP's two matrices and the LM head."""
    C = cfg.n_embd
    hidden = 4 * C if cfg.mlp != "swiglu" else 64 * -(-8 * C // 3 // 64)
    up = 2 * hidden if cfg.mlp == "swiglu" else hidden
    return [(tokens, C, 3 * C), (tokens, C, C), (tokens, C, up), (tokens, hidden, C), (tokens, C, cfg.vocab_size)]


SQUARE_GEMMS = [(2048, 2048, 2048), (4096, 4096, 4096)]
# What `cllm train` measures when no peak is cached: on CPUs a 1024² product runs as fast as 4096²
# (measured within 10 %, docs/BENCHMARKS.md) in 2 % of the time, so a first run does not spend
# 7-18 s timing 4096² products; GPUs need the big squares to approach their peak.
QUICK_CPU_GEMMS = [(1024, 1024, 1024)]
ROUNDS = 3  # each shape is timed in this many rounds, interleaved; their spread shows a busy machine
BUSY_SPREAD = 1.25  # best round / worst round of the best shape above this: the figure is not trusted


@dataclass
class Peak:
    """The best median FLOP/s over the GEMM shapes tried, which shape gave it, and how far that
    shape's rounds disagreed (best / worst; near 1.0 on a quiet machine)."""

    flops: float
    shape: tuple[int, int, int]
    spread: float

    @property
    def busy(self) -> bool:
        return self.spread > BUSY_SPREAD


def _time_gemm(a: torch.Tensor, b: torch.Tensor, reps: int) -> float:
    times = []
    for i in range(reps + 1):
        if a.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if a.device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first product warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_peak(dtype: torch.dtype, device: torch.device, shapes: list[tuple[int, int, int]],
                 reps: int = 5) -> Peak:
    """The best of ``shapes`` (each the median of ``reps`` products, in ``ROUNDS`` interleaved rounds).

    A big square GEMM is not always the fastest a machine does (on AMX CPUs the model's own thin
    shapes ran 1.7x faster than 4096²), so MFU is measured against the best of several, the model's
    own included; interleaved rounds make a load that comes and goes visible as spread.
    """
    # A private generator: drawing from torch's global one would change a seeded run's dropout
    # masks depending on whether this machine's peak was already cached.
    gen = torch.Generator(device).manual_seed(0)
    operands = [(torch.randn(m, k, device=device, generator=gen).to(dtype),
                 torch.randn(k, n, device=device, generator=gen).to(dtype)) for m, k, n in shapes]
    rounds: list[list[float]] = [[] for _ in shapes]
    for _ in range(ROUNDS):
        for (a, b), seconds in zip(operands, rounds):
            seconds.append(_time_gemm(a, b, reps))
    rates = [[2.0 * m * k * n / t for t in ts] for (m, k, n), ts in zip(shapes, rounds)]
    best = max(range(len(shapes)), key=lambda i: statistics.median(rates[i]))
    return Peak(statistics.median(rates[best]), shapes[best], max(rates[best]) / min(rates[best]))


def _machine_key(dtype: torch.dtype, device: torch.device, shapes) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return (f"{name}|{device.type}|{dtype}|threads={torch.get_num_threads()}|torch={torch.__version__}"
            f"|shapes={sorted(shapes)}")


def matmul_peak(dtype: torch.dtype, device: torch.device, model: ModelConfig | None = None, tokens: int = 0,
                remeasure: bool = False, warn=None, quick: bool = False) -> float:
    """This machine's GEMM peak in FLOP/s: the best of the square GEMMs and, given ``model`` and
    ``tokens`` (batch_size * block_size), the model's own shapes. Cached in ~/.cache/cllm per
    machine, dtype, thread count and shapes, so training pays for it once; a measurement whose
    rounds disagree (a busy machine) is not cached, and ``warn(message)`` is told. ``quick`` (what
    training asks for) times a 1024² square instead of 2048² and 4096² on a CPU."""
    squares = QUICK_CPU_GEMMS if quick and device.type == "cpu" else SQUARE_GEMMS
    shapes = squares + (model_gemm_shapes(model, tokens) if model is not None and tokens else [])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cllm" / "matmul_peak.json"
    key = _machine_key(dtype, device, shapes)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if not remeasure and isinstance(known.get(key), dict):
        return known[key]["flops"]
    peak = measure_peak(dtype, device, shapes)
    if peak.busy:
        if warn is not None:
            warn(f"warning: the {dtype} matmul peak was measured on a busy machine (rounds {peak.spread:.2f}x "
                 "apart), so MFU figures are low-confidence; re-measure on a quiet machine: cllm bench --peak")
        return peak.flops
    known[key] = {"flops": peak.flops, "shape": list(peak.shape), "spread": round(peak.spread, 3)}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs a re-measurement next time
    return peak.flops


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
