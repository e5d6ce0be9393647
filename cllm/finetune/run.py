"""Supervised fine-tuning: a trained run + JSONL conversations -> a chat model, by the training loop.

``finetune`` runs ``cllm.training.loop.train`` (progress bar, metrics.jsonl, evaluations, best and
latest checkpoints, Ctrl-C, exact resume) with its own set-up (``open_finetune``): the base
model's weights, its vocabulary grown by the chat template's reserved tokens, batches of packed
conversations whose targets are -100 outside assistant turns (the loss is on the responses only),
and a validation loss over every assistant token of the held-out conversations.

Full fine-tuning trains every weight. With LoRA (``LoraSpec``) the base weights are frozen and
low-rank adapters on the attention and MLP matrices are trained; each checkpoint holds the merged
weights (a plain model that ``load_model`` reads), plus the adapters alone in
``adapters.safetensors``. A LoRA run resumes from the base checkpoint's weights (checked by hash)
and the saved adapters, so its resumed losses are exact too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from ..config import Config
from ..errors import CLLMError
from ..model import GPT
from ..runtime import autocast, compile_model, resolve_device, resolve_dtype
from ..training.loop import Run, TrainResult, check_resume_compatible, checkpoint_to_resume, train
from ..training.optim import make_optimizer
from ..training.trainer import Trainer
from .conversations import IGNORE, ConversationBatches, ConversationSet, eval_batches, read_conversations, \
    split_conversations
from .lora import apply_lora, load_adapters, merged_state, save_adapters
from .template import chat_tokenizer, grow_vocab

ADAPTERS = "adapters.safetensors"


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float

    def to_dict(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha}


@dataclass
class FinetuneData:
    """What the loop reads of a run's data (``PreparedData``'s part of it), for conversations."""

    tokenizer: object
    train: ConversationSet
    val: ConversationSet
    fingerprint: str
    meta: dict = field(default_factory=dict)

    def shards(self, split: str):
        return self.val if split == "val" else self.train


@dataclass
class FinetuneRun(Run):
    finetune: dict = field(default_factory=dict)  # base checkpoint, its weights' hash, LoRA settings

    def state(self) -> dict:
        return {**super().state(), "finetune": self.finetune}


class FinetuneTrainer(Trainer):
    """The Trainer, started from given weights, optionally with LoRA adapters; its validation loss is
    over every assistant token of the val conversations, and with LoRA it saves merged weights."""

    def __init__(self, cfg: Config, batches, device, dtype: str, weights: dict, lora: LoraSpec | None, log=print):
        super().__init__(cfg, batches, device, dtype, log=log)
        self.model.load_state_dict(weights)
        self.lora = lora
        if lora is not None:  # wrap, then rebuild what holds the parameters: the forward and the optimizer
            apply_lora(self.model, lora.rank, lora.alpha)
            self.model.to(device)
            self.wrapped = self.model
            self.forward = compile_model(self.model, cfg.train.compile, log, cfg.train.compile_scope)
            self.optimizer = make_optimizer(self.model, cfg.train)

    @torch.no_grad()
    def val_loss(self, val: ConversationSet, seed: int = 0) -> float:
        """Mean cross-entropy over every learned (assistant) token of ``val``; nan if it has none."""
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        for x, y in eval_batches(val, self.cfg.train.batch_size, self.cfg.model.block_size, self.device):
            with autocast(self.device, self.dtype):
                logits = self.model(x)[0]
            total += float(F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE,
                                           reduction="sum"))
            count += int((y != IGNORE).sum())
        self.model.train(was_training)
        return total / count if count else float("nan")

    def save(self, target, tokenizer, extra_state: dict, with_optimizer: bool = True):
        if self.lora is None:
            return super().save(target, tokenizer, extra_state, with_optimizer)
        with torch.random.fork_rng(devices=[]):  # building it must not advance the RNG that dropout draws from
            plain = GPT(self.cfg.model)
        plain.load_state_dict(merged_state(self.model))
        state = {**extra_state, **self.state_dict()}
        save_checkpoint(target, plain, tokenizer, state, self.optimizer if with_optimizer else None)
        tmp = Path(target) / f".{ADAPTERS}.tmp"
        save_adapters(self.model, tmp, {"rank": str(self.lora.rank), "alpha": str(self.lora.alpha)})
        os.replace(tmp, Path(target) / ADAPTERS)
        return target


def _weights_hash(ckpt: Checkpoint) -> str:
    info = ckpt.state["files"].get("model.safetensors", {})
    return info.get("sha256", "")


def load_conversations(cfg: Config, tokenizer, log=print) -> FinetuneData:
    """``cfg.data.data``'s conversations, rendered and split into train and val by conversation."""
    data = read_conversations(cfg.data.data, tokenizer, cfg.model.block_size, cfg.data.skip_bad_lines)
    if data.skipped:
        first_line, reason = data.skipped[0]
        log(f"cllm: skipped {len(data.skipped)} bad line(s) of {cfg.data.data} (first: line {first_line}: {reason})")
    train_set, val_set = split_conversations(data, cfg.data.val_fraction, cfg.data.split_seed)
    fingerprint = hashlib.sha256(f"{train_set.fingerprint()} {val_set.fingerprint()} {tokenizer.fingerprint()}"
                                 .encode()).hexdigest()[:16]
    return FinetuneData(tokenizer, train_set, val_set, fingerprint, meta={
        "train_tokens": train_set.tokens, "train_conversations": len(train_set.conversations),
        "val_conversations": len(val_set.conversations), "skipped_lines": len(data.skipped)})


def check_resume(cfg: Config, ckpt: Checkpoint, fingerprint: str, info: dict, lora: LoraSpec | None) -> None:
    """CLLMError if the run being resumed differs from the checkpoint in settings, data, LoRA or base."""
    check_resume_compatible(cfg, ckpt.config)
    if ckpt.state.get("data_fingerprint") != fingerprint:
        raise CLLMError("--resume: the fine-tuning data or tokenizer changed since the checkpoint was written")
    saved = ckpt.state.get("finetune") or {}
    if saved.get("lora") != info["lora"]:
        raise CLLMError(f"--resume: LoRA settings {info['lora']} differ from the checkpoint's {saved.get('lora')}")
    if lora and saved.get("base_weights_sha256") != info["base_weights_sha256"]:
        raise CLLMError(f"--resume: the base model {cfg.train.init_from} changed since this LoRA run started")


def open_finetune(cfg: Config, resume: bool | Checkpoint = False, overwrite: bool = False, log=print, *,
                  lora: LoraSpec | None = None) -> FinetuneRun:
    """Set a fine-tuning run up for the loop (``cllm.training.loop.train``'s ``setup``): the base
    model from ``cfg.train.init_from``, the conversations of ``cfg.data.data``, the trainer."""
    t = cfg.train
    out = Path(t.out)
    ckpt = checkpoint_to_resume(out, resume, overwrite)
    if not t.init_from:
        raise CLLMError("fine-tuning needs the base model: --checkpoint RUN")
    device = resolve_device(t.device)
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    random.seed(t.seed)
    np.random.seed(t.seed)
    torch.manual_seed(t.seed)

    base_ckpt = load_checkpoint(t.init_from)
    base_model, base_tokenizer, _ = load_model(t.init_from, checkpoint=base_ckpt)
    tokenizer = chat_tokenizer(base_tokenizer)
    vocab = max(base_model.cfg.vocab_size, tokenizer.vocab_size)
    # the base model's settings, its vocabulary grown by the reserved tokens; dropout is this run's
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(base_model.cfg, vocab_size=vocab, dropout=cfg.model.dropout))
    run_data = load_conversations(cfg, tokenizer, log)
    train_set, val_set, fingerprint = run_data.train, run_data.val, run_data.fingerprint
    info = {"base": str(t.init_from), "base_weights_sha256": _weights_hash(base_ckpt),
            "lora": lora.to_dict() if lora else None}
    if ckpt:
        check_resume(cfg, ckpt, fingerprint, info, lora)
    weights = grow_vocab(base_model, vocab, seed=t.seed).state_dict()
    batches = ConversationBatches(train_set, t.batch_size, cfg.model.block_size, t.seed, device)
    trainer = FinetuneTrainer(cfg, batches, device, resolve_dtype(t.dtype, device), weights, lora, log=log)
    run = FinetuneRun(cfg, out, run_data, trainer, device, finetune=info)
    if ckpt:
        if lora:
            load_adapters(trainer.model, ckpt.dir / ADAPTERS)
        else:
            ckpt.load_weights(trainer.model)
        trainer.load_state_dict(ckpt.state, ckpt.optimizer_state())
        run.elapsed_before, run.best_val = ckpt.state["elapsed"], ckpt.state["best_val_loss"]
        if hasattr(run, "skipped_steps"):
            run.skipped_steps = ckpt.state.get("skipped_steps", 0)
    log(f"cllm: fine-tuning {t.init_from}{f' with LoRA rank {lora.rank}' if lora else ''}: "
        f"{len(train_set.conversations)} train / {len(val_set.conversations)} val conversations, "
        f"{train_set.learned_tokens:,} learned tokens; vocabulary {base_model.cfg.vocab_size} -> {vocab}")
    out.mkdir(parents=True, exist_ok=True)
    return run


def finetune(cfg: Config, lora: LoraSpec | None = None, resume: bool | Checkpoint = False, log=print,
             on_step=None, overwrite: bool = False) -> TrainResult:
    """Fine-tune ``cfg.train.init_from`` on the conversations in ``cfg.data.data`` into ``cfg.train.out``."""
    def setup(cfg, resume, overwrite, log):
        return open_finetune(cfg, resume, overwrite, log, lora=lora)

    return train(cfg, resume, log=log, on_step=on_step, overwrite=overwrite, setup=setup)
