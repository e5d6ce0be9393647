"""``cllm prepare``: text files, folders and JSONL -> token shards (cllm.data)."""

from __future__ import annotations

import argparse
import os
import sys


def cmd_prepare(args) -> int:
    from ..config import Config, DataConfig
    from ..data import prepare

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


def register(sub) -> None:

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
