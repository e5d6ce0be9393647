"""Character-level tokenizer: one id per distinct Unicode code point seen in training text."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..errors import CLLMError
from .base import SPECIAL_TOKENS, Tokenizer


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: Iterable[str]):
        self.chars = sorted(set(chars))
        if any(len(c) != 1 for c in self.chars):
            raise CLLMError("char tokenizer: every vocabulary entry must be a single character")
        offset = len(SPECIAL_TOKENS)
        self._itos = list(SPECIAL_TOKENS) + self.chars
        # A dense code point -> id table makes encoding one vectorised lookup; -1 marks "not in vocabulary".
        max_cp = max((ord(c) for c in self.chars), default=0)
        self._lookup = np.full(max_cp + 1, -1, dtype=np.int64)
        for i, c in enumerate(self.chars):
            self._lookup[ord(c)] = i + offset

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @classmethod
    def train(cls, texts: Iterable[str], **options) -> "CharTokenizer":
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(seen)

    def encode(self, text: str) -> np.ndarray:
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        ok = cps < len(self._lookup)
        ids = np.full(len(cps), -1, dtype=np.int64)
        ids[ok] = self._lookup[cps[ok]]
        bad = np.flatnonzero(ids < 0)
        if len(bad):
            pos = int(bad[0])
            raise CLLMError(
                f"character {text[pos]!r} at position {pos} is not in the tokenizer's vocabulary "
                f"({len(bad)} unknown character(s) in all)"
            )
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        offset = len(SPECIAL_TOKENS)
        return "".join(self._itos[i] for i in (int(i) for i in ids) if i >= offset)

    def to_dict(self) -> dict:
        return {"chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, data: dict) -> "CharTokenizer":
        return cls(data["chars"])
