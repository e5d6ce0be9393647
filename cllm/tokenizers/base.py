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

from ..errors import CLLMError

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(len(SPECIAL_TOKENS))
#: What <unk> decodes to: U+FFFD REPLACEMENT CHARACTER, so lost text stays visible but cannot be
#: confused with a literal "<unk>" in the corpus.
UNK_TEXT = "\ufffd"


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

    # ---- compatible extensions: concrete helpers every kind gets (subclasses override for speed) ----

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        """Encode several documents; same result as ``[self.encode(t) for t in texts]``."""
        return [self.encode(t) for t in texts]

    def encode_with_unk(self, text: str) -> np.ndarray:
        """Like ``encode`` but never raises for unrepresentable text: such pieces become <unk>."""
        return self.encode(text)

    def unknown_rate(self, text: str) -> float:
        """Fraction of the tokens of ``text`` that are <unk> (0.0 for empty text)."""
        ids = self.encode_with_unk(text)
        return float(np.count_nonzero(ids == UNK_ID)) / len(ids) if len(ids) else 0.0

    def id_to_token(self, i: int) -> str:
        """The vocabulary entry of one id (a special's name for ids 0..3), for display."""
        i = int(self._check_ids([i])[0])
        return SPECIAL_TOKENS[i] if i < len(SPECIAL_TOKENS) else self.decode([i])

    def _check_ids(self, ids: Iterable[int]) -> np.ndarray:
        """Ids as an int64 array; CLLMError if any is outside ``range(vocab_size)``."""
        try:
            arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
        except (TypeError, ValueError) as e:
            raise CLLMError(f"token ids must be integers: {e}") from None
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise CLLMError("token ids must be a flat sequence of integers")
        arr = arr.astype(np.int64, copy=False)
        bad = np.flatnonzero((arr < 0) | (arr >= self.vocab_size))
        if len(bad):
            raise CLLMError(
                f"token id {int(arr[bad[0]])} at position {int(bad[0])} is outside this "
                f"{self.kind} tokenizer's vocabulary (0..{self.vocab_size - 1})"
            )
        return arr

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, **self.to_dict()}, ensure_ascii=False, sort_keys=True)

    def fingerprint(self) -> str:
        """A short hash of the vocabulary: two tokenizers with equal fingerprints map text identically."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]


class TableTokenizer(Tokenizer):
    """A tokenizer whose ids index one table: the four specials, then its own entries (char, word).

    Subclasses fill ``_itos``; decoding joins the entries, drops the specials and shows <unk> as
    UNK_TEXT.
    """

    _itos: list[str]

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def decode(self, ids: Iterable[int]) -> str:
        offset, itos = len(SPECIAL_TOKENS), self._itos
        return "".join(
            itos[i] if i >= offset else (UNK_TEXT if i == UNK_ID else "")
            for i in self._check_ids(ids).tolist()
        )

    def id_to_token(self, i: int) -> str:
        return self._itos[int(self._check_ids([i])[0])]
