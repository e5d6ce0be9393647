"""Where and how a step runs: device, precision, torch.compile, activation checkpointing and
deterministic CPU kernels, applied to a model from outside it (as torchtitan's parallelize.py does).

Shared by the trainer and the benchmark, so ``cllm bench``'s default variant is ``cllm train``'s step.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import sys

import torch.utils.checkpoint

import torch

from .errors import CLLMError


def resolve_dtype(name: str, device: torch.device) -> str:
    """"auto" -> "bfloat16" where the hardware computes in it natively (AVX-512 BF16 / AMX, Ampere+), else "float32"."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


def compile_model(model: torch.nn.Module, enabled: bool, log=print, scope: str = "model"):
    """The model under torch.compile when enabled and a compiler is available; otherwise the model itself.

    scope "model" compiles the whole forward as one graph. scope "blocks" (regional compilation)
    compiles the transformer block once and every layer reuses that code, so a cold compile costs
    about one block's, not n_layer blocks' (docs/BENCHMARKS.md); embeddings, final norm and loss
    run eagerly around it. Compilation happens lazily at the first call; ``Trainer.step`` falls
    back to eager if that fails.
    """
    if not enabled:
        return model
    if model.training and next(model.parameters()).device.type == "cpu":
        if not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")):
            log("note: no C++ compiler found, so training runs eagerly (--no-compile to silence this)")
            return model
    if scope == "blocks":
        return CompiledBlocks(model)
    return torch_compile(model)


def torch_compile(fn, **kwargs):
    """``torch.compile(fn, **kwargs)``, with Inductor told to trust the vector ISAs (AVX2, AVX-512,
    AMX) that the CPU reports instead of proving each one by compiling and loading a probe program
    in a fresh process: those probes cost 4-10 s of every cold first compile on 2 cores and are
    only cached where the Inductor cache survives (docs/BENCHMARKS.md). The CPU-flag check still
    runs, so an ISA the CPU lacks is never chosen; a compiler that cannot build one fails the compile,
    and the callers fall back to eager. An explicit ``TORCHINDUCTOR_VEC_ISA_OK`` wins."""
    if os.environ.get("TORCHINDUCTOR_VEC_ISA_OK") is None:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.vec_isa_ok = True
    return torch.compile(fn, **kwargs)


class CompiledBlocks:
    """Calls ``model`` with each of its transformer blocks compiled (regional compilation).

    The compiled blocks are switched in only for the duration of a call through this object, so
    the model itself stays eager everywhere else (validation, sampling, export) and never compiles
    graphs it does not need. Backward runs the compiled backward that the forward recorded.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        inner = getattr(model, "module", model)  # DDP keeps the model as .module
        # Module.compile() stores its compiled __call__ here; every block shares Module._call_impl's
        # code, so dynamo compiles it once and the other layers hit that cache.
        self.blocks = [(block, torch_compile(block._call_impl)) for block in inner.blocks]

    def __call__(self, *args, **kwargs):
        for block, compiled in self.blocks:
            block._compiled_call_impl = compiled
        try:
            return self.model(*args, **kwargs)
        finally:
            for block, _ in self.blocks:
                block._compiled_call_impl = None


def apply_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each transformer block's activations in backward instead of storing them.

    Less memory for ~1/3 more compute. Each block's forward is wrapped in place, so parameter names
    (and so checkpoints) are unchanged; in eval mode or under no_grad the block runs as usual.
    """
    for block in model.blocks:
        forward = block.forward

        def checkpointed(*args, _forward=forward, _block=block):
            if _block.training and torch.is_grad_enabled():
                return torch.utils.checkpoint.checkpoint(_forward, *args, use_reentrant=False)
            return _forward(*args)

        block.forward = checkpointed


@contextlib.contextmanager
def deterministic_cpu_kernels(device: torch.device):
    """On CPU, ask PyTorch for deterministic kernels while the block runs (and compiles).

    Compiled CPU code otherwise accumulates the embedding gradient with atomic adds, so with two
    or more threads steps differ in the last bits from run to run and a resumed run drifts from the
    uninterrupted one. The deterministic fallback measured no slower on CPU; GPUs keep their
    fastest kernels. Deterministic mode would also fill every new tensor with NaN (a debugging aid
    against reading uninitialised memory, nothing to do with reproducibility): ~260 extra fills per
    eager speedrun step, 1.02x slower (``benchmarks/deterministic_kernels.py``), so that stays off.
    """
    if device.type != "cpu":
        yield
        return
    settings = torch.utils.deterministic
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                settings.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    settings.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        settings.fill_uninitialized_memory = previous[2]


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def reuse_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse instead of returning it to the kernel.

    PyTorch's CPU tensors come from malloc, and glibc serves blocks above its mmap threshold (32 MB at
    most) as fresh mappings that free() unmaps again, so every training step faults in and zeroes
    its large activations anew (the 2-layer, 10k-vocabulary shape: 47,000 page faults, 196 MB per
    step). With mmap off and heap trimming raised, freed blocks are reused, as a caching allocator
    would: steps 1.06x (small) to 1.28x (that shape) faster, peak memory about the same
    (``benchmarks/allocator.py``, docs/BENCHMARKS.md). Process-wide; Linux with glibc only. Skipped when ``CLLM_MALLOC=system``,
    or when the user has set glibc's own ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_`` or preloads
    another allocator (jemalloc, tcmalloc). Returns whether the setting was applied.
    """
    if (not sys.platform.startswith("linux") or os.environ.get("CLLM_MALLOC", "") == "system"
            or "MALLOC_MMAP_MAX_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ
            or "malloc" in os.environ.get("LD_PRELOAD", "")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CLLMError("--device cuda was requested but no CUDA GPU is available")
    return torch.device(name)


def autocast(device: torch.device, dtype: str):
    """Mixed precision: matmuls in bfloat16, weights and optimizer state stay float32."""
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
