"""Where a training step's time goes, from torch.profiler.

``profile_step``: the eager step by model phase (embedding, attention, MLP, ...), labelled by hooks
on the modules. ``profile_compiled_step``: the compiled step, which users run, whose Inductor
kernels fuse across those module boundaries, so its time is grouped by step phase (forward,
backward, optimizer, data) and kernel kind (GEMMs, Inductor's fused C++ kernels, other ATen ops).
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict

import numpy as np
import torch
import torch._inductor.config

from ..config import Config
from ..data import Batches
from .bench import variant_trainer

PHASES = {  # profiler label -> the modules (by attribute name) whose forward it covers
    "embedding": ("wte", "wpe"),
    "attention": ("attn",),
    "mlp": ("mlp",),
    "norms": ("ln_1", "ln_2", "ln_f"),
    "lm head + loss": ("lm_head",),
}


def label_forward_phases(model: torch.nn.Module) -> None:
    """Hooks that open a profiler label (``PHASES``) when a module's forward starts and close it at its end."""
    from torch.profiler import record_function

    open_labels: dict[int, record_function] = {}

    def enter(label):
        def hook(module, args):
            ctx = record_function(label)
            ctx.__enter__()
            open_labels[id(module)] = ctx
        return hook

    def leave(module, args, output):
        open_labels.pop(id(module)).__exit__(None, None, None)

    for name, module in model.named_modules():
        for label, attrs in PHASES.items():
            if name.split(".")[-1] in attrs:
                module.register_forward_pre_hook(enter(label))
                module.register_forward_hook(leave)


def labelled_step(trainer, batches, forward_label: str):
    """One training step (without the schedule) with each part inside a profiler label."""
    from torch.profiler import record_function

    def step():
        with record_function("data"):
            x, y = batches.get()
        with record_function(forward_label):
            loss = trainer.loss(x, y)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            trainer.update()

    return step


def profile_step(cfg: Config, steps: int = 5) -> list[tuple[str, float]]:
    """Per-phase milliseconds of one eager training step of the default dtype, from torch.profiler.

    Forward phases are labelled by hooks on the model's modules (so the step runs eagerly: a
    compiled graph fuses across these boundaries); backward, optimizer and data are labelled around
    their calls. Returns (phase, mean ms per step), plus "other" for what no label covers.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=False))
    trainer = variant_trainer(cfg, "default")
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, 200_000).astype(np.uint16)
    batches = Batches(tokens, cfg.train.batch_size, cfg.model.block_size, 0, trainer.device)
    label_forward_phases(trainer.model)

    step = labelled_step(trainer, batches, forward_label="loss")
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


STEP_PHASES = ("data", "forward", "backward", "optimizer")


# Inductor names a fused kernel after the ops inside it; the first hint found names its kind.
FUSED_HINTS = (("nll_loss", "loss"), ("log_softmax", "loss"), ("softmax", "attention softmax"),
               ("layer_norm", "norms"), ("rms_norm", "norms"), ("gelu", "activation"), ("relu", "activation"),
               ("silu", "activation"), ("embedding", "embedding"), ("adam", "optimizer"))


def kernel_kind(name: str) -> str:
    """Which kind of work a profiler event is: a GEMM, an Inductor fused kernel (by what it fuses), other."""
    lowered = name.lower()
    if any(k in lowered for k in ("aten::addmm", "aten::mm", "aten::bmm", "mkldnn", "onednn", "aten::linear")):
        return "GEMM"
    if "cpp_fused" in lowered or "triton_" in lowered:
        return "fused " + next((kind for hint, kind in FUSED_HINTS if hint in lowered), "copies, casts, adds")
    if "compiledfxgraph" in lowered:
        return "fused (unprofiled)"
    if "scaled_dot_product" in lowered:
        return "SDPA"
    return "other ATen ops"


def profile_compiled_step(cfg: Config, steps: int = 5, warmup: int = 3) -> dict[str, dict[str, float]]:
    """Mean ms per step of the default (compiled) training step, by step phase and kernel kind.

    Each profiler event's self time is charged to the nearest enclosing phase label and to its own
    kind, so nothing is counted twice. Returns {phase: {kind: ms}}, plus {"wall": {"step": ms}}.
    """
    from torch.profiler import ProfilerActivity, profile

    trainer = variant_trainer(cfg, "default")
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, 200_000).astype(np.uint16)
    batches = Batches(tokens, cfg.train.batch_size, cfg.model.block_size, 0, trainer.device)

    step = labelled_step(trainer, batches, forward_label="forward")

    # Inductor's C++ kernels report themselves to the profiler only when compiled with this flag on
    with torch._inductor.config.patch({"cpp.enable_kernel_profile": True}):
        for _ in range(warmup):  # the first call compiles
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            wall = (time.perf_counter() - start) / steps * 1000
    table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for event in prof.events():
        if event.name in STEP_PHASES:
            continue
        phase, parent = "other", event.cpu_parent
        while parent is not None:
            if parent.name in STEP_PHASES:
                phase = parent.name
                break
            parent = parent.cpu_parent
        table[phase][kernel_kind(event.name)] += event.self_cpu_time_total / 1000 / steps
    result = {phase: dict(kinds) for phase, kinds in table.items()}
    result["wall"] = {"step": wall}
    return result
