"""Ablation of the positional encodings and the crystalline token init (docs/ABLATION.md).

Every run is ``cllm train --preset small`` on the bundled Shakespeare corpus with the same number
of steps (so the same tokens: steps x batch_size x block_size), eager bf16 (``--no-compile``), one
process per run, each under ``flock /tmp/cllm-bench.lock`` so that other benchmarks on the shared
machine interleave between runs instead of overlapping them. Per run it records the val loss at
25/50/75/100 % of the run, the median training tokens/s, and the loss on held-out text: a slice of
the full Shakespeare file from beyond the ~1 MB the bundled corpus holds (never trained on, never
used for validation), restricted to the characters of the run's vocabulary.

    python benchmarks/ablation.py run --steps 800 --seeds 1 2 3 --out /tmp/abl
    python benchmarks/ablation.py report --out /tmp/abl --json docs/ablation.json --png docs/ablation.png

``run`` skips runs whose result file already exists, so it can be stopped and restarted. Phase 1
trains every pos_encoding with the normal init; phase 2 trains embedding_init=crystalline with the
positional encoding of lowest mean final val loss in phase 1 (its normal-init twin is the phase-1 run).
``--preset base --steps 200 --seeds 1 --pos ...`` gives the optional base-preset runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
POS = ["learned", "sinusoidal", "rope", "ulam", "clock", "prime", "none"]
FULL_TEXT = Path("/work/shared/data/shakespeare.txt")
HELD_OUT = (3_000_000, 3_060_000)  # character range of FULL_TEXT; the bundled corpus is its first 1,000,078
LOCK = "/tmp/cllm-bench.lock"


def run_name(preset: str, pos: str, init: str, seed: int) -> str:
    return f"{preset}-{pos}-{init}-s{seed}"


def held_out_file(out: Path, vocab_chars: set[str]) -> tuple[Path, dict]:
    """The held-out slice, filtered to characters the run's tokenizer knows (documented in the report)."""
    text = FULL_TEXT.read_text(encoding="utf-8")
    bundled = (ROOT / "cllm/corpus/shakespeare.txt").read_text(encoding="utf-8")
    assert text.startswith(bundled) and HELD_OUT[0] >= len(bundled), "held-out slice overlaps the training corpus"
    raw = text[HELD_OUT[0]:HELD_OUT[1]]
    kept = "".join(c for c in raw if c in vocab_chars)
    path = out / "held_out.txt"
    if not path.exists() or path.read_text(encoding="utf-8") != kept:
        path.write_text(kept, encoding="utf-8")
    return path, {"chars": len(raw), "kept": len(kept), "dropped": len(raw) - len(kept),
                  "range": list(HELD_OUT), "source": str(FULL_TEXT)}


def cli(*args: str, lock: bool = True) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cllm", *args]
    if lock:
        cmd = ["flock", LOCK, *cmd]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return proc.stdout


def one_run(out: Path, preset: str, pos: str, init: str, seed: int, steps: int) -> dict:
    name = run_name(preset, pos, init, seed)
    run_dir = out / name
    result_path = out / f"{name}.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    eval_every = max(steps // 4, 1)
    args = ["train", "--preset", preset, "--pos-encoding", pos, "--embedding-init", init, "--seed", str(seed),
            "--max-steps", str(steps), "--eval-interval", str(eval_every), "--eval-batches", "50",
            "--save-interval", str(steps), "--log-interval", "25", "--out", str(run_dir),
            "--no-progress", "--sample-tokens", "0", "--no-compile", "--overwrite"]  # a half-done run restarts
    t0 = time.time()
    cli(*args)
    wall = time.time() - t0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = {r["step"]: r["val_loss"] for r in records if r.get("val_loss") is not None}
    # tokens/s of the logging windows after the first (which includes warm-up)
    tps = [r["tokens_per_sec"] for r in records[1:] if r.get("val_loss") is None] or [records[-1]["tokens_per_sec"]]
    vocab_chars = _known_chars(run_dir)
    held_path, held_info = held_out_file(out, vocab_chars)
    scores = json.loads(cli("eval", "--checkpoint", str(run_dir), "--data", str(held_path), "--json").strip().splitlines()[-1])
    result = {"name": name, "preset": preset, "pos_encoding": pos, "embedding_init": init, "seed": seed,
              "steps": steps, "tokens": records[-1]["tokens"], "val_loss": {str(k): v for k, v in sorted(val.items())},
              "final_val_loss": val[steps], "tokens_per_sec": statistics.median(tps),
              "held_out_loss": scores["loss"], "held_out": held_info, "wall_s": round(wall, 1),
              "command": "cllm " + " ".join(args)}
    result_path.write_text(json.dumps(result, indent=1))
    return result


def _known_chars(run_dir: Path) -> set[str]:
    """The characters of the full text that the run's tokenizer can encode."""
    from cllm.errors import CLLMError
    from cllm.tokenizers import tokenizer_from_json

    tok = tokenizer_from_json((run_dir / "data" / "tokenizer.json").read_text(encoding="utf-8"))
    known = set()
    for c in set(FULL_TEXT.read_text(encoding="utf-8")):
        try:
            tok.encode(c)
            known.add(c)
        except CLLMError:
            pass
    return known


def summarize(results: list[dict]) -> dict[tuple[str, str, str], dict]:
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["preset"], r["pos_encoding"], r["embedding_init"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        rs.sort(key=lambda r: r["seed"])
        steps = rs[0]["steps"]
        marks = [str(max(steps // 4, 1) * q) for q in (1, 2, 3)]
        def ms(values):
            values = list(values)
            return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        out[key] = {"n": len(rs), "seeds": [r["seed"] for r in rs], "steps": steps, "tokens": rs[0]["tokens"],
                    "final": ms(r["final_val_loss"] for r in rs),
                    "at": [ms(r["val_loss"][m] for r in rs) for m in marks],
                    "held_out": ms(r["held_out_loss"] for r in rs),
                    "tokens_per_sec": ms(r["tokens_per_sec"] for r in rs),
                    "by_seed": {r["seed"]: r for r in rs}}
    return out


def paired_delta(summary, key, ref_key, field="final_val_loss"):
    """Mean ± std over seeds of (option − reference), pairing runs with the same seed (same batches)."""
    a, b = summary[key]["by_seed"], summary[ref_key]["by_seed"]
    d = [a[s][field] - b[s][field] for s in sorted(set(a) & set(b))]
    if not d:
        return None
    return statistics.mean(d), (statistics.stdev(d) if len(d) > 1 else 0.0), d


def load_results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def best_pos(out: Path, preset: str) -> str:
    summary = summarize([r for r in load_results(out) if r["preset"] == preset and r["embedding_init"] == "normal"])
    return min((k for k in summary), key=lambda k: summary[k]["final"][0])[1]


def cmd_run(a) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pos_list = a.pos or POS
    for seed in a.seeds:  # seeds outermost: a partial ablation still covers every option
        for pos in pos_list:
            r = one_run(out, a.preset, pos, "normal", seed, a.steps)
            print(f"{r['name']}: val {r['final_val_loss']:.4f} held-out {r['held_out_loss']:.4f} "
                  f"{r['tokens_per_sec']:,.0f} tok/s ({r['wall_s']}s)", flush=True)
    if a.no_init:
        return
    best = best_pos(out, a.preset)
    print(f"best positional encoding (mean final val loss): {best}", flush=True)
    for seed in a.seeds:
        r = one_run(out, a.preset, best, "crystalline", seed, a.steps)
        print(f"{r['name']}: val {r['final_val_loss']:.4f} held-out {r['held_out_loss']:.4f} "
              f"{r['tokens_per_sec']:,.0f} tok/s ({r['wall_s']}s)", flush=True)


def cmd_report(a) -> None:
    out = Path(a.out)
    results = [r for r in load_results(out) if r["preset"] == a.preset]
    summary = summarize(results)
    ref = (a.preset, "learned", "normal")
    fmt = lambda m: f"{m[0]:.4f} ± {m[1]:.4f}"  # noqa: E731
    keys = sorted(summary, key=lambda k: summary[k]["final"][0])
    s0 = summary[keys[0]]
    print(f"{a.preset} preset, {s0['steps']} steps = {s0['tokens']:,} tokens per run, seeds {s0['seeds']}\n")
    print("| pos_encoding | embedding_init | final val loss | Δ vs learned (paired) | val @25% | val @50% | val @75% "
          "| held-out loss | tokens/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k in keys:
        s = summary[k]
        d = paired_delta(summary, k, ref) if ref in summary else None
        ds = "—" if d is None or k == ref else f"{d[0]:+.4f} ± {d[1]:.4f}"
        print(f"| {k[1]} | {k[2]} | {fmt(s['final'])} | {ds} | " + " | ".join(fmt(m) for m in s["at"])
              + f" | {fmt(s['held_out'])} | {s['tokens_per_sec'][0]:,.0f} ± {s['tokens_per_sec'][1]:,.0f} |")
    inits = [k for k in summary if k[2] == "crystalline"]
    for k in inits:
        twin = (k[0], k[1], "normal")
        if twin in summary:
            for field in ("final_val_loss", "held_out_loss"):
                d = paired_delta(summary, k, twin, field)
                print(f"\ncrystalline − normal init with {k[1]} ({field}, paired by seed): "
                      f"{d[0]:+.4f} ± {d[1]:.4f} (per seed {', '.join(f'{x:+.4f}' for x in d[2])})")
    held = results[0]["held_out"] if results else {}
    print(f"\nheld-out text: characters {held.get('range')} of {held.get('source')}: {held.get('chars'):,} characters, "
          f"{held.get('dropped')} outside the vocabulary dropped")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    if a.png:
        plot(summary, Path(a.png), a.preset)


def plot(summary, png: Path, preset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for k in sorted(summary, key=lambda k: summary[k]["final"][0]):
        s = summary[k]
        steps = sorted(int(x) for x in next(iter(s["by_seed"].values()))["val_loss"])
        mean = [statistics.mean(r["val_loss"][str(st)] for r in s["by_seed"].values()) for st in steps]
        std = [statistics.stdev([r["val_loss"][str(st)] for r in s["by_seed"].values()]) if s["n"] > 1 else 0.0
               for st in steps]
        label = k[1] + (" + crystalline init" if k[2] == "crystalline" else "")
        style = "--" if k[2] == "crystalline" else "-"
        for ax in axes:
            ax.errorbar(steps, mean, yerr=std, label=label, linestyle=style, marker="o", capsize=3)
    axes[0].set_title(f"val loss ({preset}, mean ± std over seeds)")
    axes[1].set_title("the same, last three evaluations")
    finals = [summary[k]["final"][0] for k in summary]
    steps_all = sorted(int(x) for x in next(iter(next(iter(summary.values()))["by_seed"].values()))["val_loss"])
    axes[1].set_xlim(steps_all[1] - steps_all[0] * 0.2, steps_all[-1] + steps_all[0] * 0.2)
    axes[1].set_ylim(min(finals) - 0.05, max(summary[k]["at"][1][0] for k in summary) + 0.05)
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_ylabel("val loss (nats/char)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", default="/tmp/abl")
    r.add_argument("--preset", default="small")
    r.add_argument("--steps", type=int, default=800)
    r.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    r.add_argument("--pos", nargs="+", choices=POS)
    r.add_argument("--no-init", action="store_true", help="skip phase 2 (the crystalline init runs)")
    r.set_defaults(func=cmd_run)
    q = sub.add_parser("report")
    q.add_argument("--out", default="/tmp/abl")
    q.add_argument("--preset", default="small")
    q.add_argument("--json")
    q.add_argument("--png")
    q.set_defaults(func=cmd_report)
    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
