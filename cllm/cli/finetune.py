"""``cllm finetune``: supervised fine-tuning of a trained run on JSONL conversations (cllm.finetune).

The config is the base run's (its model settings are kept), then fine-tuning defaults (shorter
run, lower learning rate), then ``--config`` and flags. ``--resume`` continues ``--out`` from its
latest checkpoint with the settings saved there (LoRA included).
"""

from __future__ import annotations

from pathlib import Path

# A fine-tuning run is short and gentle compared with pre-training.
DEFAULTS = {"train": {"max_steps": 300, "lr": 3e-4, "warmup_steps": 20, "eval_interval": 50, "save_interval": 100,
                      "log_interval": 10, "sample_tokens": 0, "init_from": ""},
            "data": {"val_fraction": 0.1, "skip_bad_lines": False, "split_seed": 1337}}
LORA_LR = 1e-3  # adapters start at zero and are few: a higher default learning rate


def build_config(args, base: dict, resuming: bool):
    from ..config import Config, apply_dict, flag_overrides, read_toml

    cfg = Config()
    apply_dict(cfg, base, "checkpoint config")
    flags = flag_overrides(args)
    if not resuming:
        apply_dict(cfg, DEFAULTS, "fine-tuning defaults")
        if args.lora_rank and "lr" not in flags.get("train", {}):
            cfg.train.lr = LORA_LR
    if args.config:
        apply_dict(cfg, read_toml(args.config), str(args.config))
    if args.checkpoint:
        flags.setdefault("train", {})["init_from"] = args.checkpoint
    apply_dict(cfg, flags, "flags")
    if not resuming and "min_lr" not in flags.get("train", {}):
        cfg.train.min_lr = cfg.train.lr / 10
    return cfg.validate()


def cmd_finetune(args) -> int:
    from ..checkpoint import load_checkpoint
    from ..errors import CLLMError
    from ..finetune.run import LoraSpec, finetune
    from ..training import load_run_checkpoint

    if not args.out:
        raise CLLMError("cllm finetune needs --out (the fine-tuned run's directory)")
    out = Path(args.out)
    if args.resume:
        checkpoint = load_run_checkpoint(out)
        cfg = build_config(args, checkpoint.config, resuming=True)
        saved = (checkpoint.state.get("finetune") or {}).get("lora")
        lora = LoraSpec(**saved) if saved else None
        if args.lora_rank is not None and (lora.rank if lora else 0) != args.lora_rank:
            raise CLLMError(f"--resume: --lora-rank {args.lora_rank} differs from the run's "
                            f"{lora.rank if lora else 0 } (0: full fine-tuning)")
        if checkpoint.state["step"] >= cfg.train.max_steps:
            print(f"{out} is finished: it has run {checkpoint.state['step']} steps (max_steps {cfg.train.max_steps}); "
                  f"to run it longer: cllm finetune --out {out} --resume --max-steps {2 * checkpoint.state['step']}")
            return 0
    else:
        if not args.checkpoint or not args.data:
            raise CLLMError("cllm finetune needs --checkpoint (the base run) and --data (JSONL conversations)")
        checkpoint = False
        cfg = build_config(args, load_checkpoint(args.checkpoint).config, resuming=False)
        lora = LoraSpec(args.lora_rank, args.lora_alpha if args.lora_alpha is not None else 2.0 * args.lora_rank) \
            if args.lora_rank else None
    result = finetune(cfg, lora=lora, resume=checkpoint, overwrite=args.overwrite)
    if result.interrupted:
        print(f"continue with: cllm finetune --out {out} --resume")
        return 130
    best = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.4f}"
    final = "n/a" if result.val_loss is None else f"{result.val_loss:.4f}"
    print(f"done: {result.step} steps in {result.elapsed:.1f}s, final val loss {final} (assistant tokens), "
          f"best {best}; checkpoint in {out}; chat with: cllm chat --checkpoint {out}")
    return 0


def register(sub) -> None:
    import argparse

    from ..config import add_config_arguments

    p = sub.add_parser("finetune", help="fine-tune a trained run on JSONL conversations (full or LoRA)")
    p.add_argument("--checkpoint", help="the base: a run or checkpoint directory (not needed with --resume)")
    p.add_argument("--data", help='JSONL, one conversation a line: {"messages": [{"role": "system"|"user"|'
                                  '"assistant", "content": ...}]} or {"prompt": ..., "response": ...}')
    p.add_argument("--resume", action="store_true", help="continue --out from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a run")
    p.add_argument("--lora-rank", type=int, help="train rank-r LoRA adapters on the attention and MLP matrices "
                                                 "instead of every weight (merged into the saved weights)")
    p.add_argument("--lora-alpha", type=float, help="LoRA scale numerator: adapters scaled by alpha / rank "
                                                    "[default: 2 x rank]")
    p.add_argument("--skip-bad-lines", dest="skip_bad_lines", action=argparse.BooleanOptionalAction, default=None,
                   help="skip (and count) bad lines instead of stopping at the first")
    p.add_argument("--val-fraction", dest="val_fraction", type=float,
                   help="share of the conversations held out for validation [default: 0.1]")
    p.add_argument("--split-seed", dest="split_seed", type=int, help="seeds the choice of val conversations")
    p.add_argument("--dropout", dest="dropout", type=float, help="dropout while fine-tuning [default: the base run's]")
    p.add_argument("--config", metavar="TOML", help="TOML file with [train] (and [data]) settings")
    add_config_arguments(p, sections=("train",), presets=False)
    p.set_defaults(func=cmd_finetune)
