"""Generation speed: the KV cache against recomputing the whole context for every token.

    python benchmarks/generate.py [--tokens 1000] [--rounds 3] [--presets small base]

For each preset's model shape (random weights, float32, V = 84 like the character-level
Shakespeare vocabulary) it generates --tokens new tokens from a 32-token prompt, batch 1,
temperature 0.8, seeded, with three variants: uncached (every token runs the last block_size
tokens through the model, what `cllm sample` did before), cached (prefill, then one position per
step; the sliding window past block_size), and cached with the one-token decode step under
torch.compile. Each variant generates once untimed (warm-up, compilation), then the variants take
turns for --rounds rounds; medians. The warm-up column is that first generation's wall time (for
the compiled step it includes compiling, from whatever compiler caches the machine has). Time to
first token is the prefill plus the first sample; per-token latency is the time after that divided
by the remaining tokens.
"""

import argparse
import statistics
import subprocess
import time

import torch

from cllm.config import ModelConfig, load_preset
from cllm.inference import compiled_decode_step, decode_steps
from cllm.model import GPT

from common import cpu_name

VOCAB = 84
PROMPT = 32


def timed_generation(model, idx, tokens, seed, **options) -> tuple[float, float]:
    """(seconds to the first token, seconds in all) for one generation."""
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    first = None
    for step in decode_steps(model, idx, tokens, temperature=0.8, generator=gen, **options):
        if first is None:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start


def bench_preset(name: str, tokens: int, rounds: int) -> list[dict]:
    cfg = ModelConfig(**{**load_preset(name)["model"], "dropout": 0.0, "vocab_size": VOCAB})
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    idx = torch.randint(0, VOCAB, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    variants = {
        "uncached": dict(use_cache=False),
        "cached": dict(),
        "cached + compiled step": dict(step_fn=compiled_decode_step(model)),
    }
    warmups = {}  # the compiled step's includes compiling it (from cold or warm caches, as found)
    for v, options in variants.items():  # warm-up: long enough to slide the window at least once
        warmups[v] = timed_generation(model, idx, min(tokens, cfg.block_size + 64), 0, **options)[1]
    times = {v: [] for v in variants}
    for r in range(rounds):
        for v, options in variants.items():
            times[v].append(timed_generation(model, idx, tokens, r, **options))
    rows = []
    for v, runs in times.items():
        ttft = statistics.median(t[0] for t in runs)
        total = statistics.median(t[1] for t in runs)
        per_token = statistics.median((t[1] - t[0]) / (tokens - 1) for t in runs)
        rows.append(dict(preset=name, variant=v, tokens_per_s=tokens / total, ttft_ms=1e3 * ttft,
                         per_token_ms=1e3 * per_token, total_s=total, warmup_s=warmups[v]))
    base = rows[0]["total_s"]
    for row in rows:
        row["speedup"] = base / row["total_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["small", "base"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{args.tokens} new tokens after a {PROMPT}-token prompt, batch 1, float32, median of {args.rounds}")
    print("| preset | variant | tokens/s | time to first token (ms) | per-token latency (ms) | speed-up | warm-up (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.presets:
        for r in bench_preset(name, args.tokens, args.rounds):
            print(f"| `{r['preset']}` | {r['variant']} | {r['tokens_per_s']:,.0f} | {r['ttft_ms']:.1f} | "
                  f"{r['per_token_ms']:.2f} | {r['speedup']:.1f}× | {r['warmup_s']:.1f} |", flush=True)
    print("load average after:", subprocess.run(["cat", "/proc/loadavg"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
