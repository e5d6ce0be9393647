"""Time-to-quality: wall time of a whole `cllm train --preset speedrun` process and its val loss.

The target (docs/SPEEDRUN.md): character-level Shakespeare, validation = the last 10 % of
../shared/data/shakespeare.txt scored on every token, val loss <= 1.89 within 30 s of wall time
on 2 CPU cores. Data preparation is done once beforehand (cached), as the target allows; the
timed process includes Python start-up, torch import, model build, training and the final
full-validation evaluation.

    python benchmarks/speedrun.py                  # 3 seeds of the speedrun preset
    python benchmarks/speedrun.py --seeds 1 -- --lr 3e-3 --max-steps 800   # try a change
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "shakespeare.txt"
TARGET_LOSS, TARGET_SECONDS = 1.89, 30.0


def cllm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cllm", *args], capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--preset", default="speedrun")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cllm-speedrun-data")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("extra", nargs="*", help="flags passed to cllm train (after --)")
    args = parser.parse_args()

    prep = cllm("prepare", "--data", str(args.corpus), "--out", str(args.data_dir))
    if prep.returncode:
        print(prep.stderr.strip(), file=sys.stderr)
        return 2
    runs = []
    for seed in range(1, args.seeds + 1):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            r = cllm("train", "--preset", args.preset, "--data", str(args.data_dir), "--out", out, "--seed", str(seed),
                     "--no-progress", "--sample-tokens", "0", *args.extra)
            wall = time.perf_counter() - start
            if r.returncode:
                print(r.stderr.strip(), file=sys.stderr)
                return 2
            records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        val = [rec for rec in records if rec["val_loss"] is not None][-1]
        runs.append({"seed": seed, "wall_s": round(wall, 2), "val_loss": round(val["val_loss"], 4),
                     "steps": val["step"], "train_s": round(val["elapsed"], 2)})
        hit = val["val_loss"] <= TARGET_LOSS and wall <= TARGET_SECONDS
        print(f"seed {seed}: {wall:6.1f} s wall, val loss {val['val_loss']:.4f} after {val['step']} steps"
              f" -> {'target met' if hit else 'target missed'}", flush=True)
    walls, losses = [r["wall_s"] for r in runs], [r["val_loss"] for r in runs]
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
    print(f"wall time {statistics.mean(walls):.1f} ± {spread(walls):.1f} s, "
          f"val loss {statistics.mean(losses):.4f} ± {spread(losses):.4f} over {len(runs)} seeds "
          f"(target: <= {TARGET_LOSS} in <= {TARGET_SECONDS:.0f} s)")
    if args.json:
        print(json.dumps({"preset": args.preset, "extra": args.extra, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
