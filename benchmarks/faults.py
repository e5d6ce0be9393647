"""Fault-injection soak: kill -9 a `cllm train` process at many points, resume it, and check that
the resumed run ends exactly where an uninterrupted one does and that no checkpoint is ever corrupt.

Each trial starts a fresh `tiny` run in a subprocess and kills it once, at one of these points:

  time:S     SIGKILL from outside, S seconds after start (anywhere: start-up, data, steps, saves)
  fsync:N    inside the Nth checkpoint fsync (files written, not all synced, not renamed)
  rename:N   at the Nth os.replace (between the two renames of a checkpoint save, or in data prep)
  eval:N     at the start of the Nth validation
  metrics:N  half-way through writing the Nth metrics.jsonl line
  plot:0     half-way through drawing loss.png

then checks the run directory (any checkpoint there must load and verify), resumes it until it
finishes (`--resume`, or `--overwrite` when the kill came before the first checkpoint), and
compares its final weights, best weights and logged losses with a straight run's. Prints

    killed N, resumed N, resumed runs equal to straight ones N, corrupt 0

    flock /tmp/cllm-bench.lock python benchmarks/faults.py --points 50
    python benchmarks/faults.py --points 8 --seed 3 --json

tests/test_faults.py runs a few trials of the same harness.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAX_STEPS = 24
TRAIN_FLAGS = ["--preset", "tiny", "--max-steps", str(MAX_STEPS), "--save-interval", "4", "--eval-interval", "6",
               "--log-interval", "1", "--dtype", "float32", "--threads", "1", "--no-compile", "--no-progress",
               "--sample-tokens", "0", "--workers", "1"]
KINDS = ("time", "fsync", "rename", "eval", "metrics", "plot")

# Run in the killed subprocess before `cllm train`: wraps one function so that its Nth call kills
# the process (SIGKILL: no handler, no cleanup, as a power cut or the OOM killer would).
FAULT_HOOK = r"""
import os, signal, sys
kind, n = sys.argv[1].split(":"); n = int(n); del sys.argv[1]
calls = [0]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def on_nth(fn, before=None):
    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] == n:
            if before: before(*a, **k)
            die()
        return fn(*a, **k)
    return wrapped
import cllm.checkpoint as ck, cllm.training.trainer as tr, cllm.training.loop as lp, cllm.training.metrics as mt
if kind == "fsync":
    ck._fsync = on_nth(ck._fsync)
elif kind == "rename":
    os.replace = on_nth(os.replace)
elif kind == "eval":
    tr.validation_loss = on_nth(tr.validation_loss)
elif kind == "metrics":
    def half_line(self, record):
        import json
        self._file.write(json.dumps(record)[:25]); self._file.flush()
    mt.MetricsLog.write = on_nth(mt.MetricsLog.write, half_line)
elif kind == "sigterm":  # not a kill: a real SIGTERM, just after the Nth metrics line, as `kill` sends it
    write = mt.MetricsLog.write
    def write_then_term(self, record):
        write(self, record)
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGTERM)
    mt.MetricsLog.write = write_then_term
elif kind == "plot":
    def half_png(metrics, png):  # plot_losses writes a temporary file and renames it in
        open(os.path.join(os.path.dirname(png), "." + os.path.basename(png) + ".tmp.png"), "wb").write(b"\x89PNG")
        die()
    lp.plot_losses = half_png
from cllm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def train_args(corpus: Path, out: Path) -> list[str]:
    return ["train", "--data", str(corpus), "--out", str(out), *TRAIN_FLAGS]


def has_checkpoint(out: Path) -> bool:
    from cllm.checkpoint import resolve_checkpoint
    from cllm.errors import CLLMError

    try:
        resolve_checkpoint(out)
        return True
    except CLLMError:
        return False


def next_args(corpus: Path, out: Path) -> list[str]:
    """How a user carries on after a crash: --resume if there is a checkpoint, else start over."""
    return train_args(corpus, out) + (["--resume"] if has_checkpoint(out) else ["--overwrite"])


def run_killed(corpus: Path, out: Path, fault: str, timeout: float = 300) -> int:
    """One `cllm train` subprocess with ``fault`` injected; its exit code (-9 when it was killed)."""
    kind, arg = fault.split(":")
    args = next_args(corpus, out)
    if kind == "time":
        proc = subprocess.Popen([sys.executable, "-m", "cllm", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            proc.wait(float(arg))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=timeout)
    else:
        proc = subprocess.run([sys.executable, "-c", FAULT_HOOK, fault, *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=timeout)
        err = proc.stderr
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"{fault}: cllm train exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return proc.returncode


def checkpoints_intact(out: Path) -> bool:
    """Every checkpoint the run directory offers (latest, best) loads and verifies."""
    from cllm.checkpoint import BEST, load_checkpoint
    from cllm.errors import CLLMError

    try:
        if has_checkpoint(out):
            load_checkpoint(out)
        if (out / BEST / "trainer_state.json").is_file() or (out / f".{BEST}.old").is_dir():
            load_checkpoint(out / BEST)
        return True
    except CLLMError as e:
        print(f"corrupt: {e}", file=sys.stderr)
        return False


def finish(corpus: Path, out: Path, in_process: bool = True) -> None:
    """Carry the run on to max_steps, as a user would after the crash."""
    import contextlib
    import io

    args = next_args(corpus, out)
    if in_process:
        from cllm.cli import main

        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(args)
    else:
        rc = subprocess.run([sys.executable, "-m", "cllm", *args], capture_output=True).returncode
    if rc != 0:
        raise RuntimeError(f"resume of {out} exited {rc}")


def outcome(out: Path) -> dict:
    """What must equal a straight run's: final and best weights, and every logged loss."""
    import safetensors.torch

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "latest": safetensors.torch.load_file(str(out / "ckpt" / "model.safetensors")),
        "best": safetensors.torch.load_file(str(out / "best" / "model.safetensors")),
        "losses": [(r["step"], r["loss"], r["val_loss"]) for r in records],
        "png": (out / "loss.png").is_file(),
    }


def same_outcome(a: dict, b: dict) -> bool:
    import torch

    return (a["losses"] == b["losses"] and a["png"] and b["png"]
            and all(a[k].keys() == b[k].keys() and all(torch.equal(a[k][n], b[k][n]) for n in a[k])
                    for k in ("latest", "best")))


def straight_run(corpus: Path, out: Path) -> tuple[dict, float]:
    import contextlib
    import io

    from cllm.cli import main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(train_args(corpus, out))
    if rc != 0:
        raise RuntimeError("the straight run failed")
    return outcome(out), time.perf_counter() - start


def random_fault(rng: random.Random, kind: str, seconds: float) -> str:
    """A kill point of ``kind``; counts cover the whole run (24 steps: 6 saves of ~5 fsyncs, 4 evals)."""
    return {
        "time": lambda: f"time:{rng.uniform(0.5, seconds):.2f}",
        "fsync": lambda: f"fsync:{rng.randint(1, 45)}",
        "rename": lambda: f"rename:{rng.randint(1, 20)}",
        "eval": lambda: f"eval:{rng.randint(1, 4)}",
        "metrics": lambda: f"metrics:{rng.randint(1, MAX_STEPS)}",
        "plot": lambda: "plot:0",
    }[kind]()


def trial(corpus: Path, out: Path, fault: str, reference: dict) -> dict:
    """Kill a fresh run at ``fault``, check what it left, finish it, compare with ``reference``."""
    shutil.rmtree(out, ignore_errors=True)
    rc = run_killed(corpus, out, fault)
    intact = checkpoints_intact(out)
    finish(corpus, out)
    return {"fault": fault, "killed": rc == -signal.SIGKILL, "intact": intact,
            "equal": same_outcome(outcome(out), reference)}


def corpus_file(directory: Path) -> Path:
    from importlib import resources

    text = resources.files("cllm.corpus").joinpath("shakespeare.txt").read_text(encoding="utf-8")
    path = directory / "corpus.txt"
    path.write_text(text[:20000], encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=50, help="kill points (trials)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="cllm-faults-") as tmp:
        tmp = Path(tmp)
        corpus = corpus_file(tmp)
        reference, seconds = straight_run(corpus, tmp / "straight")
        seconds += 6.0  # a subprocess also spends seconds starting up and importing torch
        killed = resumed = equal = corrupt = 0
        start = time.perf_counter()
        results = []
        for i in range(args.points):
            fault = random_fault(rng, KINDS[i % len(KINDS)], seconds)
            r = trial(corpus, tmp / "run", fault, reference)
            results.append(r)
            killed += r["killed"]  # a kill point past the end of the run is not reached: not counted
            resumed += r["killed"]  # (a failed resume raises)
            equal += r["killed"] and r["equal"]
            corrupt += not r["intact"]
            print(f"{i + 1:3d} {fault:12s} killed={r['killed']} intact={r['intact']} equal={r['equal']}", flush=True)
        line = (f"killed {killed}, resumed {resumed}, resumed runs equal to straight ones {equal}, corrupt {corrupt}"
                f" ({args.points} points in {time.perf_counter() - start:.0f} s)")
        print(line)
        if args.json:
            print(json.dumps({"points": args.points, "killed": killed, "resumed": resumed, "equal": equal,
                              "corrupt": corrupt, "results": results}))
    return 0 if equal == resumed == killed and corrupt == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
