"""Step time of one preset against changed shapes of it, steps interleaved in one process.

    python benchmarks/shapes.py speedrun n_layer=3 n_layer=2,n_embd=160,n_head=5 n_layer=2,batch_size=32

Each argument after the preset is a comma-separated list of config fields (model or train) to
change; every variant is a ``Trainer`` on a fixed random batch stepping the way `cllm train` does
(``cllm.training.bench``), steps taken in turn after a warm-up, medians printed with the speed
relative to the preset itself. Used to choose the speedrun's shape (docs/SPEEDRUN.md): on a
shared machine only ratios from one process are comparable.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch

from cllm.config import Config, apply_dict, load_preset, resolve_vocab_size
from cllm.training.bench import bundled_vocab_size, interleaved_step_times, variant_trainer


def variant_config(preset: str, changes: str) -> Config:
    cfg = Config()
    apply_dict(cfg, load_preset(preset), "preset")
    fields: dict[str, dict[str, str]] = {"model": {}, "train": {}}
    for change in filter(None, changes.split(",")):
        name, _, value = change.partition("=")
        fields["model" if hasattr(cfg.model, name) else "train"][name] = value
    apply_dict(cfg, {section: {k: _parse(getattr(getattr(cfg, section), k), v) for k, v in values.items()}
                     for section, values in fields.items() if values}, "command line")
    cfg.validate()
    return dataclasses.replace(cfg, model=resolve_vocab_size(cfg.model, bundled_vocab_size()))


def _parse(current, text: str):
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes")
    return type(current)(text) if isinstance(current, (int, float)) else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("variants", nargs="*", help="e.g. n_layer=2,batch_size=32")
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
