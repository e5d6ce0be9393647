"""``cllm prepare``: text files, folders and JSONL -> token shards (cllm.data).

Its data flags are generated from ``DataConfig``, as ``cllm train``'s are: one source of truth.
"""

from __future__ import annotations

import argparse
import os
import sys


def cmd_prepare(args) -> int:
    from ..config import Config, apply_dict, flag_overrides
    from ..data import prepare

    cfg = Config()
    apply_dict(cfg, flag_overrides(args), "flags")
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
    from ..config import add_config_arguments

    p = sub.add_parser(
        "prepare", help="tokenise text files, directories or JSONL into train/val token shards",
        description="Tokenise text into token shards plus meta.json. Inputs: text files, directories (read "
                    "recursively; hidden and binary files skipped) and .jsonl files (one document per line). "
                    "Give several with --data A --data B, --data A B, or one value joined by "
                    f"'{os.pathsep}' (os.pathsep). Several documents are split into train/val by whole "
                    "document (seeded); a single document is split at its last --val-fraction of tokens. "
                    "Re-running on unchanged inputs and settings does nothing.")
    p.add_argument("--out", required=True, help="output directory (train.bin, val.bin, ..., tokenizer.json, meta.json)")
    p.add_argument("--block-size", type=int, default=1, help="require at least block_size + 1 tokens per split")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                   help="progress bar in MB/s on stderr (default: when stderr is a terminal)")
    add_config_arguments(p, sections=("data",), presets=False)
    p.set_defaults(func=cmd_prepare)
