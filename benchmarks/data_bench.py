"""Data pipeline benchmark: tokenisation throughput per tokenizer, and `cllm prepare` at scale.

    flock /tmp/cllm-bench.lock python benchmarks/data_bench.py encode [PATH] [--runs 3]
    flock /tmp/cllm-bench.lock python benchmarks/data_bench.py generate /tmp/cllm-2g --gb 2
    flock /tmp/cllm-bench.lock python benchmarks/data_bench.py prepare /tmp/cllm-2g --tokenizer bpe --out /tmp/cllm-2g-out

encode: for each kind (char, byte, word, bpe at 8192 ids), train on PATH (default
../shared/data/shakespeare.txt) then time encoding the whole file. bpe is timed cold (a freshly
loaded tokenizer's first call, which is what `cllm prepare` sees), warm (the same text again) and
on the file cut into 1 MB pieces (the way prepare feeds it). Also the full `prepare` of PATH per
kind (one process, so the corpus is below the parallel threshold) with its wall time. MB = 10^6 bytes.

generate: writes a corpus of about --gb GB (10^9 bytes) into a directory: --files JSONL files of
documents made of random runs of lines of PATH (numbered, so documents differ), plus one large
plain-text file (a single document streamed in blocks). Deterministic (seed 0).

prepare: runs `python -m cllm.cli prepare` on it in a subprocess and reports wall time, input MB/s,
and peak memory: the largest resident set of any one process (getrusage), and the largest sums over
the whole process tree (main process + workers) of RSS and of PSS (proportional set size: pages
shared after fork are split among the sharers), sampled from /proc every 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import cpu_name  # noqa: E402
SHAKESPEARE = REPO / ".." / "shared" / "data" / "shakespeare.txt"


def header() -> dict:
    import numpy
    import tokenizers

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "tokenizers": tokenizers.__version__, "numpy": numpy.__version__,
            "loadavg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def cmd_encode(args) -> dict:
    from cllm.config import DataConfig
    from cllm.data import prepare
    from cllm.tokenizers import tokenizer_class, tokenizer_from_json

    path = Path(args.path)
    text = path.read_text(encoding="utf-8")
    mb = len(text.encode("utf-8")) / 1e6
    rows = []
    for kind in ("char", "byte", "word", "bpe"):
        t = time.perf_counter()
        tok = tokenizer_class(kind).train([text], vocab_size=args.vocab_size)
        train_s = time.perf_counter() - t
        spec = tok.to_json()
        colds, warms, pieces = [], [], []
        for _ in range(args.runs):
            fresh = tokenizer_from_json(spec)
            t = time.perf_counter()
            ids = fresh.encode(text)
            colds.append(time.perf_counter() - t)
            t = time.perf_counter()
            fresh.encode(text)
            warms.append(time.perf_counter() - t)
            fresh = tokenizer_from_json(spec)
            chunks = [text[i : i + 1_000_000] for i in range(0, len(text), 1_000_000)]
            t = time.perf_counter()
            fresh.encode_batch(chunks)
            pieces.append(time.perf_counter() - t)
        cold, warm, piece = statistics.median(colds), statistics.median(warms), statistics.median(pieces)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            prepare(DataConfig(data=str(path), tokenizer=kind, tokenizer_vocab_size=args.vocab_size, workers=1),
                    Path(d) / "out")
            prep_s = time.perf_counter() - t
        row = {"kind": kind, "vocab": tok.vocab_size, "tokens": len(ids), "train_s": round(train_s, 3),
               "cold_s": round(cold, 3), "cold_MBps": round(mb / cold, 1), "warm_s": round(warm, 3),
               "warm_MBps": round(mb / warm, 1), "1MB_pieces_cold_MBps": round(mb / piece, 1),
               "prepare_s": round(prep_s, 2), "prepare_MBps": round(mb / prep_s, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"input": str(path), "MB": round(mb, 3), "runs": args.runs, "rows": rows}


def cmd_generate(args) -> dict:
    src = Path(args.path).read_text(encoding="utf-8").splitlines(keepends=True)
    out = Path(args.dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = random.Random(0)
    target = int(args.gb * 1e9)
    big_share = target // 4  # one plain-text file: a single large document
    per_file = (target - big_share) // args.files
    written = 0
    t = time.perf_counter()
    with open(out / "big.txt", "w", encoding="utf-8") as f:
        n = 0
        while n < big_share:
            i = rng.randrange(len(src) - 200)
            block = "".join(src[i : i + rng.randint(20, 200)])
            f.write(block)
            n += len(block)
        written += n
    doc_id = 0
    for k in range(args.files):
        with open(out / f"part-{k:03d}.jsonl", "w", encoding="utf-8") as f:
            n = 0
            while n < per_file:
                i = rng.randrange(len(src) - 400)
                body = f"Document {doc_id}.\n" + "".join(src[i : i + rng.randint(40, 400)])
                line = json.dumps({"id": doc_id, "text": body}) + "\n"
                f.write(line)
                n += len(line)
                doc_id += 1
            written += n
    info = {"dir": str(out), "bytes": sum(p.stat().st_size for p in out.iterdir()), "files": args.files + 1,
            "documents": doc_id + 1, "seconds": round(time.perf_counter() - t, 1)}
    print(json.dumps(info))
    return info


def _tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) bytes summed over ``pid`` and all its descendants (from /proc). Forked workers
    share their parent's pages, which RSS counts once per process and PSS divides among them."""
    rss = pss = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return rss, pss


def cmd_prepare(args) -> dict:
    from cllm.data import resolve_sources

    src_bytes = sum(s.size for s in resolve_sources(args.dir, quiet=True))
    cmd = [sys.executable, "-m", "cllm", "prepare", "--data", args.dir, "--out", args.out, "--tokenizer",
           args.tokenizer, "--workers", str(args.workers), "--no-progress", *args.extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    peak = [0, 0]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)

    def sample():
        while proc.poll() is None:
            rss, pss = _tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    wall = time.perf_counter() - t
    th.join()
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    meta = json.loads((Path(args.out) / "meta.json").read_text()) if rc == 0 else {}
    info = {"command": " ".join(cmd), "rc": rc, "wall_s": round(wall, 1), "input_MB": round(src_bytes / 1e6, 1),
            "MBps": round(src_bytes / 1e6 / wall, 2), "peak_rss_one_process_MB": round(maxrss / 1e6),
            "peak_rss_sum_process_tree_MB": round(peak[0] / 1e6), "peak_pss_process_tree_MB": round(peak[1] / 1e6),
            "tokenizer_s": meta.get("tokenizer_training", {}).get("seconds"),
            "encode_s": meta.get("encoding", {}).get("seconds"),
            "train_tokens": meta.get("train_tokens"), "val_tokens": meta.get("val_tokens"),
            "shards": {k: len(v) for k, v in meta.get("shards", {}).items()},
            "documents": meta.get("split", {}).get("documents"), "tokenizer_training": meta.get("tokenizer_training")}
    print(json.dumps(info))
    if rc == 0 and args.rerun:
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True)
        info["cached_rerun_s"] = round(time.perf_counter() - t, 2)
        print(json.dumps({"cached_rerun_s": info["cached_rerun_s"]}))
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode")
    e.add_argument("path", nargs="?", default=str(SHAKESPEARE))
    e.add_argument("--runs", type=int, default=3)
    e.add_argument("--vocab-size", type=int, default=8192)
    g = sub.add_parser("generate")
    g.add_argument("dir")
    g.add_argument("--gb", type=float, default=2.0)
    g.add_argument("--files", type=int, default=24)
    g.add_argument("--path", default=str(SHAKESPEARE))
    p = sub.add_parser("prepare")
    p.add_argument("dir")
    p.add_argument("--out", required=True)
    p.add_argument("--tokenizer", default="bpe")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--rerun", action="store_true", help="run again to time the cached no-op")
    p.add_argument("extra", nargs="*", help="more `cllm prepare` flags (after --)")
    p.add_argument("--json", help="also write the result here")
    for q in (e, g):
        q.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    result = {"machine": header(), **{"encode": cmd_encode, "generate": cmd_generate, "prepare": cmd_prepare}[args.cmd](args)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
