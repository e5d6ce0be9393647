"""glibc's malloc keeping freed memory (cllm's default on Linux) against its own defaults.

    flock /tmp/cllm-bench.lock python benchmarks/allocator.py [--shapes small base0 base v10k] [--rounds 3]

The setting is process-wide (``cllm.runtime.reuse_freed_memory``), so each variant is its own
``cllm bench`` process: ``CLLM_MALLOC=system`` leaves glibc as it is (blocks over the mmap
threshold are mapped on malloc and unmapped on free, so a step faults its large activations in
again), the default reuses them. The two alternate for ``--rounds`` rounds; printed are the median
tokens/s, the ratio, and the largest peak RSS of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from common import cpu_name

SHAPES = {  # name -> cllm bench flags
    "small": ["--preset", "small"],
    "base0": ["--preset", "base", "--dropout", "0", "--steps", "8", "--warmup", "2"],
    "base": ["--preset", "base", "--steps", "8", "--warmup", "2"],
    "v10k": ["--preset", "small", "--n-layer", "2", "--n-head", "8", "--n-embd", "256", "--block-size", "128",
             "--batch-size", "20", "--vocab-size", "10000", "--steps", "10"],
}


def bench(flags: list[str], system_malloc: bool) -> dict:
    env = dict(os.environ, **({"CLLM_MALLOC": "system"} if system_malloc else {}))
    out = subprocess.run([sys.executable, "-m", "cllm", "bench", *flags, "--json"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"# {cpu_name()}; cllm bench tokens/s, median of {args.rounds} alternating processes")
    print("| shape | glibc defaults tok/s | reuse freed memory tok/s | ratio | peak RSS MB (defaults / reuse) |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.shapes:
        runs = {True: [], False: []}
        for _ in range(args.rounds):
            for system in (True, False):
                runs[system].append(bench(SHAPES[name], system))
        tok = {k: statistics.median(r["tokens_per_sec"] for r in v) for k, v in runs.items()}
        rss = {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()}
        print(f"| {name} | {tok[True]:,.0f} | {tok[False]:,.0f} | {tok[False] / tok[True]:.2f}x | "
              f"{rss[True]:,.0f} / {rss[False]:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
