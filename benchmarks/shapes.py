"""Step time of one preset against changed shapes of it, steps interleaved in one process.

    python benchmarks/shapes.py speedrun "--n-layer 3" "--n-layer 2 --n-embd 160 --n-head 5" "--n-layer 2 --batch-size 32"

Each argument after the preset is one variant: `cllm train` flags applied on top of the preset, read
by the same parser and config resolution as `cllm train` (a variant of one flag without a value goes
after `--`, with the preset: `shapes.py -- speedrun --no-qk-norm`). Every variant is a ``Trainer``
on a fixed random batch stepping the way `cllm train` does (``cllm.training.bench``), steps taken in
turn after a warm-up, medians printed with the speed relative to the preset itself. Used to choose
the speedrun's shape (docs/SPEEDRUN.md): on a shared machine only ratios from one process are
comparable.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics

import torch

from cllm.config import Config, add_config_arguments, config_from_args, resolve_vocab_size
from cllm.training.bench import bundled_vocab_size, interleaved_step_times, variant_trainer


def variant_config(preset: str, flags: str) -> Config:
    """The preset with `cllm train` flags on top, resolved (and validated) as `cllm train` does."""
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--preset", preset, *shlex.split(flags)]))
    return dataclasses.replace(cfg, model=resolve_vocab_size(cfg.model, bundled_vocab_size()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("variants", nargs="*", help='e.g. "--n-layer 2 --batch-size 32"')
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    names = ["preset", *args.variants]
    trainers = [variant_trainer(variant_config(args.preset, "" if n == "preset" else n), "default") for n in names]
    times = interleaved_step_times(trainers, args.warmup, args.steps)
    base = statistics.median(times[0])
    for name, trainer, ts in zip(names, trainers, times):
        median = statistics.median(ts)
        print(f"{args.preset} {name:40} {median * 1000:7.1f} ms/step {trainer.tokens_per_step / median:9,.0f} "
              f"tokens/s  {base / median:5.2f}x the preset's step rate")


if __name__ == "__main__":
    main()
