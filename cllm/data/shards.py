"""Token shard files: a 32-byte header, then the token ids as a flat little-endian array.

Header: magic ``b"CLLMTOK\\0"`` (8 bytes), format version (uint32), bytes per token (uint32: 2 for
uint16, 4 for uint32), token count (uint64), 8 reserved zero bytes. A shard is read as a read-only
memmap after checking the magic, version, dtype and that the file holds exactly ``count`` tokens,
so a truncated or foreign file is a one-line error, never silently wrong tokens.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import CLLMError

MAGIC = b"CLLMTOK\0"
SHARD_VERSION = 1
HEADER = struct.Struct("<8sIIQ8x")  # 32 bytes
DTYPES = {2: "uint16", 4: "uint32"}


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 65536 else "uint32"


def read_header(path: Path) -> tuple[str, int]:
    """``(dtype, token_count)`` of a shard; CLLMError for a wrong header or a truncated file."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
        size = path.stat().st_size
    except FileNotFoundError:
        raise CLLMError(f"token shard missing: {path}") from None
    if len(head) < HEADER.size:
        raise CLLMError(f"token shard {path} is truncated (no complete header)")
    magic, version, itemsize, count = HEADER.unpack(head)
    if magic != MAGIC:
        raise CLLMError(f"{path} is not a cllm token shard (wrong magic bytes)")
    if version != SHARD_VERSION or itemsize not in DTYPES:
        raise CLLMError(f"token shard {path} has an unsupported header (version {version}, {itemsize}-byte tokens)")
    if size != HEADER.size + count * itemsize:
        raise CLLMError(f"token shard {path} is truncated or overlong: {size} bytes, header says "
                        f"{count:,} tokens = {HEADER.size + count * itemsize} bytes")
    return DTYPES[itemsize], count


def open_shard(path: Path, dtype: str | None = None, count: int | None = None) -> np.ndarray:
    """The shard's tokens as a read-only memmap (checked against the expected dtype and count)."""
    found_dtype, found_count = read_header(path)
    if (dtype is not None and found_dtype != dtype) or (count is not None and found_count != count):
        raise CLLMError(f"token shard {path} does not match meta.json ({found_count:,} {found_dtype} tokens, "
                        f"expected {count:,} {dtype})")
    if found_count == 0:
        return np.zeros(0, dtype=found_dtype)
    return np.memmap(path, dtype=found_dtype, mode="r", offset=HEADER.size, shape=(found_count,))


def shard_name(prefix: str, k: int) -> str:
    """``train.bin``, ``train-00001.bin``, ``train-00002.bin``, ...: a one-shard split is just ``train.bin``."""
    return f"{prefix}.bin" if k == 0 else f"{prefix}-{k:05d}.bin"


class ShardWriter:
    """Appends token arrays to ``{prefix}.bin``, ``{prefix}-00001.bin``, ... of at most ``shard_tokens``
    tokens each, holding nothing in memory beyond the array being written."""

    def __init__(self, directory: Path, prefix: str, dtype: str, shard_tokens: int):
        self.dir, self.prefix, self.dtype, self.shard_tokens = Path(directory), prefix, np.dtype(dtype), shard_tokens
        self.shards: list[tuple[str, int]] = []  # (file name, tokens) of finished shards
        self._f = None
        self._count = 0
        self.total = 0

    def _open(self):
        name = shard_name(self.prefix, len(self.shards))
        self._name, self._count = name, 0
        self._f = open(self.dir / name, "wb")
        self._f.write(HEADER.pack(MAGIC, SHARD_VERSION, self.dtype.itemsize, 0))

    def _close_current(self):
        self._f.seek(0)
        self._f.write(HEADER.pack(MAGIC, SHARD_VERSION, self.dtype.itemsize, self._count))
        self._f.close()
        self.shards.append((self._name, self._count))
        self._f = None

    def write(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        pos = 0
        while pos < len(ids):
            if self._f is None:
                self._open()
            take = min(len(ids) - pos, self.shard_tokens - self._count)
            ids[pos : pos + take].astype(self.dtype, copy=False).tofile(self._f)
            self._count += take
            self.total += take
            pos += take
            if self._count == self.shard_tokens:
                self._close_current()

    def adopt(self, path: Path, n_tokens: int) -> bool:
        """Take the finished shard file ``path`` (``n_tokens`` tokens) as this writer's next shard by
        renaming it, no copy. Only possible between shards: False when one is half-written (the
        caller then copies the tokens through ``write``)."""
        if self._f is not None:
            return False
        name = shard_name(self.prefix, len(self.shards))
        Path(path).rename(self.dir / name)
        self.shards.append((name, n_tokens))
        return True

    def close(self) -> list[tuple[str, int]]:
        if self._f is not None:
            self._close_current()
        return self.shards
