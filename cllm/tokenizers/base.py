"""The tokenizer interface every kind implements, and the special tokens all of them share.

Every tokenizer reserves the same four special ids so that data, checkpoints and sampling never
depend on which kind produced the tokens: <pad>=0, <unk>=1, <bos>=2, <eos>=3. Documents are
separated by <eos> in prepared data.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Iterable

import numpy as np

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(len(SPECIAL_TOKENS))


class Tokenizer(ABC):
    """Maps text to integer ids and back. Subclasses set ``kind`` and implement the abstract methods."""

    kind: str = ""
    eos_id: int | None = EOS_ID
    bos_id: int | None = BOS_ID

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, specials included; every id is in ``range(vocab_size)``."""

    @classmethod
    @abstractmethod
    def train(cls, texts: Iterable[str], **options) -> "Tokenizer":
        """Build a tokenizer from an iterable of documents."""

    @abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """Text -> int64 array of ids. Raises CLLMError for text this tokenizer cannot represent."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Special tokens other than <unk> decode to nothing."""

    @abstractmethod
    def to_dict(self) -> dict:
        """A JSON-serialisable description that ``from_dict`` turns back into an identical tokenizer."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        ...

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, **self.to_dict()}, ensure_ascii=False, sort_keys=True)

    def fingerprint(self) -> str:
        """A short hash of the vocabulary: two tokenizers with equal fingerprints map text identically."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]
