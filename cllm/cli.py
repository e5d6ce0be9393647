"""The `cllm` command: prepare, train, sample, eval, bench (and the lattice / tokenizer tools).

Every user-facing failure is a CLLMError (or a bad flag), reported as one line on stderr with exit
code 2; tracebacks are reserved for bugs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import CLLMError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``cllm: error: ...`` and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"cllm: error: {message} (see {self.prog} --help)\n")


def cmd_prepare(args) -> int:
    from .config import Config, DataConfig
    from .data import prepare

    data = DataConfig(
        data=os.pathsep.join(args.data), tokenizer=args.tokenizer, tokenizer_vocab_size=args.tokenizer_vocab_size,
        val_fraction=args.val_fraction, errors=args.errors, text_field=args.text_field,
        skip_bad_lines=args.skip_bad_lines, include=",".join(args.include), exclude=",".join(args.exclude),
        split_seed=args.split_seed, shard_tokens=args.shard_tokens, tokenizer_sample_mb=args.tokenizer_sample_mb,
        workers=args.workers,
    )
    cfg = Config(data=data)
    cfg.model.block_size = args.block_size
    cfg.validate()
    prepared = prepare(cfg.data, args.out, min_tokens=args.block_size + 1, progress=args.progress)
    m = prepared.meta
    shards = len(m["shards"]["train"]) + len(m["shards"]["val"])
    print(f"prepared {prepared.dir}: {m['train_tokens']:,} train + {m['val_tokens']:,} val tokens in {shards} "
          f"shard(s), {m['tokenizer_kind']} tokenizer with {m['vocab_size']} ids ({m['dtype']}), "
          f"split by {m['split']['by']}")
    return 0


def cmd_train(args) -> int:
    from .config import config_from_args
    from .sample import sample_text
    from .train import train

    base = None
    if args.resume:  # the checkpoint's config is the base that flags may change
        from .train import load_run_checkpoint

        base = load_run_checkpoint(Path(args.out or "runs/default"), verify=False).config
    cfg = config_from_args(args, base=base)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if result.interrupted:
        return 130
    print(f"done: {result.step} steps in {result.elapsed:.1f}s, final val loss {result.val_loss:.4f}, "
          f"best {result.best_val_loss:.4f}; checkpoint in {result.out}")
    if cfg.train.sample_tokens:
        from .sample import load_model

        model, tokenizer, _ = load_model(str(result.out))
        prompt = "\n" if _can_encode(tokenizer, "\n") else ""
        print("sample:\n" + sample_text(model, tokenizer, prompt, cfg.train.sample_tokens, 0.8, 40, 1.0, cfg.train.seed))
    return 0


def _can_encode(tokenizer, text: str) -> bool:
    try:
        tokenizer.encode(text)
        return True
    except CLLMError:
        return False


def _read_text_arg(text: str | None, file: str | None, what: str) -> str:
    if file is None:
        return text or ""
    from .data import read_text

    path = Path(file)
    if not path.is_file():
        raise CLLMError(f"{what} file not found: {file}")
    return read_text(path)


def cmd_sample(args) -> int:
    from .sample import load_model, sample_text
    from .runtime import resolve_device

    model, tokenizer, _ = load_model(args.checkpoint, resolve_device(args.device))
    prompt = _read_text_arg(args.prompt, args.prompt_file, "prompt")
    for i in range(args.num_samples):
        text = sample_text(model, tokenizer, prompt, args.max_new_tokens, args.temperature,
                           args.top_k, args.top_p, args.seed + i)
        print(text)
        if i + 1 < args.num_samples:
            print("-" * 40)
    return 0


def cmd_eval(args) -> int:
    from .data import read_text
    from .evaluate import score_text
    from .sample import load_model
    from .runtime import resolve_device

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


def cmd_bench(args) -> int:
    import torch

    from . import bench
    from .config import config_from_args
    from .perf import peak_rss_mb

    cfg = config_from_args(args)
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = bench.bundled_vocab_size()
    torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)
    preset = args.preset or "small"
    summary: dict = {"preset": preset}
    if args.peak:
        peaks = bench.measure_peaks(bench.resolve_device(cfg.train.device))
        for name, flops in peaks.items():
            print(f"matmul peak {name:>8}: {flops / 1e9:8.1f} GFLOP/s")
        summary["peak_gflops"] = {k: round(v / 1e9, 1) for k, v in peaks.items()}
    if args.profile:
        phases = bench.profile_step(cfg)
        total = sum(ms for _, ms in phases)
        print(f"{preset}: one training step, eager, by phase (torch.profiler, mean of 5 steps)")
        for name, ms in phases:
            print(f"  {name:<16} {ms:9.2f} ms  {ms / total:6.1%}")
        print(f"  {'total':<16} {total:9.2f} ms")
        summary["profile_ms"] = {name: round(ms, 3) for name, ms in phases}
    compare = list(dict.fromkeys((args.compare or []) + ([args.baseline] if args.baseline else [])))
    if not (args.peak or args.profile) or compare:
        results = bench.bench_variants(cfg, ["default", *compare], args.warmup, args.steps)
        default = results[0]
        for r in results:
            print(f"{preset} {r.variant:>13} ({r.dtype}{', compiled' if r.compiled else ''}): "
                  f"{r.tokens_per_sec:>10,.0f} tokens/s {r.step_ms:9.1f} ms/step  MFU {r.mfu:6.1%}")
        summary.update(default.as_dict())
        for r in results[1:]:
            ratio = default.tokens_per_sec / r.tokens_per_sec
            print(f"default / {r.variant} = {ratio:.2f}x")
            summary.setdefault("ratio", round(ratio, 2))
            summary.setdefault("compare", {})[r.variant] = {**r.as_dict(), "ratio": round(ratio, 2)}
    summary.update(threads=torch.get_num_threads(), batch_size=cfg.train.batch_size,
                   block_size=cfg.model.block_size, peak_rss_mb=round(peak_rss_mb(), 1))
    if args.json:
        print(json.dumps(summary))
    return 0


def build_parser() -> ArgumentParser:
    from .config import add_config_arguments

    parser = ArgumentParser(prog="cllm", description="Train GPT-style language models from raw text.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True

    p = sub.add_parser(
        "prepare", help="tokenise text files, directories or JSONL into train/val token shards",
        description="Tokenise text into token shards plus meta.json. Inputs: text files, directories (read "
                    "recursively; hidden and binary files skipped) and .jsonl files (one document per line). "
                    "Give several with --data A --data B, --data A B, or one value joined by "
                    f"'{os.pathsep}' (os.pathsep). Several documents are split into train/val by whole "
                    "document (seeded); a single document is split at its last --val-fraction of tokens. "
                    "Re-running on unchanged inputs and settings does nothing.")
    p.add_argument("--data", required=True, action="extend", nargs="+", metavar="PATH",
                   help=f"text file, directory or .jsonl file; repeatable; or several joined by '{os.pathsep}'")
    p.add_argument("--out", required=True, help="output directory (train.bin, val.bin, ..., tokenizer.json, meta.json)")
    p.add_argument("--tokenizer", default="char", help="char | byte | word | bpe (default: char)")
    p.add_argument("--tokenizer-vocab-size", type=int, default=8192, help="ids in all, for word and bpe")
    p.add_argument("--tokenizer-sample-mb", type=int, default=64,
                   help="word/bpe train on an even sample of at most this many MB (char sees everything)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=1337, help="seed of the choice of val documents")
    p.add_argument("--errors", default="strict", choices=["strict", "replace", "skip"],
                   help="invalid UTF-8: stop with file and byte offset | replace with U+FFFD | skip the bad bytes")
    p.add_argument("--text-field", default="text", help="JSONL: the field holding each record's text")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="JSONL: skip lines that are not JSON or lack the field (counted) instead of stopping")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="in directories, read only files whose relative path or name matches (repeatable, or comma-separated)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="in directories, skip files whose relative path or name matches (repeatable, or comma-separated)")
    p.add_argument("--shard-tokens", type=int, default=1 << 26, help="tokens per shard file")
    p.add_argument("--workers", type=int, default=0, help="tokenising processes (0: all cores)")
    p.add_argument("--block-size", type=int, default=1, help="require at least block_size + 1 tokens per split")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                   help="progress bar in MB/s on stderr (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a model (default: the small preset on the bundled corpus)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a trained run")
    add_config_arguments(p)
    p.set_defaults(func=cmd_train)

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

    p = sub.add_parser("eval", help="mean loss, perplexity and bits per byte of a checkpoint on a text file")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="text file to score")
    p.add_argument("--errors", default="strict", choices=["strict", "replace"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="time full training steps (median tokens/s, MFU), peak FLOP/s, profile")
    p.add_argument("--compare", nargs="+", choices=["float32-eager", "per-sequence"],
                   help="also time these variants, interleaved with the default path, and print ratios")
    p.add_argument("--baseline", choices=["per-sequence"], help="same as --compare per-sequence")
    p.add_argument("--peak", action="store_true", help="measure this machine's float32 and bfloat16 GEMM peak")
    p.add_argument("--profile", action="store_true", help="per-phase time of one training step (torch.profiler)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    add_config_arguments(p)
    p.set_defaults(func=cmd_bench)

    for module in ("cllm.tokenizers.cli", "cllm.lattice.cli", "cllm.crystal_analyze"):
        __import__(module, fromlist=["register"]).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLLMError as e:
        print(f"cllm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cllm: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permissions, ...: the user's environment, not a bug
        print(f"cllm: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2


def subcommand_main(command: str, argv: list[str] | None = None) -> int:
    """A command module's stand-alone entry (``python -m cllm.lattice.cli ...``): ``cllm COMMAND ...``.

    ``argv`` may start with COMMAND or leave it out.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(argv if argv[:1] == [command] else [command, *argv])


if __name__ == "__main__":
    sys.exit(main())
