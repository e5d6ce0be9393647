"""Where and how a step runs: device, precision, torch.compile, activation checkpointing and
deterministic CPU kernels, applied to a model from outside it (as torchtitan's parallelize.py does).

Shared by the trainer and the benchmark, so ``cllm bench``'s default variant is ``cllm train``'s step.
"""

from __future__ import annotations

import contextlib
import os
import shutil

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


def compile_model(model: torch.nn.Module, enabled: bool, log=print):
    """torch.compile(model) when enabled and a compiler is available; otherwise the model itself.

    Compilation happens lazily at the first call; ``train`` falls back to eager if that fails.
    """
    if not enabled:
        return model
    if model.training and next(model.parameters()).device.type == "cpu":
        if not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")):
            log("note: no C++ compiler found, so training runs eagerly (--no-compile to silence this)")
            return model
    return torch.compile(model)


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
    fastest kernels.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


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
