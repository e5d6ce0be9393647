"""Data-parallel training on this CPU: 2 processes x 1 thread against 1 process x 2 threads.

Each variant is a real ``cllm train`` run (default path: compiled, bf16 where the CPU has it) on the
bundled corpus; tokens/s is read from its metrics.jsonl (time inside training steps only), leaving
out the first ``--warmup`` logged intervals (compilation). Two comparisons per preset:

  * same global batch: 2 x (batch / 2) sequences against 1 x batch (the same run, faster or not);
  * same per-process batch: 2 x batch against 1 x batch (twice the work per step);
  * the ceiling: two independent one-thread runs at once (no communication, tokens/s summed), the
    most any data parallelism over these two cores could reach.

Variants run one after another, alternating, ``--rounds`` times; the best round of each is kept.

    python benchmarks/ddp.py                      # small and base, 1 round
    python benchmarks/ddp.py --presets small --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402

STEPS = {"small": 120, "base": 40}
LOG_EVERY = {"small": 20, "base": 5}
BATCH = {"small": 12, "base": 8}


def train_cmd(preset: str, out: Path, nproc: int, threads: int, batch: int, steps: int, log_every: int,
              extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "cllm", "train", "--preset", preset, "--out", str(out), "--max-steps", str(steps),
            "--batch-size", str(batch), "--log-interval", str(log_every), "--eval-interval", str(10 * steps),
            "--save-interval", str(10 * steps), "--sample-tokens", "0", "--no-progress",
            "--threads", str(threads), "--nproc", str(nproc), *extra]


def tokens_per_sec(out: Path, warmup: int, log_every: int) -> float:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r["tokens_per_sec"] for r in records if r["step"] > warmup * log_every]
    return sum(timed) / len(timed)


def run(preset: str, nproc: int, batch: int, steps: int, log_every: int, warmup: int, extra: list[str],
        independent: bool = False) -> dict:
    """One variant. independent: ``nproc`` separate one-process runs at once, no communication at
    all, their tokens/s summed: the most data parallelism could reach with these cores."""
    threads = 2 // nproc
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"run{i}" for i in range(nproc if independent else 1)]
        cmds = [train_cmd(preset, out, 1 if independent else nproc, threads, batch, steps, log_every, extra)
                for out in outs]
        start = time.perf_counter()
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in cmds]
        for cmd, proc in zip(cmds, procs):
            _, stderr = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr[-2000:]}")
        wall = time.perf_counter() - start
        tps = sum(tokens_per_sec(out, warmup, log_every) for out in outs)
    return {"preset": preset, "nproc": nproc, "threads": threads, "batch_per_process": batch,
            "tokens_per_sec": round(tps, 1), "wall_s": round(wall, 1), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "base"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1, help="logged intervals left out (compilation)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("extra", nargs="*", help="more cllm train flags, after --")
    args = parser.parse_args()
    os.environ.pop("RANK", None)
    print(f"{cpu_name()}, {os.cpu_count()} cores")
    results = []
    for preset in args.presets:
        b = BATCH[preset]
        variants = {  # name -> (nproc, per-process batch, independent runs)
            "1 proc x 2 threads, batch B": (1, b, False),
            "2 procs x 1 thread, batch B/2 each (same global batch)": (2, b // 2, False),
            "2 procs x 1 thread, batch B each": (2, b, False),
            "ceiling: 2 independent 1-thread runs, batch B each, no communication": (2, b, True),
        }
        best: dict[str, dict] = {}
        for _ in range(args.rounds):
            for name, (nproc, batch, independent) in variants.items():
                r = run(preset, nproc, batch, STEPS[preset], LOG_EVERY[preset], args.warmup, args.extra, independent)
                if name not in best or r["tokens_per_sec"] > best[name]["tokens_per_sec"]:
                    best[name] = {**r, "variant": name}
        base = best["1 proc x 2 threads, batch B"]["tokens_per_sec"]
        print(f"\n{preset} (B = {b}, {STEPS[preset]} steps):")
        for name, r in best.items():
            r["ratio"] = round(r["tokens_per_sec"] / base, 3)
            print(f"  {name:72s} {r['tokens_per_sec']:>10,.0f} tok/s  {r['ratio']:.2f}x  (wall {r['wall_s']} s)")
            results.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
