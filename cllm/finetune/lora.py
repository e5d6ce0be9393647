"""LoRA: low-rank adapters on the attention and MLP matrices (Hu et al., 2021, arXiv:2106.09685).

Each wrapped ``nn.Linear`` W computes ``W x + (alpha / r) * B A x`` with A: [r, in] (random,
small), B: [out, r] (zeros, so training starts from the base model exactly). Only A and B are
trained; everything else is frozen. ``merged_state`` folds ``(alpha / r) B A`` into W, giving plain
GPT weights that load anywhere (``cllm.checkpoint.load_model``); the adapters alone are
``adapter_state`` (saved as safetensors by the fine-tuning run).
"""

from __future__ import annotations

import math

import safetensors.torch
import torch
from torch import nn

from ..errors import CLLMError

# The matrices that get adapters: attention's qkv and output projections, the MLP's two.
TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t().to(x.dtype) @ self.lora_b.t().to(x.dtype)) * self.scale

    def delta(self) -> torch.Tensor:
        return (self.lora_b @ self.lora_a) * self.scale


def apply_lora(model: nn.Module, rank: int, alpha: float) -> list[str]:
    """Wrap every targeted Linear of ``model.blocks`` in place and freeze all other parameters;
    returns the wrapped modules' names."""
    if rank < 1:
        raise CLLMError(f"--lora-rank must be >= 1, got {rank}")
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for target in TARGETS:
            parent_name, _, attr = target.rpartition(".")
            if name.rsplit(".", 1)[-1] == parent_name and isinstance(getattr(module, attr, None), nn.Linear):
                setattr(module, attr, LoRALinear(getattr(module, attr), rank, alpha))
                wrapped.append(f"{name}.{attr}")
    return wrapped


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters alone: ``{module}.lora_a`` / ``.lora_b``, float32 on the CPU."""
    out = {}
    for name, m in lora_modules(model).items():
        out[f"{name}.lora_a"] = m.lora_a.detach().float().cpu().contiguous()
        out[f"{name}.lora_b"] = m.lora_b.detach().float().cpu().contiguous()
    return out


@torch.no_grad()
def merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain model's state dict, each adapter folded into its base weight."""
    state = {}
    loras = lora_modules(model)
    for key, t in model.state_dict().items():
        if ".lora_" in key:
            continue
        module, _, leaf = key.rpartition(".")
        if module.endswith(".base") and module[:-5] in loras:
            owner = module[:-5]
            if leaf == "weight":
                t = t + loras[owner].delta().to(t.dtype)
            key = f"{owner}.{leaf}"
        state[key] = t.clone()
    return state


def save_adapters(model: nn.Module, path, metadata: dict[str, str]) -> None:
    safetensors.torch.save_file(adapter_state(model), str(path), metadata=metadata)


@torch.no_grad()
def load_adapters(model: nn.Module, path) -> None:
    try:
        tensors = safetensors.torch.load_file(str(path))
    except Exception as e:  # safetensors raises several types for malformed files
        raise CLLMError(f"cannot read LoRA adapters {path}: {str(e).splitlines()[0]}") from None
    for name, m in lora_modules(model).items():
        for leaf in ("lora_a", "lora_b"):
            t = tensors.get(f"{name}.{leaf}")
            if t is None or t.shape != getattr(m, leaf).shape:
                raise CLLMError(f"LoRA adapters {path} do not match the model ({name}.{leaf})")
            getattr(m, leaf).copy_(t)
