"""Where training metrics go: ``metrics.jsonl`` always, TensorBoard when asked, and ``loss.png``.

One small interface, ``MetricsLog.write(record)``: the loop hands it a dict per logged step and
does not care where it ends up.
"""

from __future__ import annotations

import json
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


def truncate_metrics(path: Path, keep_through: int) -> None:
    """Drop metric lines past the step being resumed from."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= keep_through]
    path.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    """Train and val loss against tokens seen, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(ln) for ln in metrics_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not records:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["tokens"] for r in records], [r["loss"] for r in records], label="train", lw=1)
    val = [r for r in records if r.get("val_loss") is not None]
    if val:
        ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", label="val")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
