"""Checkpoints: safe to load (no code execution), atomic to write, verified on read.

A checkpoint is a directory:
  model.safetensors    weights (safetensors: tensors only, nothing executable)
  optimizer.pt         optimizer state (torch.save; read back with weights_only=True); optional
  tokenizer.json       the tokenizer
  trainer_state.json   step, config, RNG states, data sampler state, best val loss, and a manifest
                       of the other files' sizes and SHA-256, written last

It is written into a temporary sibling directory and renamed into place, so a crash at any moment
leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from .config import Config
from .errors import CLLMError
from .model import GPT
from .tokenizers import Tokenizer, save_tokenizer, tokenizer_from_json

FORMAT_VERSION = 1
STATE_FILE = "trainer_state.json"
LATEST = "ckpt"
BEST = "best"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    target: str | Path,
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    state: dict,
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Write a checkpoint directory at ``target`` atomically; ``state`` is JSON-serialisable."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        save_tokenizer(tokenizer, tmp / "tokenizer.json")
        manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
        full_state = {"format": FORMAT_VERSION, **state, "files": manifest}
        (tmp / STATE_FILE).write_text(json.dumps(full_state, indent=1), encoding="utf-8")
        for p in tmp.iterdir():
            _fsync(p)
        _fsync(tmp)
        # Two renames: previous -> .old, new -> target. A crash between them leaves .old, which
        # resolve_checkpoint() falls back to.
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its latest checkpoint) or a checkpoint directory -> the checkpoint directory."""
    path = Path(path)
    for candidate in (path, path / LATEST, path / f".{LATEST}.old", path.parent / f".{path.name}.old"):
        if (candidate / STATE_FILE).is_file():
            return candidate
    if not path.exists():
        raise CLLMError(f"checkpoint not found: {path}")
    raise CLLMError(f"no checkpoint in {path} (expected {STATE_FILE} there or in {path / LATEST})")


@dataclass
class Checkpoint:
    dir: Path
    state: dict
    tokenizer: Tokenizer

    @property
    def config(self) -> dict:
        return self.state["config"]

    def load_weights(self, model: torch.nn.Module) -> None:
        try:
            missing, unexpected = safetensors.torch.load_model(model, str(self.dir / "model.safetensors"), strict=False)
        except Exception as e:  # safetensors raises several types for malformed files
            raise CLLMError(f"cannot read weights in {self.dir}: {str(e).splitlines()[0]}") from None
        if missing or unexpected:
            raise CLLMError(f"weights in {self.dir} do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")

    def optimizer_state(self) -> dict:
        path = self.dir / "optimizer.pt"
        if not path.is_file():
            raise CLLMError(f"checkpoint {self.dir} has no optimizer state, so it cannot be resumed")
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path, verify: bool = True) -> Checkpoint:
    """Read and verify a checkpoint: every file the manifest lists must exist with its size and hash."""
    ckpt_dir = resolve_checkpoint(path)
    try:
        state = json.loads((ckpt_dir / STATE_FILE).read_text(encoding="utf-8"))
        files = state["files"]
        state["config"], state["step"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise CLLMError(f"checkpoint {ckpt_dir} is corrupt: {STATE_FILE} is unreadable or incomplete") from None
    if state.get("format") != FORMAT_VERSION:
        raise CLLMError(f"checkpoint {ckpt_dir} has format {state.get('format')}, this cllm reads {FORMAT_VERSION}")
    for name, info in files.items():
        p = ckpt_dir / name
        if not p.is_file():
            raise CLLMError(f"checkpoint {ckpt_dir} is incomplete: {name} is missing")
        if p.stat().st_size != info["bytes"]:
            raise CLLMError(f"checkpoint file {p} is truncated or from another checkpoint "
                            f"({p.stat().st_size} bytes, its manifest says {info['bytes']})")
        if verify and _sha256(p) != info["sha256"]:
            raise CLLMError(f"checkpoint file {p} is corrupt or from another checkpoint (hash mismatch)")
    tokenizer = tokenizer_from_json((ckpt_dir / "tokenizer.json").read_text(encoding="utf-8"))
    return Checkpoint(ckpt_dir, state, tokenizer)


def load_model(path: str | Path, device: torch.device | str = "cpu",
               checkpoint: Checkpoint | None = None) -> tuple[GPT, Tokenizer, Config]:
    """A run or checkpoint directory -> (model on ``device`` in eval mode, tokenizer, config).

    The one way a trained model is loaded (sample, eval, crystal analyze, resume); pass an already
    read ``checkpoint`` to avoid reading and verifying its files twice.
    """
    ckpt = checkpoint or load_checkpoint(path)
    cfg = Config.from_dict(ckpt.config, where=f"config in {ckpt.dir}")
    model = GPT(cfg.model)
    ckpt.load_weights(model)
    return model.to(device).eval(), ckpt.tokenizer, cfg
