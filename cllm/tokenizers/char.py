"""Character-level tokenizer: one id per distinct Unicode code point seen in training text."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..errors import CLLMError
from .base import SPECIAL_TOKENS, UNK_ID, TableTokenizer


class CharTokenizer(TableTokenizer):
    """Ids 4.. are the training text's distinct characters in code point order.

    ``encode`` raises CLLMError on a character outside the vocabulary (``encode_with_unk`` maps it to
    <unk> instead). Training options other than ``lowercase`` (vocab_size, min_freq) do not apply.
    """

    kind = "char"

    def __init__(self, chars: Iterable[str], lowercase: bool = False):
        self.lowercase = bool(lowercase)
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

    @classmethod
    def train(cls, texts: Iterable[str], lowercase: bool = False, **options) -> "CharTokenizer":
        seen: set[str] = set()
        for text in texts:
            seen.update(text.lower() if lowercase else text)
        return cls(seen, lowercase=lowercase)

    def _lookup_ids(self, text: str) -> np.ndarray:
        if self.lowercase:
            text = text.lower()
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        ok = cps < len(self._lookup)
        ids = np.full(len(cps), -1, dtype=np.int64)
        ids[ok] = self._lookup[cps[ok]]
        return ids

    def encode(self, text: str) -> np.ndarray:
        ids = self._lookup_ids(text)
        bad = np.flatnonzero(ids < 0)
        if len(bad):
            pos = int(bad[0])
            shown = text.lower() if self.lowercase else text
            raise CLLMError(
                f"character {shown[pos]!r} at position {pos} is not in the tokenizer's vocabulary "
                f"({len(bad)} unknown character(s) in all)"
            )
        return ids

    def encode_with_unk(self, text: str) -> np.ndarray:
        ids = self._lookup_ids(text)
        ids[ids < 0] = UNK_ID
        return ids

    def to_dict(self) -> dict:
        # "lowercase" only appears when set, so case-keeping tokenizers keep their earlier fingerprints.
        return {"chars": "".join(self.chars), **({"lowercase": True} if self.lowercase else {})}

    @classmethod
    def from_dict(cls, data: dict) -> "CharTokenizer":
        return cls(data["chars"], lowercase=data.get("lowercase", False))
