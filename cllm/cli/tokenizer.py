"""``cllm tokenizer ...``: train, encode, decode and measure tokenizers from the command line.

``cllm.cli`` calls :func:`register`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from ..data.sources import iter_documents, read_text
from ..errors import CLLMError
from ..tokenizers import TOKENIZERS, UNK_ID, load_tokenizer, save_tokenizer, tokenizer_class

# One implementation of file finding and reading serves `cllm prepare` and these tools:
# read_text(path) decodes one file (strict
# UTF-8, the error names the file and byte offset), iter_documents(path) yields each document (a text
# file, or a line of a .jsonl file). They live in cllm.data.sources, which does not import torch.


def _positive(name: str, minimum: int = 1):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be at least {minimum}, got {v}")
        return v

    return parse


def parse_ids(s: str) -> list[int]:
    """``"1 2 3"``, ``"1,2,3"`` or ``"[1, 2, 3]"`` -> ``[1, 2, 3]``."""
    body = s.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    fields = [f for f in re.split(r"[\s,]+", body) if f]
    try:
        return [int(f) for f in fields]
    except ValueError:
        bad = next(f for f in fields if not re.fullmatch(r"[+-]?\d+", f))
        raise CLLMError(f"--ids: {bad!r} is not an integer token id") from None


def cmd_train(args) -> int:
    cls = tokenizer_class(args.kind)
    options = {"lowercase": args.lowercase}
    if args.vocab_size is not None:
        options["vocab_size"] = args.vocab_size
    if args.min_freq is not None:
        options["min_freq"] = args.min_freq
    tok = cls.train(iter_documents(args.data), **options)
    try:
        save_tokenizer(tok, args.out)
    except OSError as e:
        raise CLLMError(f"cannot write {args.out}: {e.strerror}") from None
    print(f"trained {tok.kind} tokenizer: vocab_size={tok.vocab_size} fingerprint={tok.fingerprint()} -> {args.out}")
    return 0


def cmd_encode(args) -> int:
    tok = load_tokenizer(args.tokenizer)
    if args.text is not None:
        text = args.text
    elif Path(args.file).is_file():
        text = read_text(Path(args.file))
    else:
        raise CLLMError(f"file not found: {args.file}")
    ids = tok.encode(text).tolist()
    print(json.dumps(ids) if args.json else " ".join(map(str, ids)))
    return 0


def cmd_decode(args) -> int:
    tok = load_tokenizer(args.tokenizer)
    sys.stdout.write(tok.decode(parse_ids(args.ids)) + "\n")
    return 0


def tokenizer_stats(tok, documents) -> dict:
    """Tokens per byte, vocabulary coverage (fraction of ids used) and <unk> rate over documents."""
    n_bytes = n_chars = n_tokens = n_unk = n_docs = 0
    used = np.zeros(tok.vocab_size, dtype=bool)
    for text in documents:
        ids = tok.encode_with_unk(text)
        n_docs += 1
        n_bytes += len(text.encode("utf-8", "surrogatepass"))
        n_chars += len(text)
        n_tokens += len(ids)
        n_unk += int(np.count_nonzero(ids == UNK_ID))
        used[ids] = True
    return {
        "kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "fingerprint": tok.fingerprint(),
        "documents": n_docs,
        "bytes": n_bytes,
        "chars": n_chars,
        "tokens": n_tokens,
        "tokens_per_byte": n_tokens / n_bytes if n_bytes else 0.0,
        "bytes_per_token": n_bytes / n_tokens if n_tokens else 0.0,
        "vocab_used": int(used.sum()),
        "vocab_coverage": float(used.sum()) / tok.vocab_size,
        "unknown_tokens": n_unk,
        "unknown_rate": n_unk / n_tokens if n_tokens else 0.0,
    }


def cmd_stats(args) -> int:
    tok = load_tokenizer(args.tokenizer)
    print(json.dumps(tokenizer_stats(tok, iter_documents(args.data)), indent=2))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``tokenizer`` command (with train/encode/decode/stats) to an argparse subparsers object."""
    p = subparsers.add_parser("tokenizer", help="train, inspect and use tokenizers")
    sub = p.add_subparsers(dest="tokenizer_command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train a tokenizer on a text file or a directory of text files")
    t.add_argument("--data", required=True, help="a UTF-8 text file, or a directory read recursively")
    t.add_argument("--kind", required=True, choices=sorted(TOKENIZERS))
    t.add_argument("--vocab-size", type=_positive("--vocab-size"), help="ids in all, specials included (word, bpe)")
    t.add_argument("--min-freq", type=_positive("--min-freq", 0), help="minimum count (word: of a token; bpe: of a merge)")
    t.add_argument("--lowercase", action="store_true", help="fold case before training and encoding")
    t.add_argument("--out", required=True, help="where to write the tokenizer JSON")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("encode", help="print the token ids of a text")
    e.add_argument("--tokenizer", required=True)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--text")
    src.add_argument("--file")
    e.add_argument("--json", action="store_true", help="print a JSON list instead of space-separated ids")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="print the text of token ids")
    d.add_argument("--tokenizer", required=True)
    d.add_argument("--ids", required=True, help='ids separated by spaces or commas, e.g. "5 9 12"')
    d.set_defaults(func=cmd_decode)

    s = sub.add_parser("stats", help="tokens per byte, vocabulary coverage and <unk> rate, as JSON")
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--data", required=True)
    s.set_defaults(func=cmd_stats)
    return p
