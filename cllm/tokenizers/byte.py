"""Byte-level tokenizer: the UTF-8 bytes of the text, byte b at id 4 + b. Lossless for any text."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..errors import CLLMError
from .base import SPECIAL_TOKENS, UNK_ID, UNK_TEXT, Tokenizer

_OFFSET = len(SPECIAL_TOKENS)


def utf8_bytes(text: str) -> bytes:
    """``text`` as UTF-8; CLLMError (with the position) for a lone surrogate, which UTF-8 cannot hold."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CLLMError(
            f"text is not valid Unicode: lone surrogate {text[e.start]!r} at position {e.start}"
        ) from None


class ByteTokenizer(Tokenizer):
    """A fixed 260-id vocabulary: the 4 specials, then the 256 byte values. Training learns nothing;
    the options (vocab_size, min_freq, lowercase) do not apply and are ignored."""

    kind = "byte"

    @property
    def vocab_size(self) -> int:
        return _OFFSET + 256

    @classmethod
    def train(cls, texts: Iterable[str], **options) -> "ByteTokenizer":
        return cls()

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(utf8_bytes(text), dtype=np.uint8).astype(np.int64) + _OFFSET

    def decode(self, ids: Iterable[int]) -> str:
        ids = self._check_ids(ids)
        if not np.any(ids == UNK_ID):
            return (ids[ids >= _OFFSET] - _OFFSET).astype(np.uint8).tobytes().decode("utf-8", "replace")
        # Decode each <unk>-free stretch separately so a byte sequence never spans an <unk>.
        parts = np.split(ids, np.flatnonzero(ids == UNK_ID))
        return UNK_TEXT.join(self.decode(p[p != UNK_ID]) for p in parts)

    def id_to_token(self, i: int) -> str:
        i = int(self._check_ids([i])[0])
        return SPECIAL_TOKENS[i] if i < _OFFSET else f"<0x{i - _OFFSET:02X}>"

    def to_dict(self) -> dict:
        return {}

    @classmethod
    def from_dict(cls, data: dict) -> "ByteTokenizer":
        return cls()
