"""Where a data-parallel CPU step's time goes: forward, backward with the gradient all-reduce, the
same backward without it (``no_sync``), the loss all-reduce and the optimizer update.

    torchrun --nproc-per-node 2 benchmarks/ddp_phases.py [--preset small] [--steps 40]

Each rank runs the `cllm train` step's parts (``Trainer.loss``, backward, ``Dist.mean``,
``Trainer.update``) on a fixed batch with one thread; every iteration times a synchronised
micro-batch and then one under ``no_sync``, so the difference of the two backwards is what the
all-reduce costs. Medians after 10 warm-up iterations, printed per rank.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cllm.config import Config, apply_dict, load_preset
from cllm.runtime import deterministic_cpu_kernels
from cllm.training import distributed
from cllm.training.bench import FixedBatches, bundled_vocab_size
from cllm.training.trainer import Trainer

PHASES = ("forward", "backward + all-reduce", "loss all-reduce", "update", "forward (no_sync)", "backward (no_sync)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = Config()
    apply_dict(cfg, load_preset(args.preset), "preset")
    cfg.model.vocab_size = bundled_vocab_size()
    device = torch.device("cpu")
    dist = distributed.init("ddp", device, cfg.train.optimizer, threads=1)
    if not dist.enabled:
        raise SystemExit("run under torchrun with --nproc-per-node 2 or more")
    torch.manual_seed(0)
    trainer = Trainer(cfg, FixedBatches(cfg, device, seed=dist.rank), device, "bfloat16", log=lambda *a: None,
                      dist=dist)
    times: dict[str, list[float]] = {p: [] for p in PHASES}
    with deterministic_cpu_kernels(device):
        for i in range(10 + args.steps):
            t = [time.perf_counter()]
            loss = trainer.loss(*trainer.batches.get())
            t.append(time.perf_counter())
            loss.backward()
            t.append(time.perf_counter())
            mean, _ = dist.mean_and_any(loss.item())
            t.append(time.perf_counter())
            trainer.update(mean)
            t.append(time.perf_counter())
            with trainer.wrapped.no_sync():
                loss = trainer.loss(*trainer.batches.get())
                t.append(time.perf_counter())
                loss.backward()
                t.append(time.perf_counter())
            trainer.optimizer.zero_grad(set_to_none=True)
            if i >= 10:
                for phase, start, end in zip(PHASES, t, t[1:]):
                    times[phase].append(end - start)
    cells = ", ".join(f"{p} {statistics.median(v) * 1e3:.1f} ms" for p, v in times.items())
    print(f"{args.preset} rank {dist.rank}/{dist.world_size}, batch {cfg.train.batch_size}: {cells}", flush=True)
    distributed.shutdown()


if __name__ == "__main__":
    main()
