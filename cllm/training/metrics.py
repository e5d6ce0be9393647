"""Where training metrics go: ``metrics.jsonl`` always, TensorBoard when asked, and ``loss.png``.

One small interface, ``MetricsLog.write(record)``: the loop hands it a dict per logged step and
does not care where it ends up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import CLLMError

SCALARS = ("loss", "val_loss", "lr", "tokens_per_sec", "mfu")  # what TensorBoard plots, against the step


class MetricsLog:
    """Appends records to ``out/metrics.jsonl`` (lines past ``resume_step`` are dropped first, so a
    resumed log reads as one run); with ``kind == "tensorboard"`` also writes event files to
    ``out/tensorboard`` (``tensorboard --logdir OUT``)."""

    def __init__(self, out: Path, kind: str = "jsonl", resume_step: int = 0):
        self.path = Path(out) / "metrics.jsonl"
        truncate_metrics(self.path, keep_through=resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._file.close()
                raise CLLMError("--log tensorboard needs the tensorboard package: pip install 'cllm[tensorboard]'") from None
            self._tb = SummaryWriter(str(Path(out) / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name in SCALARS:
                if record.get(name) is not None:
                    self._tb.add_scalar(name, record[name], record["step"])
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _records(path: Path) -> list[tuple[str, dict]]:
    """(line, record) for each line of metrics.jsonl that is a record; a line cut short by a crash
    (kill -9, full disk) or otherwise unreadable is left out."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            out.append((line, record))
    return out


def truncate_metrics(path: Path, keep_through: int) -> None:
    """Drop metric lines past the step being resumed from (and any broken line), atomically."""
    if not path.exists():
        return
    kept = [line for line, record in _records(path) if record["step"] <= keep_through]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    """Train and val loss against tokens seen, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for _, r in _records(metrics_path) if isinstance(r.get("tokens"), (int, float))
               and isinstance(r.get("loss"), (int, float))]
    if not records:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["tokens"] for r in records], [r["loss"] for r in records], label="train", lw=1)
    val = [r for r in records if isinstance(r.get("val_loss"), (int, float))]
    if val:
        ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", label="val")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = Path(png_path).with_name(f".{Path(png_path).name}.tmp.png")  # written whole, then renamed in
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
