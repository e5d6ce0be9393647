"""``cllm sample``: generate text from a checkpoint."""

from __future__ import annotations

from .common import read_text_arg


def cmd_sample(args) -> int:
    from ..checkpoint import load_model
    from ..sample import sample_text
    from ..runtime import resolve_device

    model, tokenizer, _ = load_model(args.checkpoint, resolve_device(args.device))
    prompt = read_text_arg(args.prompt, args.prompt_file, "prompt")
    for i in range(args.num_samples):
        text = sample_text(model, tokenizer, prompt, args.max_new_tokens, args.temperature,
                           args.top_k, args.top_p, args.seed + i)
        print(text)
        if i + 1 < args.num_samples:
            print("-" * 40)
    return 0


def register(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    p.add_argument("--prompt", default="")
    p.add_argument("--prompt-file")
    p.add_argument("--max-new-tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_sample)
