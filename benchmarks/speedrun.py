"""Time-to-quality: wall time of a whole `cllm train --preset speedrun` process and its val loss.

The target (docs/SPEEDRUN.md): character-level Shakespeare, validation = the last 10 % of
../shared/data/shakespeare.txt scored on every token, val loss <= 1.89 within 20 s of wall time
on 2 CPU cores (30 s until issue 16). Data preparation is done once beforehand (cached), as the
target allows; the timed process includes Python start-up, torch import, model build, training
and the final full-validation evaluation.

    python benchmarks/speedrun.py                  # 3 seeds of the speedrun preset
    python benchmarks/speedrun.py --seeds 1 -- --lr 3e-3 --max-steps 800   # try a change
    python benchmarks/speedrun.py --against "--n-layer 4 --max-steps 220"    # and an older recipe, seeds alternating

On a shared machine wall times of identical runs vary by 10-20 %, so compare recipes with
``--against`` (each seed runs both, one after the other) rather than across invocations.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "shakespeare.txt"
TARGET_LOSS, TARGET_SECONDS = 1.89, 20.0  # issue 16's bar (30 s before)


def cllm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cllm", *args], capture_output=True, text=True)


def train_once(args, seed: int, extra: list[str]) -> dict | None:
    """Wall time of one whole `cllm train` process and its final full-validation loss (None: it failed)."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        r = cllm("train", "--preset", args.preset, "--data", str(args.data_dir), "--out", out, "--seed", str(seed),
                 "--no-progress", "--sample-tokens", "0", *extra)
        wall = time.perf_counter() - start
        if r.returncode:
            print(r.stderr.strip(), file=sys.stderr)
            return None
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    val = [rec for rec in records if rec["val_loss"] is not None][-1]
    return {"seed": seed, "wall_s": round(wall, 2), "val_loss": round(val["val_loss"], 4), "steps": val["step"],
            "train_s": round(val["elapsed"], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--preset", default="speedrun")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cllm-speedrun-data")
    parser.add_argument("--against", metavar="FLAGS", help="also run the preset with these cllm train flags "
                        "added, alternating with it seed by seed, and print the ratio of mean wall times")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("extra", nargs="*", help="flags passed to cllm train (after --)")
    args = parser.parse_args()

    prep = cllm("prepare", "--data", str(args.corpus), "--out", str(args.data_dir))
    if prep.returncode:
        print(prep.stderr.strip(), file=sys.stderr)
        return 2
    recipes = {"preset": args.extra}
    if args.against is not None:
        recipes["against"] = args.extra + shlex.split(args.against)
    runs: dict[str, list[dict]] = {name: [] for name in recipes}
    for seed in range(1, args.seeds + 1):
        for name, extra in recipes.items():
            run = train_once(args, seed, extra)
            if run is None:
                return 2
            runs[name].append(run)
            hit = run["val_loss"] <= TARGET_LOSS and run["wall_s"] <= TARGET_SECONDS
            label = "" if args.against is None else f"{name:>7} "
            print(f"{label}seed {seed}: {run['wall_s']:6.1f} s wall, val loss {run['val_loss']:.4f} after "
                  f"{run['steps']} steps -> {'target met' if hit else 'target missed'}", flush=True)
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
    for name, extra in recipes.items():
        walls, losses = [r["wall_s"] for r in runs[name]], [r["val_loss"] for r in runs[name]]
        label = "" if args.against is None else f"{name} ({' '.join(extra) or args.preset}): "
        print(f"{label}wall time {statistics.mean(walls):.1f} ± {spread(walls):.1f} s, "
              f"val loss {statistics.mean(losses):.4f} ± {spread(losses):.4f} over {len(walls)} seeds "
              f"(target: <= {TARGET_LOSS} in <= {TARGET_SECONDS:.0f} s)")
    if args.against is not None:
        mean = lambda name: statistics.mean(r["wall_s"] for r in runs[name])
        print(f"against / preset wall time: {mean('against') / mean('preset'):.2f}x")
    if args.json:
        print(json.dumps({"preset": args.preset, "extra": args.extra, "runs": runs["preset"],
                          **({"against": args.against, "against_runs": runs["against"]} if args.against else {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
