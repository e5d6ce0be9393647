"""Cost of deterministic kernels for the CPU training step (what `cllm train` turns on).

    python benchmarks/deterministic_kernels.py [PRESET] [ROUNDS]

Three copies of the preset's default-path step (bf16; compiled unless the preset says not): one
with `torch.use_deterministic_algorithms(True)` as `cllm train` runs it (new tensors left
unfilled), one with that mode's default of filling every new tensor with NaN, one without the mode;
steps interleaved in one process (Dynamo keeps a compiled graph per setting), medians printed.
Without the mode Inductor adds up the embedding gradient with atomic adds, so steps differ in the
last bits from run to run.
"""

import os
import statistics
import sys
import time

import torch

from cllm.training.bench import variant_trainer
from cllm.config import Config, apply_dict, load_preset


def main() -> None:
    preset = sys.argv[1] if len(sys.argv) > 1 else "base"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    cfg = Config()
    apply_dict(cfg, load_preset(preset), "preset")
    cfg.model.vocab_size = 84
    cfg.validate()
    torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)  # as `cllm train`
    names = ("deterministic", "+ NaN fill", "default kernels")
    runners = {name: variant_trainer(cfg, "default") for name in names}

    def step(name: str) -> float:
        torch.use_deterministic_algorithms(name != "default kernels", warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = name == "+ NaN fill"
        start = time.perf_counter()
        runners[name].step()
        return time.perf_counter() - start

    for name in runners:
        for _ in range(3):
            step(name)
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name in runners:
            times[name].append(step(name))
    base = statistics.median(times["deterministic"])
    for name, ts in times.items():
        print(f"{preset} {name:16s} {statistics.median(ts) * 1000:7.1f} ms/step (median of {rounds}), "
              f"{statistics.median(ts) / base:.3f}x the deterministic step's time")


if __name__ == "__main__":
    main()
