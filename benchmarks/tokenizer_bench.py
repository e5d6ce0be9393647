"""Tokenizer benchmark: training time and encode throughput (MB/s) of every kind on one text file.

    flock /tmp/cllm-bench.lock python benchmarks/tokenizer_bench.py [PATH] [--runs 5] [--vocab-size 8192]

PATH defaults to ../shared/data/shakespeare.txt relative to the repository. Each figure is the
median of --runs timed runs after one untimed warm-up run. MB = 10^6 bytes of UTF-8 input.

For bpe, encoding reuses a cache of space-delimited pieces, so several figures are given:
  cold    a freshly loaded tokenizer (empty cache) encoding the whole file once;
  warm    the same text again (every piece cached) - the usual warm-up + median figure;
  unseen  the second half of the file after the first half was encoded (cache warmed on other text);
  hf      plain HF ``encode_batch_fast`` over newline-safe chunks, without our piece cache (baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cllm.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, WordTokenizer  # noqa: E402
from cllm.tokenizers.bpe import safe_chunks  # noqa: E402
from common import cpu_name, median_seconds as timed  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default=str(REPO / ".." / "shared" / "data" / "shakespeare.txt"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    text = Path(args.path).read_text(encoding="utf-8")
    mb = len(text.encode("utf-8")) / 1e6
    half = len(text) // 2
    runs = args.runs
    rows = []

    def add(kind, what, seconds, **extra):
        rows.append({"kind": kind, "what": what, "seconds": seconds, "MB_per_s": mb / seconds if what.startswith("encode") else None, **extra})

    train_runs = max(1, min(runs, 3))
    makers = {
        "char": lambda: CharTokenizer.train([text]),
        "byte": lambda: ByteTokenizer.train([text]),
        "word": lambda: WordTokenizer.train([text], vocab_size=args.vocab_size, min_freq=1),
        "bpe": lambda: BPETokenizer.train([text], vocab_size=args.vocab_size),
    }
    toks = {}
    for kind, make in makers.items():
        toks[kind] = make()
        if kind in ("word", "bpe"):
            add(kind, "train", timed(make, train_runs, warmup=0))

    for kind, tok in toks.items():
        n_tokens = len(tok.encode(text))
        what = "encode (warm)" if kind == "bpe" else "encode"
        add(kind, what, timed(lambda: tok.encode(text), runs), vocab_size=tok.vocab_size, tokens=n_tokens)

    bpe = toks["bpe"]
    spec = bpe.to_dict()

    def cold():
        fresh = BPETokenizer.from_dict(spec)
        t = time.perf_counter()
        fresh.encode(text)
        return time.perf_counter() - t

    add("bpe", "encode (cold)", statistics.median(cold() for _ in range(runs)))

    def unseen():
        fresh = BPETokenizer.from_dict(spec)
        fresh.encode(text[:half])
        t = time.perf_counter()
        fresh.encode(text[half:])
        return time.perf_counter() - t

    unseen_s = statistics.median(unseen() for _ in range(runs))
    rows.append({"kind": "bpe", "what": "encode (unseen 2nd half)", "seconds": unseen_s,
                 "MB_per_s": len(text[half:].encode("utf-8")) / 1e6 / unseen_s})
    chunks = safe_chunks(text, 1 << 15)
    add("bpe", "encode (hf baseline)", timed(lambda: bpe._hf.encode_batch_fast(chunks, add_special_tokens=False), runs))

    info = {
        "file": str(Path(args.path).resolve()), "MB": mb, "runs": runs, "cpu": cpu_name(),
        "cores": os.cpu_count(), "python": platform.python_version(),
    }
    print(f"# {info['file']}: {mb:.2f} MB; {info['cpu']}, {info['cores']} cores; median of {runs} runs")
    print("| kind | measurement | seconds | MB/s | vocab | tokens |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        mbs = f"{r['MB_per_s']:.1f}" if r["MB_per_s"] else ""
        print(f"| {r['kind']} | {r['what']} | {r['seconds']:.3f} | {mbs} | {r.get('vocab_size', '')} | {r.get('tokens', '')} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
