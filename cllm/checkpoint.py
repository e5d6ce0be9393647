"""Checkpoints: safe to load (no code execution), atomic to write, verified on read.

A checkpoint is a directory:
  model.safetensors    weights (safetensors: tensors only, nothing executable)
  optimizer.pt         optimizer state (torch.save; read back with weights_only=True); optional
  tokenizer.json       the tokenizer
  trainer_state.json   step, config, RNG states, data sampler state, best val loss, and a manifest
                       of the other files' sizes and SHA-256, written last

It is written into a temporary sibling directory and renamed into place, so a crash at any moment
leaves either the previous checkpoint or the new one, never a mix. A write that fails (disk full, no
permission) leaves the previous checkpoint in place and raises a one-line CLLMError; weights that are
not finite (NaN/inf) are never written.
"""

from __future__ import annotations

import hashlib
import io
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


class CheckpointWriteError(CLLMError, OSError):
    """Writing a checkpoint failed in the environment (disk full, permissions): a one-line CLLMError
    that callers catching OSError still catch."""


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_tmp(target: Path) -> None:
    """Temporary directories left by processes that were killed while saving (kill -9, power loss)."""
    for p in target.parent.glob(f".{target.name}.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)


def check_finite(model: torch.nn.Module, where: str) -> None:
    """Raise CLLMError naming the first parameter or buffer holding NaN or inf."""
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CLLMError(f"refusing to save {where}: the weights are not finite ({name} holds NaN or inf)")


def save_checkpoint(
    target: str | Path,
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    state: dict,
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Write a checkpoint directory at ``target`` atomically; ``state`` is JSON-serialisable.

    Non-finite weights raise CLLMError before anything is written; an OSError while writing (disk
    full, permissions) raises CLLMError naming the cause, with the previous checkpoint left intact."""
    target = Path(target)
    check_finite(model, f"checkpoint {target}")
    try:
        return _save(target, model, tokenizer, state, optimizer)
    except (OSError, safetensors.SafetensorError) as e:
        cause = getattr(e, "strerror", None) or str(e).splitlines()[0]
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        kept = "; the previous checkpoint there is intact" if (target / STATE_FILE).is_file() else ""
        raise CheckpointWriteError(f"cannot write checkpoint {target}: {cause}{where}{kept}") from e


def _save(target: Path, model, tokenizer, state: dict, optimizer) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    old = target.parent / f".{target.name}.old"
    _remove_stale_tmp(target)
    tmp.mkdir()
    try:
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
        if optimizer is not None:  # serialised in memory, so a failed write is an OSError (torch's writer
            buffer = io.BytesIO()  # reports a full disk as an opaque RuntimeError)
            torch.save(optimizer.state_dict(), buffer)
            with open(tmp / "optimizer.pt", "wb") as f:
                f.write(buffer.getbuffer())
            del buffer
        save_tokenizer(tokenizer, tmp / "tokenizer.json")
        manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
        full_state = {"format": FORMAT_VERSION, **state, "files": manifest}
        full_state["state_sha256"] = _state_digest(full_state)
        (tmp / STATE_FILE).write_text(json.dumps(full_state, indent=1), encoding="utf-8")
        for p in tmp.iterdir():
            _fsync(p)
        _fsync(tmp)
        # Two renames: previous -> .old, new -> target. A crash between them leaves .old, which
        # resolve_checkpoint() falls back to.
        moved = False
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            moved = True
        try:
            os.replace(tmp, target)
        except BaseException:
            if moved and not target.exists():  # put the previous one back
                os.replace(old, target)
            raise
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
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling raises many types for a damaged file
            raise CLLMError(f"cannot read optimizer state {path}: {(str(e).splitlines() or [type(e).__name__])[0]}") from None


def _state_digest(state: dict) -> str:
    """SHA-256 of trainer_state.json's content (as JSON reads it back) without this field itself: the
    manifest covers the other files, this covers the manifest, config and RNG state."""
    body = {k: v for k, v in json.loads(json.dumps(state)).items() if k != "state_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _valid_state(state) -> bool:
    files = state.get("files") if isinstance(state, dict) else None
    return (isinstance(files, dict) and isinstance(state.get("config"), dict)
            and isinstance(state.get("step"), int) and not isinstance(state["step"], bool)
            and all(isinstance(name, str) and Path(name).name == name and name not in ("", ".", "..")
                    and isinstance(info, dict) and type(info.get("bytes")) is int
                    and isinstance(info.get("sha256"), str) for name, info in files.items()))


def load_checkpoint(path: str | Path, verify: bool = True) -> Checkpoint:
    """Read and verify a checkpoint: every file the manifest lists must exist with its size and hash."""
    ckpt_dir = resolve_checkpoint(path)
    try:
        state = json.loads((ckpt_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        state = None
    if not _valid_state(state):
        raise CLLMError(f"checkpoint {ckpt_dir} is corrupt: {STATE_FILE} is unreadable or incomplete")
    if "state_sha256" in state and state["state_sha256"] != _state_digest(state):  # (older checkpoints lack it)
        raise CLLMError(f"checkpoint {ckpt_dir} is corrupt: {STATE_FILE} does not match its checksum")
    files = state["files"]
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
    if not (ckpt_dir / "tokenizer.json").is_file():
        raise CLLMError(f"checkpoint {ckpt_dir} is incomplete: tokenizer.json is missing")
    try:
        tokenizer = tokenizer_from_json((ckpt_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CLLMError(f"checkpoint {ckpt_dir} is corrupt: tokenizer.json is not UTF-8") from None
    return Checkpoint(ckpt_dir, state, tokenizer)


def load_model(path: str | Path, device: torch.device | str = "cpu",
               checkpoint: Checkpoint | None = None) -> tuple[GPT, Tokenizer, Config]:
    """A run or checkpoint directory -> (model on ``device`` in eval mode, tokenizer, config).

    The one way a trained model is loaded (sample, eval, crystal analyze, resume); pass an already
    read ``checkpoint`` to avoid reading and verifying its files twice.
    """
    ckpt = checkpoint or load_checkpoint(path)
    cfg = Config.from_dict(ckpt.config, where=f"config in {ckpt.dir}").validate()
    model = GPT(cfg.model)
    ckpt.load_weights(model)
    return model.to(device).eval(), ckpt.tokenizer, cfg
