"""A tokenizer of any kind plus reserved chat tokens (turn boundaries) appended after its vocabulary.

The chat template (cllm.finetune.template) needs a few tokens that no text can produce: the start
of a system, user or assistant turn, and the end of a turn. ``ChatTokenizer`` wraps an existing
tokenizer and gives them the ids right after the wrapped vocabulary, so every existing id keeps
its meaning and a base model trained before (on the wrapped tokenizer) can be fine-tuned once its
embedding and LM head grow by these rows. Text encodes exactly as with the wrapped tokenizer (a
literal "<|user|>" in text stays text); the reserved ids decode to nothing, like the other specials.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..errors import CLLMError
from .base import Tokenizer


class ChatTokenizer(Tokenizer):
    kind = "chat"

    def __init__(self, base: Tokenizer, tokens: Iterable[str]):
        if isinstance(base, ChatTokenizer):
            raise CLLMError("a chat tokenizer cannot wrap another chat tokenizer")
        self.base = base
        self.tokens = list(tokens)
        if not self.tokens or len(set(self.tokens)) != len(self.tokens):
            raise CLLMError(f"chat tokens must be distinct and at least one, got {self.tokens}")
        self.eos_id, self.bos_id = base.eos_id, base.bos_id

    @property
    def first_id(self) -> int:
        """The id of the first reserved token (the wrapped vocabulary's size)."""
        return self.base.vocab_size

    def token_id(self, token: str) -> int:
        try:
            return self.first_id + self.tokens.index(token)
        except ValueError:
            raise CLLMError(f"{token!r} is not one of this tokenizer's chat tokens {self.tokens}") from None

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.tokens)

    @classmethod
    def train(cls, texts: Iterable[str], **options) -> "ChatTokenizer":
        raise CLLMError("a chat tokenizer is not trained: it wraps a trained tokenizer (cllm finetune)")

    def encode(self, text: str) -> np.ndarray:
        return self.base.encode(text)

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        return self.base.encode_batch(texts)

    def encode_with_unk(self, text: str) -> np.ndarray:
        return self.base.encode_with_unk(text)

    def decode(self, ids: Iterable[int]) -> str:
        ids = self._check_ids(ids)
        return self.base.decode(ids[ids < self.first_id])

    def id_to_token(self, i: int) -> str:
        i = int(self._check_ids([i])[0])
        return self.tokens[i - self.first_id] if i >= self.first_id else self.base.id_to_token(i)

    def to_dict(self) -> dict:
        return {"base": {"kind": self.base.kind, **self.base.to_dict()}, "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, data: dict) -> "ChatTokenizer":
        from . import tokenizer_class  # the registry imports this module

        base = data["base"]
        if not isinstance(base, dict) or base.get("kind") == cls.kind:
            raise ValueError("a chat tokenizer's base must be a tokenizer of another kind")
        return cls(tokenizer_class(base["kind"]).from_dict(base), data["tokens"])
