"""Text -> tokens on disk -> batches.

``prepare`` reads a file or a directory of text files, trains the tokenizer, and writes
``train.bin`` / ``val.bin`` (numpy memmaps of token ids), ``tokenizer.json`` and ``meta.json``.
Preparation is cached: a second call with unchanged inputs and settings returns at once.
``Batches`` samples random ``[B, T]`` windows from a split with its own seeded generator, whose
state is part of every checkpoint so a resumed run draws exactly the batches it would have drawn.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig
from .errors import CLLMError
from .tokenizers import EOS_ID, Tokenizer, load_tokenizer, save_tokenizer, tokenizer_class

BUNDLED_CORPUS = "bundled:shakespeare"
META_VERSION = 1


def bundled_corpus_path() -> Path:
    return Path(str(resources.files("cllm.corpus").joinpath("shakespeare.txt")))


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def find_text_files(path: Path) -> list[Path]:
    """The text files at ``path``: the file itself, or every non-binary file below a directory, sorted."""
    if not path.exists():
        raise CLLMError(f"data path not found: {path}")
    if path.is_file():
        return [path]
    files, skipped = [], []
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        if any(part.startswith(".") for part in p.relative_to(path).parts):
            continue  # hidden files and folders (.git, editor swap files) are never corpus text
        (skipped if _looks_binary(p) else files).append(p)
    if not files:
        raise CLLMError(f"no text files found in directory {path} ({len(skipped)} binary files skipped)")
    for p in skipped:
        print(f"note: skipping binary file {p}", file=sys.stderr)
    return files


def read_text(path: Path, errors: str = "strict") -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise CLLMError(
            f"{path} is not valid UTF-8 (byte offset {e.start}); pass --errors replace to substitute U+FFFD"
        ) from None


def _sources_fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.resolve()).encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\1")
    return h.hexdigest()


@dataclass
class PreparedData:
    """A prepared dataset on disk: where it is, its tokenizer and its token counts."""

    dir: Path
    tokenizer: Tokenizer
    meta: dict

    def tokens(self, split: str) -> np.memmap:
        """The split's token ids, shape ``[n_tokens]``, memory-mapped read-only."""
        return np.memmap(self.dir / f"{split}.bin", dtype=self.meta["dtype"], mode="r")

    @property
    def fingerprint(self) -> str:
        """Identifies tokens and tokenizer together: a checkpoint may resume only on equal data."""
        return self.meta["fingerprint"]


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 65535 else "uint32"


def load_prepared(data_dir: str | Path) -> PreparedData:
    data_dir = Path(data_dir)
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        raise CLLMError(f"{data_dir} is not a prepared dataset (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tokenizer = load_tokenizer(data_dir / "tokenizer.json")
        for split in ("train", "val"):
            size = (data_dir / f"{split}.bin").stat().st_size
            if size != meta[f"{split}_tokens"] * np.dtype(meta["dtype"]).itemsize:
                raise CLLMError(f"{data_dir / (split + '.bin')} is truncated or does not match meta.json")
    except (json.JSONDecodeError, KeyError, FileNotFoundError) as e:
        raise CLLMError(f"prepared dataset {data_dir} is incomplete or corrupt ({e})") from None
    return PreparedData(data_dir, tokenizer, meta)


def prepare(cfg: DataConfig, out_dir: str | Path, min_tokens: int = 2) -> PreparedData:
    """Tokenise ``cfg.data`` into ``out_dir``, or reuse what is there when inputs and settings match.

    ``min_tokens``: each split must hold at least this many tokens (block_size + 1 for training).
    Written into a temporary directory and renamed into place, so a crash leaves nothing half-written.
    """
    out_dir = Path(out_dir)
    source = Path(cfg.data) if cfg.data else bundled_corpus_path()
    files = find_text_files(source)
    settings = {k: v for k, v in asdict(cfg).items() if k != "data"}
    key = hashlib.sha256(json.dumps([_sources_fingerprint(files), settings], sort_keys=True).encode()).hexdigest()

    if (out_dir / "meta.json").is_file():
        try:
            cached = load_prepared(out_dir)
            if cached.meta.get("cache_key") == key:
                _check_split_sizes(cached.meta, min_tokens)
                return cached
        except CLLMError:
            pass  # a stale or broken cache is simply rebuilt

    texts = [read_text(p, cfg.errors) for p in files]
    if not any(texts):
        raise CLLMError(f"corpus is empty: {source}")
    tokenizer = tokenizer_class(cfg.tokenizer).train(
        (t for t in texts if t), vocab_size=cfg.tokenizer_vocab_size
    )
    # Documents are joined with <eos> between them; the last document has none after it, so a
    # single-file corpus tokenises to exactly its own tokens and splits at the same place as the text.
    pieces = []
    for i, text in enumerate(t for t in texts if t):
        if i:
            pieces.append(np.array([EOS_ID], dtype=np.int64))
        pieces.append(tokenizer.encode(text))
    ids = np.concatenate(pieces)
    n_train = int(len(ids) * (1.0 - cfg.val_fraction))
    dtype = token_dtype(tokenizer.vocab_size)
    meta = {
        "version": META_VERSION,
        "cache_key": key,
        "sources": [str(p) for p in files] if cfg.data else [BUNDLED_CORPUS],
        "source_bytes": sum(p.stat().st_size for p in files),
        "settings": settings,
        "tokenizer_kind": tokenizer.kind,
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "vocab_size": tokenizer.vocab_size,
        "dtype": dtype,
        "train_tokens": n_train,
        "val_tokens": len(ids) - n_train,
        "fingerprint": hashlib.sha256(key.encode() + tokenizer.fingerprint().encode()).hexdigest()[:16],
    }
    _check_split_sizes(meta, min_tokens)

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ids[:n_train].astype(dtype).tofile(tmp / "train.bin")
        ids[n_train:].astype(dtype).tofile(tmp / "val.bin")
        save_tokenizer(tokenizer, tmp / "tokenizer.json")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PreparedData(out_dir, tokenizer, meta)


def _check_split_sizes(meta: dict, min_tokens: int) -> None:
    for split in ("train", "val"):
        n = meta[f"{split}_tokens"]
        if n < min_tokens:
            raise CLLMError(
                f"the {split} split has {n} tokens, fewer than block_size + 1 = {min_tokens}; "
                "use more text, a smaller --block-size, or a different --val-fraction"
            )


class Batches:
    """Random ``[batch_size, block_size]`` windows of one split, drawn by a seeded numpy generator.

    ``get()`` returns ``(x, y)`` int64 tensors of shape ``[B, T]`` with ``y`` = ``x`` shifted by one.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, block_size: int, seed: int, device="cpu"):
        if len(tokens) < block_size + 1:
            raise CLLMError(f"split has {len(tokens)} tokens, fewer than block_size + 1 = {block_size + 1}")
        self.tokens = tokens
        self.batch_size, self.block_size = batch_size, block_size
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.device = torch.device(device)
        self._offsets = np.arange(block_size + 1)

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self.rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)
        window = torch.from_numpy(self.tokens[starts[:, None] + self._offsets].astype(np.int64))
        if self.device.type == "cuda":
            window = window.pin_memory().to(self.device, non_blocking=True)
        return window[:, :-1], window[:, 1:]

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
