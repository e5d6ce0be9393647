"""Training: the step (``Trainer``), the loop (``train``), optimizers and schedules, metrics, and
the benchmark that times the very same step."""

from .loop import TrainResult, load_run_checkpoint, open_run, train
from .optim import lr_at, make_optimizer
from .trainer import Trainer, validation_loss

__all__ = ["Trainer", "TrainResult", "train", "open_run", "load_run_checkpoint", "lr_at", "make_optimizer",
           "validation_loss"]
