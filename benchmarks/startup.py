"""The fixed cost of a `cllm` process: imports before the first step and the interpreter's exit.

    python benchmarks/startup.py [--rounds 5]

Short runs (the speedrun's 15-20 s, the README's first command) pay these on every start. Printed,
medians of ``--rounds`` fresh processes each, alternated:
  * import times: torch; Dynamo, which torch.optim imports when the first optimizer is built,
    compiled or not; matplotlib, for the loss plot at the end of a run;
  * exit: seconds from the last line of a script that built an AdamW and stepped it, to the
    process's end, as it is and with one collection and the survivors frozen first
    (``gc.collect(); gc.freeze()``, which `cllm` does on its way out: ``cllm.cli.entry``);
  * a whole tiny `cllm train` process (`--preset tiny --max-steps 1`) through ``cllm.cli.entry`` and
    through ``cllm.cli.main`` alone, so the difference is the frozen exit.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "cllm" / "corpus" / "shakespeare.txt"

IMPORTS = {
    "torch": "import torch",
    "+ torch._dynamo": "import torch, torch._dynamo",
    "+ matplotlib.pyplot": "import torch, torch._dynamo, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot",
}
STEP = "import torch\nopt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))])\nopt.step()\n"
STAMP = "import sys, time; sys.stderr.write(repr(time.time())); sys.stderr.flush()\n"


def seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def exit_seconds(code: str) -> float:
    """From the script's last line (a timestamp it writes) to the process's end."""
    p = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return time.time() - float(p.stderr.strip().splitlines()[-1])


def train_seconds(entry: str, data: str, out: str) -> float:
    code = (f"import sys; from cllm.cli import {entry}; sys.exit({entry}(['train', '--preset', 'tiny', '--data', "
            f"{data!r}, '--out', {out!r}, '--overwrite', '--max-steps', '1', '--eval-batches', '1', '--no-compile', "
            "'--no-progress', '--sample-tokens', '0']))")
    return seconds(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "data")
        subprocess.run([sys.executable, "-m", "cllm", "prepare", "--data", str(CORPUS), "--out", data], check=True,
                       capture_output=True)
        seconds("import torch, torch._dynamo, matplotlib")  # warm the page cache
        for _ in range(args.rounds):
            for name, code in IMPORTS.items():
                times.setdefault(f"import {name}", []).append(seconds(code))
            times.setdefault("exit after an AdamW step", []).append(exit_seconds(STEP + STAMP))
            times.setdefault("  the same, collected once and frozen", []).append(
                exit_seconds(STEP + STAMP + "import gc; gc.collect(); gc.freeze()\n"))
            times.setdefault("cllm train (tiny, 1 step), cli.main", []).append(train_seconds("main", data, f"{tmp}/a"))
            times.setdefault("  the same, cli.entry (quick exit)", []).append(train_seconds("entry", data, f"{tmp}/b"))
    for name, ts in times.items():
        print(f"{name:38} {statistics.median(ts):6.2f} s  (median of {len(ts)})")


if __name__ == "__main__":
    main()
