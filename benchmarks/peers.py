"""cllm's training step side by side with nanoGPT's model.py (../shared/peers/nanoGPT), in one process.

    flock /tmp/cllm-bench.lock python benchmarks/peers.py [--shapes small base0 base v10k] [--steps 10] [--block 1]

For each shape, three variants run with their steps interleaved (A, B, C, A, B, C, ...) after
warm-up, and each reports its median; with ``--block K`` each takes K steps in a row per turn
(A×K, B×K, C×K, ...), as a training run does, so a step does not start with the caches the other
models' steps left behind (the median is still over ``--steps`` steps per variant): nanoGPT the way its train.py runs on a CPU in float32 eager and
at its best (torch.compile + bf16 autocast + its configure_optimizers AdamW), and cllm's default
step (`Trainer.step`, what `cllm train` runs). Same batch, context and width; each model keeps its
own defaults otherwise (nanoGPT learned positions, cllm RoPE). Prints tokens/s and
cllm / best nanoGPT. nanoGPT's file is loaded by path; cllm never imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import time
from pathlib import Path

import torch

from cllm.config import Config, apply_dict, load_preset
from cllm.runtime import deterministic_cpu_kernels
from cllm.training.bench import variant_trainer

from common import cpu_name

PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "nanoGPT" / "model.py"

SHAPES = {  # name -> (preset, overrides)
    "small": ("small", {"vocab_size": 80}),
    "base0": ("base", {"vocab_size": 80, "dropout": 0.0}),
    "base": ("base", {"vocab_size": 80}),
    "v10k": ("small", {"n_layer": 2, "n_head": 8, "n_embd": 256, "block_size": 128, "batch_size": 20,
                       "vocab_size": 10000}),
}


def load_nanogpt():
    if not PEER.is_file():
        raise SystemExit(f"nanoGPT's model.py not found at {PEER}")
    spec = importlib.util.spec_from_file_location("nanogpt_model", PEER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shape_config(name: str) -> Config:
    preset, overrides = SHAPES[name]
    cfg = Config()
    apply_dict(cfg, load_preset(preset), "preset")
    for key, value in overrides.items():
        setattr(cfg.train if hasattr(cfg.train, key) else cfg.model, key, value)
    return cfg.validate()


class NanoGPTStep:
    """nanoGPT's model and optimizer on a fixed batch; ``step()`` as its train.py does it."""

    def __init__(self, nanogpt, cfg: Config, best: bool):
        m, t = cfg.model, cfg.train
        torch.manual_seed(0)
        gcfg = nanogpt.GPTConfig(block_size=m.block_size, vocab_size=m.vocab_size, n_layer=m.n_layer,
                                 n_head=m.n_head, n_embd=m.n_embd, dropout=m.dropout, bias=m.bias)
        with contextlib.redirect_stdout(open(os.devnull, "w")):  # it prints parameter counts
            self.model = nanogpt.GPT(gcfg).train()
            self.optimizer = self.model.configure_optimizers(t.weight_decay, t.lr, (t.beta1, t.beta2), "cpu")
        self.forward = torch.compile(self.model) if best else self.model
        self.autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if best else contextlib.nullcontext
        self.x = torch.randint(0, m.vocab_size, (t.batch_size, m.block_size))
        self.y = torch.randint(0, m.vocab_size, (t.batch_size, m.block_size))
        self.tokens_per_step = t.batch_size * m.block_size

    def step(self) -> None:
        with self.autocast():
            _, loss = self.forward(self.x, self.y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def run_shape(nanogpt, name: str, warmup: int, steps: int, block: int = 1) -> dict[str, float]:
    cfg = shape_config(name)
    variants = {
        "nanoGPT float32 eager": (NanoGPTStep(nanogpt, cfg, best=False), contextlib.nullcontext),
        "nanoGPT compiled bf16": (NanoGPTStep(nanogpt, cfg, best=True), contextlib.nullcontext),
        "cllm default": (variant_trainer(cfg, "default"), lambda: deterministic_cpu_kernels(torch.device("cpu"))),
    }
    times = {v: [] for v in variants}
    for runner, context in variants.values():
        with context():
            for _ in range(warmup):
                runner.step()
    for _ in range(-(-steps // block)):
        for v, (runner, context) in variants.items():
            with context():
                for _ in range(block):
                    start = time.perf_counter()
                    runner.step()
                    times[v].append(time.perf_counter() - start)
    return {v: variants[v][0].tokens_per_step / statistics.median(ts) for v, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--block", type=int, default=1, help="steps in a row per variant and turn")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    nanogpt = load_nanogpt()
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}; tokens/s, median of {args.steps} steps, interleaved in turns of {args.block}")
    print("| shape | nanoGPT float32 eager | nanoGPT compiled bf16 | cllm default | cllm / best nanoGPT |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.shapes:
        r = run_shape(nanogpt, name, args.warmup, args.steps, args.block)
        best = max(r["nanoGPT float32 eager"], r["nanoGPT compiled bf16"])
        print(f"| {name} | {r['nanoGPT float32 eager']:,.0f} | {r['nanoGPT compiled bf16']:,.0f} | "
              f"{r['cllm default']:,.0f} | {r['cllm default'] / best:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
