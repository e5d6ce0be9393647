"""Regional compilation (one transformer block compiled, reused by every layer) against compiling the
whole model: cold compile time and training-step throughput.

    flock /tmp/cllm-bench.lock python benchmarks/compile_scope.py [--presets small base] [--steps 20]

Cold compile: for each preset and scope, a fresh process with empty Inductor and Triton caches
(``TORCHINDUCTOR_CACHE_DIR`` in a new temporary directory, FX graph cache off) builds the default
trainer (`cllm train`'s step: bf16 autocast where the CPU has it, fused AdamW) and times its first
step, which compiles forward and backward, and then its third (the difference is the compile cost).
Throughput: in one process, the two scopes' trainers take turns step by step (A, B, A, B) after
warm-up; medians and the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from cllm.config import Config, apply_dict, load_preset
from cllm.runtime import deterministic_cpu_kernels
from cllm.training.bench import bundled_vocab_size, interleaved_step_times, variant_trainer

from common import cpu_name

SCOPES = ("model", "blocks")


def config(preset: str, scope: str) -> Config:
    cfg = Config()
    apply_dict(cfg, load_preset(preset), "preset")
    model = dataclasses.replace(cfg.model, vocab_size=bundled_vocab_size())
    return dataclasses.replace(cfg, model=model, train=dataclasses.replace(cfg.train, compile_scope=scope))


def first_steps(preset: str, scope: str) -> dict:
    """Run in a child process with cold caches: seconds of the first (compiling) and second step."""
    trainer = variant_trainer(config(preset, scope), "default")
    times = []
    with deterministic_cpu_kernels(trainer.device):
        for _ in range(3):
            start = time.perf_counter()
            trainer.step()
            times.append(time.perf_counter() - start)
    return {"first_s": times[0], "steady_s": times[2]}


def cold(preset: str, scope: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": cache,
               "TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}
        out = subprocess.run([sys.executable, __file__, "--child", preset, scope], env=env, check=True,
                             capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def throughput(preset: str, warmup: int, steps: int) -> dict[str, float]:
    trainers = [variant_trainer(config(preset, scope), "default") for scope in SCOPES]
    times = interleaved_step_times(trainers, warmup, steps)
    return {scope: t.tokens_per_step / statistics.median(ts) for scope, t, ts in zip(SCOPES, trainers, times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small", "base"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(first_steps(*args.child)))
        return
    print(f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}")
    for preset in args.presets:
        firsts = {scope: cold(preset, scope) for scope in SCOPES}
        tok_s = throughput(preset, args.warmup, args.steps)
        print(f"\n{preset}:")
        for scope in SCOPES:
            f = firsts[scope]
            print(f"  compile {scope:>6}: first step {f['first_s']:6.1f} s cold (compile ~{f['first_s'] - f['steady_s']:.1f} s), "
                  f"{tok_s[scope]:>9,.0f} tokens/s")
        print(f"  blocks / model: cold first step {firsts['blocks']['first_s'] / firsts['model']['first_s']:.2f}x, "
              f"throughput {tok_s['blocks'] / tok_s['model']:.3f}x")


if __name__ == "__main__":
    main()
