"""The training loop: batches -> model -> loss -> optimizer -> checkpoint, resumable exactly.

``open_run`` sets a run up (data, resume, the Trainer); ``train`` runs the loop: step, evaluate,
log, save, stop on a signal. The step itself is ``Trainer.step`` (trainer.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoint import BEST, LATEST, Checkpoint, load_checkpoint
from ..config import Config, resolve_vocab_size
from ..data import Batches, PreparedData, load_prepared, prepare, split_paths
from ..errors import CLLMError
from ..perf import flops_per_token, matmul_peak
from ..runtime import deterministic_cpu_kernels, resolve_device, resolve_dtype
from . import distributed
from .metrics import MetricsLog, plot_losses
from .pretrained import load_for_init
from .runlock import run_lock
from .trainer import Trainer

# Settings that may differ between a checkpoint and the run resuming it: how long to run, how
# often to log, evaluate and save, and where/how fast to compute. Everything else must match.
RESUMABLE_CHANGES = {
    "out", "max_steps", "eval_interval", "eval_batches", "log_interval", "save_interval",
    "progress", "sample_tokens", "threads", "device", "dtype", "compile", "compile_scope", "activation_checkpointing",
    "workers", "log", "init_from", "max_bad_steps", "nproc", "parallel",
}


def check_resume_compatible(cfg: Config, saved: dict) -> None:
    """Raise CLLMError listing the settings that differ from the checkpoint in ways resume cannot honour."""
    current = cfg.to_dict()
    diffs = []
    for section, values in saved.items():
        for name, old in values.items():
            new = current[section].get(name)
            if new != old and name not in RESUMABLE_CHANGES:
                diffs.append(f"{section}.{name} ({old!r} in checkpoint, {new!r} now)")
    if diffs:
        raise CLLMError("--resume with settings that contradict the checkpoint: " + "; ".join(diffs))


@dataclass
class TrainResult:
    out: Path
    step: int
    losses: list[float] = field(default_factory=list)  # training loss of each step run in this call
    val_loss: float | None = None
    best_val_loss: float | None = None
    elapsed: float = 0.0
    interrupted: bool = False


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so it can save first."""

    def __init__(self):
        self.received: int | None = None

    def __enter__(self):
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def load_run_checkpoint(out: Path, verify: bool = True) -> Checkpoint:
    """The latest checkpoint of run directory ``out``, for --resume."""
    if not out.exists():
        raise CLLMError(f"--resume: run directory {out} does not exist")
    return load_checkpoint(out, verify=verify)


def load_data(cfg: Config, out: Path, tokenizer=None) -> PreparedData:
    """A prepared dataset directory is used as is; raw text is prepared (cached) into ``out/data``,
    encoded with ``tokenizer`` when given (a pretrained model's), else with one trained on it."""
    paths = split_paths(cfg.data.data)
    if len(paths) == 1 and (Path(paths[0]) / "meta.json").is_file():
        data = load_prepared(paths[0])
        if tokenizer is not None and data.tokenizer.fingerprint() != tokenizer.fingerprint():
            raise CLLMError(f"prepared dataset {paths[0]} was encoded with another tokenizer than "
                            f"--init-from {cfg.train.init_from}'s: prepare the text again or pass the raw text")
        need = cfg.model.block_size + 1
        for split in ("train", "val"):
            if max((n for _, n in data.meta["shards"][split]), default=0) < need:
                raise CLLMError(f"prepared dataset {paths[0]} has no {split} shard of block_size + 1 = {need} tokens")
        return data
    return prepare(cfg.data, out / "data", min_tokens=cfg.model.block_size + 1, progress=cfg.train.progress,
                   tokenizer=tokenizer)


@dataclass
class Run:
    """A run set up for the loop: its resolved config (vocab size filled in, a copy of the caller's),
    directory, data and trainer, plus what carries over from an earlier session of it."""

    cfg: Config
    out: Path
    data: PreparedData
    trainer: Trainer
    device: torch.device
    best_val: float | None = None
    elapsed_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    skipped_steps: int = 0  # steps whose update was skipped (non-finite loss or gradient norm), resumes included
    bad_in_a_row: int = 0
    dist: distributed.Dist = distributed.SINGLE  # this process's rank among several (distributed.py)

    def count_bad_step(self, step: int, loss: float, write) -> None:
        """After a step whose update the trainer skipped: count it, say so, and stop the run (CLLMError)
        after ``max_bad_steps`` in a row. The weights were not updated, so none of it reaches a checkpoint."""
        self.skipped_steps += 1
        self.bad_in_a_row += 1
        grad_norm = self.trainer.grad_norm
        write(f"step {step}: non-finite loss ({loss}) or gradient norm ({grad_norm}): update skipped "
              f"({self.bad_in_a_row} in a row, {self.skipped_steps} in the run)")
        if self.bad_in_a_row >= self.cfg.train.max_bad_steps:
            raise CLLMError(
                f"stopped at step {step}: {self.bad_in_a_row} steps in a row had a non-finite loss or gradient norm "
                f"(last: loss {loss}, gradient norm {grad_norm}; max_bad_steps = {self.cfg.train.max_bad_steps}); "
                f"their updates were skipped and the checkpoint in {self.out / LATEST} is from before them. "
                "A fresh run with a lower --lr or --dtype float32 may avoid it")

    def elapsed(self) -> float:
        """Wall time of the whole run so far, earlier sessions of a resumed run included."""
        return self.elapsed_before + time.perf_counter() - self.started

    def state(self) -> dict:
        """What a checkpoint holds besides the trainer's own state."""
        return {"elapsed": self.elapsed(), "best_val_loss": self.best_val, "config": self.cfg.to_dict(),
                "data_fingerprint": self.data.fingerprint, "skipped_steps": self.skipped_steps}


def checkpoint_to_resume(out: Path, resume: bool | Checkpoint, overwrite: bool) -> Checkpoint | None:
    """The checkpoint a run continues from: the one the caller read, or ``out``'s latest when
    ``resume`` is True, or None for a fresh run, which refuses to replace a trained run in ``out``
    unless ``overwrite`` is set, so an earlier run is never lost by accident."""
    ckpt = resume if isinstance(resume, Checkpoint) else load_run_checkpoint(out) if resume else None
    if not ckpt and not overwrite and any((out / name / "trainer_state.json").exists() for name in (LATEST, BEST)):
        raise CLLMError(f"{out} already holds a trained run: pass --resume to continue it, --overwrite to "
                        "replace it, or a different --out")
    return ckpt


def open_run(cfg: Config, resume: bool | Checkpoint = False, overwrite: bool = False, log=print) -> Run:
    """Data prepared, model built (and restored when resuming), ready to step. ``resume`` is True
    (read ``cfg.train.out``'s latest checkpoint) or a checkpoint the caller has already read."""
    t = cfg.train
    out = Path(t.out)
    ckpt = checkpoint_to_resume(out, resume, overwrite)
    device = resolve_device(t.device)
    dist = distributed.init(t.parallel, device, t.optimizer, t.threads)  # SINGLE unless started by torchrun
    dist.check_same_config(cfg.to_dict())
    log = log if dist.main else _quiet
    torch.set_num_threads(dist.threads(t.threads))
    device = dist.device(device)
    random.seed(t.seed)
    np.random.seed(t.seed)
    torch.manual_seed(t.seed)

    pretrained = load_for_init(cfg) if t.init_from and not ckpt else None
    if pretrained:
        cfg = dataclasses.replace(cfg, model=pretrained.model)
        log(f"cllm: starting from {t.init_from}: its model settings and tokenizer (dropout from this run)")
    data = dist.in_turn(lambda: load_data(cfg, out, pretrained.tokenizer if pretrained else None))
    cfg = dataclasses.replace(cfg, model=resolve_vocab_size(cfg.model, data.tokenizer.vocab_size))
    if ckpt:
        check_resume_compatible(cfg, ckpt.config)
        if ckpt.state.get("data_fingerprint") != data.fingerprint:
            raise CLLMError("--resume: the training data or tokenizer changed since the checkpoint was written")
    batches = Batches(data.shards("train"), t.batch_size, cfg.model.block_size, dist.batch_seed(t.seed), device)
    trainer = Trainer(cfg, batches, device, resolve_dtype(t.dtype, device), log=log, dist=dist)
    dist.seed_rank(t.seed)  # other ranks: their own dropout streams, now that all have built the same model
    run = Run(cfg, out, data, trainer, device, dist=dist)
    if ckpt:
        trainer.load_weights(ckpt)
        trainer.load_state_dict(ckpt.state, ckpt.optimizer_state())
        run.elapsed_before, run.best_val = ckpt.state["elapsed"], ckpt.state["best_val_loss"]
        run.skipped_steps = ckpt.state.get("skipped_steps", 0)
    elif pretrained:
        trainer.model.load_state_dict(pretrained.state_dict)
    out.mkdir(parents=True, exist_ok=True)
    return run


def train(cfg: Config, resume: bool | Checkpoint = False, log=print, on_step=None, overwrite: bool = False,
          setup=None) -> TrainResult:
    """Train per ``cfg`` into ``cfg.train.out``; with ``resume``, continue from its latest checkpoint.

    A fresh run refuses a directory that already holds a checkpoint unless ``overwrite`` is set, so
    an earlier run is never replaced by accident. ``on_step(step, loss)``, if given, is called after
    every optimizer step (a hook for notebooks and tests); ``setup(cfg, resume, overwrite, log) -> Run``
    replaces ``open_run`` (cllm.finetune: other data, other starting weights); SIGINT/SIGTERM during training save a
    checkpoint and return with ``interrupted`` set. The run directory is locked (runlock.py) while
    it trains: a second process on it stops with a CLLMError naming this one.
    """
    with run_lock(cfg.train.out, create=not resume):
        return _train(cfg, resume, log, on_step, overwrite, setup or open_run)


def _train(cfg: Config, resume, log, on_step, overwrite: bool, setup) -> TrainResult:
    run = setup(cfg, resume, overwrite, log)
    cfg, t, trainer, out, dist = run.cfg, run.cfg.train, run.trainer, run.out, run.dist
    log = log if dist.main else _quiet  # rank 0 alone prints, shows progress, writes metrics and checkpoints
    log(f"cllm: {'resuming at step ' + str(trainer.step_count) if trainer.step_count else 'training'} on "
        f"{run.device} in {trainer.dtype}{' (compiled)' if trainer.compiled else ''}: "
        f"{trainer.model.num_params() / 1e6:.2f}M parameters, {run.data.meta['train_tokens']:,} train tokens")
    log("config: " + json.dumps(cfg.to_dict()))
    if dist.enabled:
        log(dist.describe(t.batch_size, t.grad_accum, cfg.model.block_size))
    result = TrainResult(out=out, step=trainer.step_count, best_val_loss=run.best_val)
    speed = Throughput(cfg, trainer)
    val_tokens = run.data.shards("val")
    bar = tqdm(total=t.max_steps, initial=trainer.step_count, disable=not t.progress or not dist.main, unit="step",
               dynamic_ncols=True)
    write = bar.write if dist.main else _quiet
    with _StopSignal() as stop, \
            (MetricsLog(out, t.log, trainer.step_count) if dist.main else distributed.Discard()) as metrics, \
            deterministic_cpu_kernels(run.device):
        while trainer.step_count < t.max_steps:
            with speed.timed():
                loss = trainer.step(stop.received is not None)
            step = trainer.step_count
            result.losses.append(loss)
            bar.update(1)
            if trainer.skipped:
                run.count_bad_step(step, loss, write)
            else:
                run.bad_in_a_row = 0
            if on_step is not None:
                on_step(step, loss)
            val_loss = None
            if step % t.eval_interval == 0 or step == t.max_steps:
                val_loss = result.val_loss = trainer.val_loss(val_tokens, t.seed + 1)
                if math.isfinite(val_loss) and (run.best_val is None or val_loss < run.best_val):
                    run.best_val = val_loss
                    trainer.save(out / BEST, run.data.tokenizer, run.state(), with_optimizer=False)
                write(f"step {step}: train loss {loss:.4f}, val loss {val_loss:.4f} "
                          f"(perplexity {math.exp(val_loss):.2f})")
            if step % t.log_interval == 0 or val_loss is not None or step == t.max_steps or trainer.skipped:
                record = {"step": step, "loss": loss, "val_loss": val_loss, "lr": trainer.lr, **speed.take(),
                          "tokens": trainer.tokens_seen, "elapsed": round(run.elapsed(), 3),
                          "skipped_steps": run.skipped_steps}
                metrics.write(record)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{trainer.lr:.2e}", tok_s=f"{record['tokens_per_sec']:,.0f}",
                                mfu=f"{record['mfu']:.0%}")
            # ranks agree on the flag inside the step's all-reduce; one process also sees a signal that came since
            stopping = trainer.stopping or (not dist.enabled and stop.received is not None)
            if step % t.save_interval == 0 or step == t.max_steps or stopping:
                trainer.save(out / LATEST, run.data.tokenizer, run.state())
            if stopping:
                result.interrupted = True
                write(f"interrupted at step {step}: checkpoint saved in {out / LATEST}; "
                          f"continue with: cllm train --out {out} --resume")
                break
    bar.close()
    result.step, result.best_val_loss, result.elapsed = trainer.step_count, run.best_val, run.elapsed()
    if not result.interrupted and dist.main:
        plot_losses(out / "metrics.jsonl", out / "loss.png")
    return result


def _quiet(*args, **kwargs) -> None:
    """``log`` on ranks other than 0."""


class Throughput:
    """tokens/s and MFU over the steps since the last ``take()``: time inside training steps only
    ("elapsed" in the metrics is wall time, evaluations and saves included)."""

    def __init__(self, cfg: Config, trainer: Trainer):
        self.tokens_per_step = trainer.tokens_per_step
        self.peak = matmul_peak(torch.bfloat16 if trainer.dtype == "bfloat16" else torch.float32, trainer.device,
                                cfg.model, cfg.train.batch_size * cfg.model.block_size, warn=tqdm.write,
                                quick=True)
        self.peak *= trainer.dist.world_size  # tokens/s are the whole job's
        self.flops_per_token = flops_per_token(cfg.model, trainer.model.num_params())
        self.seconds, self.tokens = 0.0, 0

    @contextlib.contextmanager
    def timed(self):
        start = time.perf_counter()
        yield
        self.seconds += time.perf_counter() - start
        self.tokens += self.tokens_per_step

    def take(self) -> dict:
        tok_s = self.tokens / max(self.seconds, 1e-9)
        self.seconds, self.tokens = 0.0, 0
        return {"tokens_per_sec": round(tok_s, 1), "mfu": round(tok_s * self.flops_per_token / self.peak, 4)}
