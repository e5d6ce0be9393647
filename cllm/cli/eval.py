"""``cllm eval``: loss, perplexity and bits per byte of a checkpoint on a text file."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CLLMError


def cmd_eval(args) -> int:
    from ..data import read_text
    from ..evaluate import score_text
    from ..checkpoint import load_model
    from ..runtime import resolve_device

    model, tokenizer, _ = load_model(args.checkpoint, resolve_device(args.device))
    path = Path(args.data)
    if not path.is_file():
        raise CLLMError(f"data file not found: {path}")
    text = read_text(path, args.errors)
    if not text:
        raise CLLMError(f"data file is empty: {path}")
    scores = score_text(model, tokenizer, text)
    if args.json:
        print(json.dumps(scores))
    else:
        print(f"{path}: loss {scores['loss']:.4f} nats/token, perplexity {scores['perplexity']:.3f}, "
              f"{scores['bits_per_byte']:.4f} bits/byte over {scores['tokens']:,} tokens")
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="mean loss, perplexity and bits per byte of a checkpoint on a text file")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="text file to score")
    p.add_argument("--errors", default="strict", choices=["strict", "replace"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)
