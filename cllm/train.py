"""The training loop: batches -> model -> loss -> optimizer -> checkpoint, resumable exactly.

One step = ``grad_accum`` micro-batches of ``[batch_size, block_size]`` tokens, each forward and
backward in one batched call, then global-norm clipping and one update (AdamW, or Muon for the
blocks' matrices with AdamW for the rest). Every source of
randomness (python, numpy, torch, the batch sampler) is seeded and saved in each checkpoint, so an
interrupted and resumed run produces the same losses as an uninterrupted one (on CPU, eager
or compiled, float32 or bf16).
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import BEST, LATEST, Checkpoint, load_checkpoint, save_checkpoint
from .config import Config, TrainConfig
from .data import Batches, PreparedData, load_prepared, prepare
from .errors import CLLMError
from .evaluate import score_ids
from .model import GPT
from .optim import Muon, OptimizerSet
from .perf import flops_per_token, matmul_peak
from .runtime import apply_activation_checkpointing, autocast, compile_model, deterministic_cpu_kernels, resolve_device, resolve_dtype

# Settings that may differ between a checkpoint and the run resuming it: how long to run, how
# often to log, evaluate and save, and where/how fast to compute. Everything else must match.
RESUMABLE_CHANGES = {
    "out", "max_steps", "eval_interval", "eval_batches", "log_interval", "save_interval",
    "progress", "sample_tokens", "threads", "device", "dtype", "compile", "activation_checkpointing", "workers",
}


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


@torch.no_grad()
def evaluate(model: GPT, tokens, cfg: Config, device: torch.device, seed: int, dtype: str) -> float:
    """Mean validation loss: over ``eval_batches`` batches drawn by a fresh generator (the same batches
    every call), or with eval_batches = 0 over every token of the split.

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


def _rng_state(batches: Batches) -> dict:
    return {
        "python": random.getstate(),
        "numpy": [v.tolist() if isinstance(v, np.ndarray) else v for v in np.random.get_state()],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "batches": batches.state(),
    }


def _set_rng_state(state: dict, batches: Batches) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()))
    batches.set_state(state["batches"])


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


def load_data(cfg: Config, out: Path) -> PreparedData:
    """A prepared dataset directory is used as is; raw text is prepared (cached) into ``out/data``."""
    from .data import split_paths

    paths = split_paths(cfg.data.data)
    if len(paths) == 1 and (Path(paths[0]) / "meta.json").is_file():
        data = load_prepared(paths[0])
        need = cfg.model.block_size + 1
        for split in ("train", "val"):
            if max((n for _, n in data.meta["shards"][split]), default=0) < need:
                raise CLLMError(f"prepared dataset {paths[0]} has no {split} shard of block_size + 1 = {need} tokens")
        return data
    return prepare(cfg.data, out / "data", min_tokens=cfg.model.block_size + 1, progress=cfg.train.progress)


def train(cfg: Config, resume: bool = False, log=print, on_step=None, overwrite: bool = False) -> TrainResult:
    """Train per ``cfg`` into ``cfg.train.out``; with ``resume``, continue from its latest checkpoint.

    A fresh run refuses a directory that already holds a checkpoint unless ``overwrite`` is set, so
    an earlier run is never replaced by accident.

    ``on_step(step, loss)``, if given, is called after every optimizer step (a hook for notebooks and
    tests); SIGINT/SIGTERM during training save a checkpoint and return with ``interrupted`` set.
    """
    t = cfg.train
    out = Path(t.out)
    ckpt: Checkpoint | None = None
    if resume:
        ckpt = load_run_checkpoint(out)
    elif not overwrite and any((out / name / "trainer_state.json").exists() for name in (LATEST, BEST)):
        raise CLLMError(f"{out} already holds a trained run: pass --resume to continue it, --overwrite to "
                        "replace it, or a different --out")
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    device = resolve_device(t.device)
    random.seed(t.seed)
    np.random.seed(t.seed)
    torch.manual_seed(t.seed)

    data = load_data(cfg, out)
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = data.tokenizer.vocab_size
    elif cfg.model.vocab_size < data.tokenizer.vocab_size:
        raise CLLMError(f"vocab_size {cfg.model.vocab_size} is smaller than the tokenizer's {data.tokenizer.vocab_size}")
    if ckpt:
        check_resume_compatible(cfg, ckpt.config)
    if ckpt and ckpt.state.get("data_fingerprint") != data.fingerprint:
        raise CLLMError("--resume: the training data or tokenizer changed since the checkpoint was written")

    dtype = resolve_dtype(t.dtype, device)
    model = GPT(cfg.model)
    if ckpt:
        ckpt.load_weights(model)
    model.to(device).train()
    if t.activation_checkpointing:
        apply_activation_checkpointing(model)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for any float32 matmul left outside autocast
    forward = compile_model(model, t.compile, log)
    optimizer = make_optimizer(model, t)
    batches = Batches(data.shards("train"), t.batch_size, cfg.model.block_size, t.seed, device)
    val_tokens = data.shards("val")
    step, tokens_seen, elapsed_before, best_val = 0, 0, 0.0, None
    if ckpt:
        try:
            optimizer.load_state_dict(ckpt.optimizer_state())
        except (ValueError, KeyError, RuntimeError) as e:
            raise CLLMError(f"optimizer state in {ckpt.dir} does not match the model: {e}") from None
        _set_rng_state(ckpt.state["rng"], batches)
        step, tokens_seen = ckpt.state["step"], ckpt.state["tokens_seen"]
        elapsed_before, best_val = ckpt.state["elapsed"], ckpt.state["best_val_loss"]

    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    _truncate_metrics(metrics_path, keep_through=step)
    log(f"cllm: {'resuming at step ' + str(step) if ckpt else 'training'} on {device} in {dtype}"
        f"{' (compiled)' if forward is not model else ''}: {model.num_params() / 1e6:.2f}M parameters, "
        f"{data.meta['train_tokens']:,} train tokens")
    log("config: " + json.dumps(cfg.to_dict()))

    run_start = time.perf_counter()

    def elapsed_now() -> float:
        """Wall time of the whole run so far, earlier sessions of a resumed run included."""
        return elapsed_before + time.perf_counter() - run_start

    def state() -> dict:
        return {
            "step": step, "tokens_seen": tokens_seen, "elapsed": elapsed_now(), "best_val_loss": best_val,
            "config": cfg.to_dict(), "data_fingerprint": data.fingerprint, "rng": _rng_state(batches),
        }

    result = TrainResult(out=out, step=step, best_val_loss=best_val)
    tokens_per_step = t.batch_size * t.grad_accum * cfg.model.block_size
    peak = matmul_peak(torch.bfloat16 if dtype == "bfloat16" else torch.float32, device)
    model_flops = flops_per_token(cfg.model, model.num_params())

    def micro_steps() -> float:
        """Forward and backward over grad_accum micro-batches; returns the mean loss."""
        loss_sum = 0.0
        for _ in range(t.grad_accum):
            x, y = batches.get()
            with autocast(device, dtype):
                _, loss = forward(x, y)
            (loss / t.grad_accum).backward()
            loss_sum += loss.item()
        return loss_sum / t.grad_accum

    bar = tqdm(total=t.max_steps, initial=step, disable=not t.progress, unit="step", dynamic_ncols=True)
    # tokens/s counts time spent in training steps only; "elapsed" is wall time, evals and saves included.
    window_time, window_tokens = 0.0, 0
    with _StopSignal() as stop, open(metrics_path, "a", encoding="utf-8") as metrics, \
            deterministic_cpu_kernels(device):
        while step < t.max_steps:
            step_start = time.perf_counter()
            lr = lr_at(step, t)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr / t.lr
            if forward is model:
                train_loss = micro_steps()
            else:  # the first compiled call compiles; if no working compiler turns up, go on eagerly
                batch_state = batches.state()
                try:
                    train_loss = micro_steps()
                except Exception as e:  # torch._dynamo wraps compiler failures in many types
                    bar.write(f"note: torch.compile failed ({type(e).__name__}); continuing eagerly")
                    forward = model
                    optimizer.zero_grad(set_to_none=True)
                    batches.set_state(batch_state)
                    train_loss = micro_steps()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += tokens_per_step
            window_tokens += tokens_per_step
            window_time += time.perf_counter() - step_start
            result.losses.append(train_loss)
            bar.update(1)
            if on_step is not None:
                on_step(step, train_loss)

            val_loss = None
            if step % t.eval_interval == 0 or step == t.max_steps:
                val_loss = evaluate(model, val_tokens, cfg, device, t.seed + 1, dtype)
                result.val_loss = val_loss
                if best_val is None or val_loss < best_val:
                    best_val = val_loss
                    save_checkpoint(out / BEST, model, data.tokenizer, state())
                bar.write(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f} "
                          f"(perplexity {math.exp(val_loss):.2f})")
            if step % t.log_interval == 0 or val_loss is not None or step == t.max_steps:
                tok_s = window_tokens / max(window_time, 1e-9)
                window_time, window_tokens = 0.0, 0
                mfu = tok_s * model_flops / peak
                record = {"step": step, "loss": train_loss, "val_loss": val_loss, "lr": lr,
                          "tokens_per_sec": round(tok_s, 1), "mfu": round(mfu, 4), "tokens": tokens_seen,
                          "elapsed": round(elapsed_now(), 3)}
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                bar.set_postfix(loss=f"{train_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}", mfu=f"{mfu:.0%}")
            if step % t.save_interval == 0 or step == t.max_steps or stop.received:
                save_checkpoint(out / LATEST, model, data.tokenizer, state(), optimizer)
            if stop.received:
                result.interrupted = True
                bar.write(f"interrupted at step {step}: checkpoint saved in {out / LATEST}; "
                          f"continue with: cllm train --out {out} --resume")
                break
    bar.close()
    result.step, result.best_val_loss, result.elapsed = step, best_val, elapsed_now()
    if not result.interrupted:
        plot_losses(metrics_path, out / "loss.png")
    return result


def _truncate_metrics(path: Path, keep_through: int) -> None:
    """Drop metric lines past the step being resumed from, so a resumed log reads as one run."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= keep_through]
    path.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    """Train and val loss against tokens seen, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(ln) for ln in metrics_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not records:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["tokens"] for r in records], [r["loss"] for r in records], label="train", lw=1)
    val = [r for r in records if r.get("val_loss") is not None]
    if val:
        ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", label="val")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
