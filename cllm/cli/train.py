"""``cllm train``: train a model per the resolved config (cllm.training), then print a sample."""

from __future__ import annotations

import contextlib
from pathlib import Path

from .common import can_encode


def cmd_train(args) -> int:
    from ..config import config_from_args
    from ..training import load_run_checkpoint, train
    from ..training.runlock import run_lock

    checkpoint = None
    with contextlib.ExitStack() as held:
        if args.resume:  # read (and verified) once, under the run's lock: its config is the base flags may change
            out = Path(args.out or "runs/default")
            held.enter_context(run_lock(out, create=False))
            checkpoint = load_run_checkpoint(out)
        cfg = config_from_args(args, base=checkpoint.config if checkpoint else None)
        if checkpoint and checkpoint.state["step"] >= cfg.train.max_steps:
            step = checkpoint.state["step"]
            print(f"{out} is finished: it has run {step} steps (max_steps {cfg.train.max_steps}), nothing to do; "
                  f"to train it longer: cllm train --out {out} --resume --max-steps {2 * step}")
            if not (out / "loss.png").is_file() and (out / "metrics.jsonl").is_file():  # killed while plotting
                from ..training.metrics import plot_losses

                plot_losses(out / "metrics.jsonl", out / "loss.png")
            return 0
        result = train(cfg, resume=checkpoint or False, overwrite=args.overwrite)
    if result.interrupted:
        return 130
    print(f"done: {result.step} steps in {result.elapsed:.1f}s, final val loss {_loss(result.val_loss)}, "
          f"best {_loss(result.best_val_loss)}; checkpoint in {result.out}")
    if cfg.train.sample_tokens:
        print_sample(result.out, cfg.train.sample_tokens, cfg.train.seed)
    return 0


def _loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def print_sample(run: Path, tokens: int, seed: int) -> None:
    """A short sample from the run's latest checkpoint, starting from a newline where the tokenizer has one."""
    from ..checkpoint import load_model
    from ..inference import sample_text

    model, tokenizer, _ = load_model(run)
    prompt = "\n" if can_encode(tokenizer, "\n") else ""
    print("sample:\n" + sample_text(model, tokenizer, prompt, tokens, 0.8, 40, 1.0, seed))


def register(sub) -> None:
    from ..config import add_config_arguments

    p = sub.add_parser("train", help="train a model (default: the small preset on the bundled corpus)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a trained run")
    add_config_arguments(p)
    p.set_defaults(func=cmd_train)
