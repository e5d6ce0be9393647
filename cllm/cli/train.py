"""``cllm train``: train a model per the resolved config (cllm.training), then print a sample."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from .common import can_encode


def cmd_train(args) -> int:
    from ..config import config_from_args
    from ..training import load_run_checkpoint, train
    from ..training import distributed
    from ..training.runlock import run_lock

    if not distributed.launched():
        nproc = _launch_nproc(args)
        if nproc > 1 or args.nnodes > 1:  # start N workers running this same command (torchrun's launcher)
            return distributed.launch(sys.argv[1:], nproc, args.nnodes, args.node_rank, args.rdzv_endpoint,
                                      args.max_restarts)
    elif distributed.restart_count() and not args.resume and _has_checkpoint(args.out):
        args.resume, args.overwrite = True, False  # an elastic restart continues from the latest checkpoint
        if os.environ.get("RANK") == "0":
            print(f"cllm: restart {distributed.restart_count()}: resuming from the latest checkpoint", flush=True)
    checkpoint = None
    with contextlib.ExitStack() as held:
        held.enter_context(distributed.peer_errors())  # a dead rank: one line, not a traceback per rank
        if args.resume:  # read (and verified) once, under the run's lock: its config is the base flags may change
            out = Path(args.out or "runs/default")
            held.enter_context(run_lock(out, create=False))
            checkpoint = load_run_checkpoint(out)
        cfg = config_from_args(args, base=checkpoint.config if checkpoint else None)
        if checkpoint and checkpoint.state["step"] >= cfg.train.max_steps:
            from ..training.loop import check_resume_compatible

            check_resume_compatible(cfg, checkpoint.config)  # contradicting flags are an error even so
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
    if os.environ.get("RANK", "0") != "0":  # rank 0 alone reports (distributed runs)
        return 0
    print(f"done: {result.step} steps in {result.elapsed:.1f}s, final val loss {_loss(result.val_loss)}, "
          f"best {_loss(result.best_val_loss)}; checkpoint in {result.out}")
    if cfg.train.sample_tokens:
        print_sample(result.out, cfg.train.sample_tokens, cfg.train.seed)
    return 0


def _launch_nproc(args) -> int:
    """--nproc, else the value in --config / the preset, else (resuming) the checkpoint's."""
    from ..checkpoint import STATE_FILE, resolve_checkpoint
    from ..config import config_from_args
    from ..errors import CLLMError

    if args.nproc is not None:
        return args.nproc
    base = None
    if args.resume:
        with contextlib.suppress(CLLMError, OSError, ValueError, KeyError):  # the worker reports a bad checkpoint
            state = json.loads((resolve_checkpoint(args.out or "runs/default") / STATE_FILE).read_text("utf-8"))
            base = state["config"]
    return config_from_args(args, base=base).train.nproc


def _has_checkpoint(out: str | None) -> bool:
    from ..checkpoint import resolve_checkpoint
    from ..errors import CLLMError

    try:
        resolve_checkpoint(out or "runs/default")
        return True
    except CLLMError:
        return False


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

    p = sub.add_parser("train", help="train a model (default: the quickstart preset on the bundled corpus)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a trained run")
    launch = p.add_argument_group("several machines (with --nproc: processes per machine)")
    launch.add_argument("--nnodes", type=int, default=1, help="machines in the job [default: 1]")
    launch.add_argument("--node-rank", type=int, default=0, help="this machine's index, 0 .. nnodes-1 [default: 0]")
    launch.add_argument("--rdzv-endpoint", default="", metavar="HOST:PORT",
                        help="where the machines meet (a host of the job, a free port); needed with --nnodes > 1")
    launch.add_argument("--max-restarts", type=int, default=0,
                        help="restart all processes this often when one fails; they resume from the latest "
                             "checkpoint [default: 0]")
    add_config_arguments(p, default_preset="quickstart")
    p.set_defaults(func=cmd_train)
