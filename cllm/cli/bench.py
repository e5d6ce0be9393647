"""``cllm bench``: training-step throughput, matmul peak and a per-phase profile (cllm.training.bench)."""

from __future__ import annotations

import dataclasses
import json
import os


def cmd_bench(args) -> int:
    import torch

    from ..config import config_from_args, resolve_vocab_size
    from ..perf import peak_rss_mb
    from ..runtime import resolve_device
    from ..training import bench

    cfg = config_from_args(args)
    if cfg.model.vocab_size == 0:  # what `cllm train` with defaults gets: the bundled corpus's characters
        cfg = dataclasses.replace(cfg, model=resolve_vocab_size(cfg.model, bench.bundled_vocab_size()))
    torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)
    preset = args.preset or "small"
    summary: dict = {"preset": preset}
    if args.peak:
        peaks = bench.measure_peaks(cfg, resolve_device(cfg.train.device))
        for name, peak in peaks.items():
            m, k, n = peak.shape
            print(f"matmul peak {name:>8}: {peak.flops / 1e9:8.1f} GFLOP/s (best shape {m}x{k} @ {k}x{n}, "
                  f"rounds {peak.spread:.2f}x apart{'; BUSY MACHINE, not cached' if peak.busy else ''})")
        summary["peaks"] = {k: {"gflops": round(v.flops / 1e9, 1), "shape": list(v.shape), "spread": round(v.spread, 3)}
                            for k, v in peaks.items()}
    if args.profile:
        summary["profile_ms"] = print_profile(cfg, preset)
    compare = list(dict.fromkeys((args.compare or []) + ([args.baseline] if args.baseline else [])))
    if not (args.peak or args.profile) or compare:
        results = bench.bench_variants(cfg, ["default", *compare], args.warmup, args.steps)
        default = results[0]
        for r in results:
            print(f"{preset} {r.variant:>13} ({r.dtype}{', compiled' if r.compiled else ''}): "
                  f"{r.tokens_per_sec:>10,.0f} tokens/s {r.step_ms:9.1f} ms/step  MFU {r.mfu:6.1%}")
        summary.update(default.as_dict())
        for r in results[1:]:
            ratio = default.tokens_per_sec / r.tokens_per_sec
            print(f"default / {r.variant} = {ratio:.2f}x")
            summary.setdefault("ratio", round(ratio, 2))
            summary.setdefault("compare", {})[r.variant] = {**r.as_dict(), "ratio": round(ratio, 2)}
    summary.update(threads=torch.get_num_threads(), batch_size=cfg.train.batch_size,
                   block_size=cfg.model.block_size, peak_rss_mb=round(peak_rss_mb(), 1))
    if args.json:
        print(json.dumps(summary))
    return 0


def print_profile(cfg, preset: str) -> dict:
    """The step users run, by phase: compiled (kernel kinds per step phase) unless --no-compile (per module)."""
    from ..training import profile

    if cfg.train.compile:
        table = profile.profile_compiled_step(cfg)
        wall = table.pop("wall")["step"]
        print(f"{preset}: one compiled training step by phase and kernel kind (torch.profiler, mean of 5 steps; "
              f"wall {wall:.2f} ms)")
        for phase, kinds in table.items():
            for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
                print(f"  {phase:<10} {kind:<26} {ms:9.2f} ms  {ms / wall:6.1%}")
        return {phase: {k: round(v, 3) for k, v in kinds.items()} for phase, kinds in table.items()} | {"wall": round(wall, 3)}
    phases = profile.profile_step(cfg)
    total = sum(ms for _, ms in phases)
    print(f"{preset}: one eager training step by phase (torch.profiler, mean of 5 steps)")
    for name, ms in phases:
        print(f"  {name:<16} {ms:9.2f} ms  {ms / total:6.1%}")
    print(f"  {'total':<16} {total:9.2f} ms")
    return {name: round(ms, 3) for name, ms in phases}


def register(sub) -> None:
    from ..config import add_config_arguments

    p = sub.add_parser("bench", help="time full training steps (median tokens/s, MFU), peak FLOP/s, profile")
    p.add_argument("--compare", nargs="+", choices=["float32-eager", "per-sequence"],
                   help="also time these variants, interleaved with the default path, and print ratios")
    p.add_argument("--baseline", choices=["per-sequence"], help="same as --compare per-sequence")
    p.add_argument("--peak", action="store_true", help="measure this machine's float32 and bfloat16 GEMM peak")
    p.add_argument("--profile", action="store_true", help="where a training step's time goes (torch.profiler): the compiled step by phase "
                   "and kernel kind, or with --no-compile the eager step by model part")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    add_config_arguments(p)
    p.set_defaults(func=cmd_bench)
