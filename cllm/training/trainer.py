"""The training step: one object owns the model, its optimizer and its batch source.

One step = ``grad_accum`` micro-batches of ``[batch_size, block_size]`` tokens, each forward and
backward in one batched call, then global-norm clipping and one update (AdamW, or Muon for the
blocks' matrices with AdamW for the rest). ``cllm train`` runs ``Trainer.step`` in its loop and
``cllm bench`` times the very same method. Every source of randomness (python, numpy, torch, the
batch sampler) is in ``state_dict``, so a run resumed from it repeats the uninterrupted run's
losses exactly (on CPU, eager or compiled, float32 or bf16).
"""

from __future__ import annotations

import base64
import math
import random

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoint import Checkpoint, save_checkpoint
from ..config import Config
from ..data import Batches
from ..errors import CLLMError
from ..evaluate import score_ids
from ..model import GPT
from ..runtime import apply_activation_checkpointing, autocast, compile_model, reuse_freed_memory
from .distributed import SINGLE, Dist, FixedState
from .optim import lr_at, make_optimizer


class Trainer:
    """``batches`` yields ``(x, y)`` int64 ``[B, T]`` pairs from ``get()`` and has ``state()`` /
    ``set_state()``. The model is built from ``cfg.model`` with torch's current seed, placed on
    ``device``, and compiled when ``cfg.train.compile`` (eager fallback if compiling fails).
    ``fused_optimizer=False`` gives AdamW's plain ``foreach`` path (the float32-eager reference).
    With ``dist`` (distributed.py) the model is data-parallel (DDP, or FSDP2 sharded in place) and
    ``self.wrapped`` is what forward/backward run through; ``self.model`` keeps today's parameter names.
    """

    def __init__(self, cfg: Config, batches, device: torch.device, dtype: str, fused_optimizer: bool = True,
                 log=print, dist: Dist = SINGLE):
        self.cfg, self.batches, self.device, self.dtype, self.log, self.dist = cfg, batches, device, dtype, log, dist
        if device.type == "cpu":
            reuse_freed_memory()  # no page faults on every step's large activations
        self.model = GPT(cfg.model).to(device).train()
        if cfg.train.activation_checkpointing:
            apply_activation_checkpointing(self.model)
        if device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 for any float32 matmul left outside autocast
        self.wrapped = dist.wrap(self.model, dtype, device)  # the model itself in one process
        self.forward = compile_model(self.wrapped, cfg.train.compile, log, cfg.train.compile_scope)
        self.optimizer = make_optimizer(self.model, cfg.train, fused=fused_optimizer)
        self.step_count = 0  # optimizer steps taken, resumed runs included
        self.stopping = False  # set by step(): some rank asked to stop
        self.tokens_seen = 0
        self.tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.model.block_size * dist.world_size

    @property
    def compiled(self) -> bool:
        return self.forward is not self.wrapped

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of one micro-batch, x, y: [B, T], under the run's autocast."""
        with autocast(self.device, self.dtype):
            return self.forward(x, y)[1]

    def micro_steps(self) -> float:
        """Forward and backward over grad_accum micro-batches (gradients summed); this rank's mean loss."""
        accum, loss_sum = self.cfg.train.grad_accum, 0.0
        for i in range(accum):
            with self.dist.grad_sync(self.wrapped, sync=i == accum - 1):  # ranks reduce on the last only
                loss = self.loss(*self.batches.get())
                (loss / accum).backward()
            loss_sum += loss.item()
        return loss_sum / accum

    def update(self, loss: float = 0.0) -> bool:
        """Clip the global gradient norm, take one optimizer step, clear the gradients. If ``loss`` or
        the gradient norm is not finite the optimizer step is skipped (``self.skipped``); returns
        whether it was taken."""
        if self.cfg.train.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        self.grad_norm = float(norm)
        self.skipped = not (math.isfinite(loss) and math.isfinite(self.grad_norm))
        if not self.skipped:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return not self.skipped

    def step(self, stop_requested: bool = False) -> float:
        """One full training step at the schedule's learning rate; returns the mean training loss
        (over all ranks). ``self.stopping`` is whether any rank passed ``stop_requested``: the loss
        and that flag travel in one all-reduce, so every rank stops after the same step."""
        t = self.cfg.train
        self.lr = lr_at(self.step_count, t)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * self.lr / t.lr
        if not self.compiled:
            loss = self.micro_steps()
        else:  # the first compiled call compiles; if no working compiler turns up, go on eagerly
            batch_state = self.batches.state()
            try:
                loss = self.micro_steps()
            except Exception as e:  # torch._dynamo wraps compiler failures in many types
                # always shown (above any progress bar), even when the caller silences ``log``
                tqdm.write(f"note: torch.compile failed ({type(e).__name__}); continuing eagerly")
                self.forward = self.wrapped
                self.optimizer.zero_grad(set_to_none=True)
                self.batches.set_state(batch_state)
                loss = self.micro_steps()
        loss, self.stopping = self.dist.mean_and_any(loss, stop_requested)
        self.update(loss)
        self.step_count += 1
        self.tokens_seen += self.tokens_per_step
        return loss

    def val_loss(self, val_tokens, seed: int) -> float:
        return validation_loss(self.model, val_tokens, self.cfg, self.device, seed, self.dtype)

    def state_dict(self) -> dict:
        """JSON-serialisable: step, tokens seen, and every RNG with the batch sampler's state (of
        every rank when distributed: ``rng_ranks``, rank 0's also as ``rng``)."""
        state = {"step": self.step_count, "tokens_seen": self.tokens_seen, "rng": _rng_state(self.batches)}
        if self.dist.enabled:
            state["rng_ranks"] = self.dist.gather(state["rng"])
        return state

    def load_state_dict(self, state: dict, optimizer_state: dict) -> None:
        """Restore what ``state_dict`` returned and the optimizer's state (weights are loaded apart)."""
        try:
            self.optimizer.load_state_dict(self.dist.shard_optimizer_state(self.optimizer, optimizer_state))
        except (ValueError, KeyError, RuntimeError) as e:
            raise CLLMError(f"optimizer state does not match the model: {e}") from None
        self.step_count, self.tokens_seen = state["step"], state["tokens_seen"]
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == self.dist.world_size:
            _set_rng_state(ranks[self.dist.rank], self.batches)
        else:  # weights and optimizer carry over exactly; the data order cannot, so it is drawn afresh
            self.dist.seed_rank(self.cfg.train.seed, self.step_count, self.batches)
            self.log(f"note: checkpoint written by {len(ranks)} process(es), resumed by {self.dist.world_size}: "
                     "weights and optimizer state continue exactly, the data order is re-seeded")

    def load_weights(self, checkpoint: Checkpoint) -> None:
        self.dist.load_weights(self.model, checkpoint, self._plain_model)

    def _plain_model(self) -> GPT:
        return GPT(self.cfg.model)

    def save(self, target, tokenizer, extra_state: dict, with_optimizer: bool = True):
        """Write a checkpoint (atomically): weights, optionally optimizer state, and this trainer's
        state merged with ``extra_state`` (config, data fingerprint, ...)."""
        state = {**extra_state, **self.state_dict()}
        if not self.dist.enabled:
            return save_checkpoint(target, self.model, tokenizer, state, self.optimizer if with_optimizer else None)
        # every rank takes part in gathering (FSDP: full tensors); rank 0 alone writes
        model = self.dist.full_weights(self.model, self._plain_model)
        optimizer = FixedState(self.dist.full_optimizer_state(self.optimizer)) if with_optimizer else None
        if self.dist.main:
            save_checkpoint(target, model, tokenizer, state, optimizer)
        self.dist.barrier()
        return target


@torch.no_grad()
def validation_loss(model: GPT, tokens, cfg: Config, device: torch.device, seed: int, dtype: str) -> float:
    """Mean validation loss: over ``eval_batches`` batches drawn by a fresh generator (the same batches
    every call), or with eval_batches = 0 over every token of the split (``evaluate.score_ids``).

    ``tokens``: the val split, one array or a list of shards (as ``Batches`` takes)."""
    if cfg.train.eval_batches == 0:
        shards = tokens if isinstance(tokens, (list, tuple)) else [tokens]
        scored = [score_ids(model, shard, autocast=lambda: autocast(device, dtype)) for shard in shards]
        return sum(total for total, _ in scored) / max(1, sum(n for _, n in scored))
    was_training = model.training
    model.eval()
    batches = Batches(tokens, cfg.train.batch_size, cfg.model.block_size, seed, device)
    losses = []
    for _ in range(cfg.train.eval_batches):
        x, y = batches.get()
        with autocast(device, dtype):
            losses.append(model(x, y)[1].item())
    model.train(was_training)
    return float(np.mean(losses))


def _rng_state(batches) -> dict:
    return {
        "python": random.getstate(),
        "numpy": [v.tolist() if isinstance(v, np.ndarray) else v for v in np.random.get_state()],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "batches": batches.state(),
    }


def _set_rng_state(state: dict, batches) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()))
    batches.set_state(state["batches"])
