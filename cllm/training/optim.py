"""The optimizers and the learning-rate schedule.

``make_optimizer``: AdamW (decay on matrices only), or Muon for the blocks' matrices with AdamW for
the rest; ``lr_at``: the schedule (warm-up, then cosine, linear, constant or warmup-stable-decay).

Muon: momentum SGD whose update for each weight matrix is orthogonalised by Newton–Schulz.

For the 2-D weight matrices inside the transformer blocks, Muon replaces AdamW's per-coordinate
step with the nearest semi-orthogonal matrix to the momentum (all singular values pushed to ~1),
which equalises learning across directions; embeddings, the LM head, biases and norm gains keep
AdamW. Reference: Keller Jordan et al., "Muon: An optimizer for hidden layers" (2024).
"""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype=torch.bfloat16) -> torch.Tensor:
    """g: [..., m, n] -> approximately U Vᵀ of each matrix's SVD (singular values into ~[0.7, 1.2]).

    The quintic iteration's coefficients maximise the slope at zero, so small singular values
    grow fast; exact orthogonality is not needed for an optimizer step, so the iteration runs in
    bfloat16 (a stack of same-shape matrices in one batched product).
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = (g / (g.norm(dim=(-2, -1), keepdim=True) + eps)).to(dtype)
    transpose = g.size(-2) > g.size(-1)
    if transpose:  # iterate on the wide orientation: the Gram matrix is the smaller one
        x = x.mT
    squeeze = x.dim() == 2
    if squeeze:
        x = x[None]
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b·G + c·G² in one fused call
        x = torch.baddbmm(x, poly, x, beta=a)  # a·X + (b·G + c·G²)·X
    if squeeze:
        x = x[0]
    return (x.mT if transpose else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Orthogonalised Nesterov momentum for 2-D parameters. lr is the spectral step size."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, weight_decay: float = 0.0, ns_steps: int = 5):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps))
        for group in self.param_groups:
            if any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon only takes 2-D parameters")

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            by_shape: dict[tuple, list] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(tuple(p.shape), []).append(p)
            for shape, params in by_shape.items():
                updates = []
                for p in params:
                    state = self.state[p]
                    if "momentum" not in state:
                        state["momentum"] = torch.zeros_like(p)
                    buf = state["momentum"]
                    buf.lerp_(p.grad, 1 - group["momentum"])
                    updates.append(p.grad.lerp(buf, group["momentum"]))  # Nesterov
                ortho = newton_schulz(torch.stack(updates), group["ns_steps"])
                # Rectangular matrices: scale so the update's RMS does not depend on the aspect ratio.
                scale = max(1.0, shape[0] / shape[1]) ** 0.5
                for p, u in zip(params, ortho):
                    if group["weight_decay"]:
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(u, alpha=-group["lr"] * scale)


class OptimizerSet:
    """Several optimizers stepped together, with one state_dict; quacks like one optimizer to train.py."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        if len(state.get("optimizers", [])) != len(self.optimizers):
            raise ValueError("optimizer state holds a different set of optimizers")
        for opt, s in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(s)


def lr_at(step: int, t: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``t.max_steps``."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / (t.warmup_steps + 1)
    if t.schedule == "constant":
        return t.lr
    if t.schedule == "wsd":
        decay_start = t.max_steps - int(t.decay_fraction * t.max_steps)
        if step < decay_start:
            return t.lr
        frac = (step - decay_start) / max(1, t.max_steps - decay_start)
        return t.lr - (t.lr - t.min_lr) * min(1.0, frac)
    frac = min(1.0, (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps))
    if t.schedule == "linear":
        return t.lr - (t.lr - t.min_lr) * frac
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + math.cos(math.pi * frac))  # cosine


def make_optimizer(model: torch.nn.Module, t: TrainConfig, fused: bool = True):
    """AdamW with bias correction, weight decay only on matrices (>= 2-D), never on biases or norm gains;
    with ``t.optimizer == "muon"``, the blocks' weight matrices go to Muon instead (cllm/optim.py).

    ``fused`` uses AdamW's single-kernel implementation (same arithmetic, one pass over memory),
    falling back to ``foreach`` where the build has none. Every param group carries its peak
    learning rate as ``base_lr``; the schedule scales it.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    to_muon = [p for n, p in named if t.optimizer == "muon" and p.dim() == 2 and n.startswith("blocks.")]
    muon_ids = {id(p) for p in to_muon}
    rest = [p for _, p in named if id(p) not in muon_ids]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": t.weight_decay, "base_lr": t.lr},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "base_lr": t.lr},
    ]
    kwargs = dict(lr=t.lr, betas=(t.beta1, t.beta2))
    adamw = None
    if fused:
        try:
            adamw = torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            pass
    adamw = adamw or torch.optim.AdamW(groups, foreach=True, **kwargs)
    if not to_muon:
        return adamw
    muon = Muon([{"params": to_muon, "base_lr": t.muon_lr}], lr=t.muon_lr)
    return OptimizerSet(adamw, muon)
