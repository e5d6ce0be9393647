"""Word-level tokenizer: a frequency-ranked vocabulary of words, punctuation marks and whitespace runs.

Text is cut into tokens of three shapes (regex ``[^\\W_]+|\\s+|.``):

* a run of letters/digits (Unicode alphanumerics; ``_`` counts as punctuation),
* a run of whitespace (spaces, newlines, tabs ... kept, so decoding restores the layout),
* any other single character (punctuation, symbols, ``_``, combining marks).

The vocabulary is the ``vocab_size - 4`` most frequent tokens seen at least ``min_freq`` times,
ranked by count (descending) and then by the token's code points (ascending), so equal counts never
depend on input order or hash seeds and training twice gives the same ids. The ranked list is stored
verbatim in the JSON, so a reloaded vocabulary never shifts ids.

Encoding never raises: an out-of-vocabulary word or mark becomes <unk>; an out-of-vocabulary
whitespace run is spelled greedily with the longest known whitespace tokens (<unk> for a
whitespace character that is not in the vocabulary at all).
Hence ``decode(encode(x)) == x`` whenever every word and mark of ``x`` is in the vocabulary
(with ``lowercase``: ``== x.lower()``). <unk> decodes to U+FFFD.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import repeat
from typing import Iterable

import numpy as np

from ..errors import CLLMError
from .base import SPECIAL_TOKENS, UNK_ID, TableTokenizer

TOKEN_RE = re.compile(r"[^\W_]+|\s+|.", re.DOTALL)
_OFFSET = len(SPECIAL_TOKENS)


def split_words(text: str) -> list[str]:
    """The word tokenizer's pieces of ``text``; ``"".join(split_words(t)) == t``."""
    return TOKEN_RE.findall(text)


class WordTokenizer(TableTokenizer):
    kind = "word"

    def __init__(self, tokens: Iterable[str], lowercase: bool = False):
        self.tokens = list(tokens)
        self.lowercase = bool(lowercase)
        if not all(isinstance(t, str) and t for t in self.tokens):
            raise CLLMError("word tokenizer: every vocabulary entry must be a non-empty string")
        self._itos = list(SPECIAL_TOKENS) + self.tokens
        self._stoi = {t: i for i, t in enumerate(self.tokens, start=_OFFSET)}
        if len(self._stoi) != len(self.tokens):
            dup = next(t for t, n in Counter(self.tokens).items() if n > 1)
            raise CLLMError(f"word tokenizer: vocabulary entry {dup!r} appears more than once")
        self._max_space = max((len(t) for t in self.tokens if t.isspace()), default=1)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8192,
        min_freq: int = 1,
        lowercase: bool = False,
        **options,
    ) -> "WordTokenizer":
        if int(vocab_size) <= _OFFSET:
            raise CLLMError(f"word tokenizer: vocab_size must be more than {_OFFSET} (the specials), got {vocab_size}")
        if int(min_freq) < 1:
            raise CLLMError(f"word tokenizer: min_freq must be at least 1, got {min_freq}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(split_words(text.lower() if lowercase else text))
        ranked = sorted((item for item in counts.items() if item[1] >= min_freq), key=lambda kv: (-kv[1], kv[0]))
        return cls([t for t, _ in ranked[: int(vocab_size) - _OFFSET]], lowercase=lowercase)

    def encode(self, text: str) -> np.ndarray:
        if self.lowercase:
            text = text.lower()
        pieces = split_words(text)
        ids = list(map(self._stoi.get, pieces, repeat(-1)))
        if -1 in ids:
            ids = self._fill_unknown(pieces, ids)
        return np.array(ids, dtype=np.int64)

    def _fill_unknown(self, pieces: list[str], ids: list[int]) -> list[int]:
        out: list[int] = []
        get = self._stoi.get
        for piece, i in zip(pieces, ids):
            if i >= 0:
                out.append(i)
            elif piece.isspace() and len(piece) > 1:
                # Spell the run greedily with the longest known whitespace tokens.
                j = 0
                while j < len(piece):
                    for k in range(min(len(piece) - j, self._max_space), 0, -1):
                        i = get(piece[j : j + k])
                        if i is not None:
                            break
                    else:
                        k, i = 1, UNK_ID
                    out.append(i)
                    j += k
            else:
                out.append(UNK_ID)
        return out

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, data: dict) -> "WordTokenizer":
        tokens = data["tokens"]
        if not isinstance(tokens, list):
            raise CLLMError("word tokenizer JSON: 'tokens' must be a list of strings")
        return cls(tokens, lowercase=bool(data.get("lowercase", False)))
