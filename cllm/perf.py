"""Speed bookkeeping: model FLOPs per token, the machine's measured matmul peak, MFU, memory.

MFU (model FLOPs utilisation) = achieved model FLOP/s / peak FLOP/s, where
  model FLOPs per token = 6 * N + 12 * n_layer * block_size * n_embd
N counts every parameter used in a matmul (all but the position table; the tied token embedding
counts once, as the LM head). 6N is the forward (2N) and backward (4N) multiply-adds of the weight
matmuls; 12·L·T·C is attention's QKᵀ and AV products at full context (PaLM appendix B; nanoGPT).
The peak is measured here, on this machine, as the median throughput of large GEMMs, not read
from a spec sheet.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from .config import ModelConfig


def flops_per_token(cfg: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token: 6 * n_params + 12 * n_layer * block_size * n_embd."""
    return 6.0 * n_params + 12.0 * cfg.n_layer * cfg.block_size * cfg.n_embd


def measure_matmul_peak(dtype: torch.dtype, device: torch.device, size: int = 2048, reps: int = 5) -> float:
    """Median FLOP/s of ``reps`` ``[size, size] @ [size, size]`` products after one warm-up."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    times = []
    for i in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times)


def _machine_key(dtype: torch.dtype, device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return f"{name}|{device.type}|{dtype}|threads={torch.get_num_threads()}|torch={torch.__version__}"


PEAK_GEMM_SIZE = 4096


def matmul_peak(dtype: torch.dtype, device: torch.device, remeasure: bool = False) -> float:
    """This machine's GEMM peak (median of 5 ``4096``-square products), cached in ~/.cache/cllm so
    training pays for the measurement once per machine, dtype and thread count."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cllm" / "matmul_peak.json"
    key = _machine_key(dtype, device)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if remeasure or key not in known:
        known[key] = measure_matmul_peak(dtype, device, size=PEAK_GEMM_SIZE, reps=5)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(known, indent=1))
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only home only costs a re-measurement next time
    return known[key]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
