"""``cllm train``: train a model per the resolved config (cllm.train), then print a sample."""

from __future__ import annotations

from pathlib import Path

from .common import can_encode


def cmd_train(args) -> int:
    from ..config import config_from_args
    from ..sample import sample_text
    from ..train import train

    base = None
    if args.resume:  # the checkpoint's config is the base that flags may change
        from ..train import load_run_checkpoint

        base = load_run_checkpoint(Path(args.out or "runs/default"), verify=False).config
    cfg = config_from_args(args, base=base)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if result.interrupted:
        return 130
    print(f"done: {result.step} steps in {result.elapsed:.1f}s, final val loss {result.val_loss:.4f}, "
          f"best {result.best_val_loss:.4f}; checkpoint in {result.out}")
    if cfg.train.sample_tokens:
        from ..checkpoint import load_model

        model, tokenizer, _ = load_model(str(result.out))
        prompt = "\n" if can_encode(tokenizer, "\n") else ""
        print("sample:\n" + sample_text(model, tokenizer, prompt, cfg.train.sample_tokens, 0.8, 40, 1.0, cfg.train.seed))
    return 0


def register(sub) -> None:
    from ..config import add_config_arguments

    p = sub.add_parser("train", help="train a model (default: the small preset on the bundled corpus)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a trained run")
    add_config_arguments(p)
    p.set_defaults(func=cmd_train)
