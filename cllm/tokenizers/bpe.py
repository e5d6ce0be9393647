"""Byte-level BPE trained with the Hugging Face ``tokenizers`` library, GPT-2 style.

The HF pipeline is: no normalizer, ``ByteLevel(add_prefix_space=False, use_regex=True)``
pre-tokenizer (GPT-2's split regex, then bytes -> printable characters), a BPE model whose initial
alphabet is all 256 bytes (so any UTF-8 text is representable and nothing is ever <unk>), and the
``ByteLevel`` decoder (no trimming, no clean-up). Our four specials sit at ids 0..3 of the BPE
vocabulary but are *not* HF "added tokens": a literal "<eos>" in user text is encoded as ordinary
text, so ``decode(encode(x)) == x`` for every string that UTF-8 can hold. ``to_dict`` embeds the HF
tokenizer JSON string verbatim.

Fast encoding. HF's GPT-2 regex (Oniguruma) costs about 0.17 CPU-s per MB, which caps a 2-core
machine near 11 MB/s. We therefore cut the text, in Python, at every space that is followed by a
non-space character: the split regex never lets a pre-token cross such a point (the space always
begins the next pre-token, and a whitespace run before it ends there), so encoding the pieces one by
one gives exactly the ids of encoding the whole text. Natural text repeats its pieces (" the",
" love,"), so each distinct piece is sent to HF once, within a few long inputs of one parallel
``encode_batch_fast`` call, and its ids are cached; the text's ids are then one C-level gather over
the piece list. Python's whitespace set contains Unicode's (which
the regex uses), so "followed by a non-space" in Python implies it for the regex too.
"""

from __future__ import annotations

import json
import re
from itertools import chain, islice, repeat
from typing import Iterable

import numpy as np

from ..errors import CLLMError
from .base import SPECIAL_TOKENS, UNK_ID, UNK_TEXT, Tokenizer
from .byte import utf8_bytes

try:  # HF tokenizers is a declared dependency; import lazily-failing for a clear message.
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer
except ImportError:  # pragma: no cover
    HFTokenizer = None

_OFFSET = len(SPECIAL_TOKENS)
_MIN_VOCAB = _OFFSET + 256
# A space that starts a new pre-token in GPT-2's regex: text may be cut before it.
_SPACE_CUT = re.compile(r" (?=\S)")
# A newline followed by a non-space: also a pre-token boundary (used to cut long runs into chunks).
_NEWLINE_CUT = re.compile(r"\n(?=\S)")
_BATCH_CHARS = 1 << 15  # characters per joined HF input: enough inputs for both Rust threads
_CHUNK_CHARS = 1 << 16  # a longer piece is cut at newline boundaries so threads share it
_CACHED_PIECE_CHARS = 64  # longer pieces are encoded but not kept in the cache
_CACHE_LIMIT = 1 << 19  # pieces; the cache is emptied when it grows past this ...
_STORE_LIMIT = 1 << 23  # ... or when its token store does (long pieces leave unreferenced ids there)


def _require_hf():
    if HFTokenizer is None:  # pragma: no cover
        raise CLLMError("the bpe tokenizer needs the 'tokenizers' package (pip install tokenizers)")


def safe_chunks(text: str, size: int = _CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into pieces of about ``size`` characters, only just before a newline that is
    followed by a non-space character, so that no GPT-2 pre-token is ever split."""
    if len(text) <= size:
        return [text]
    out, start = [], 0
    while len(text) - start > size:
        m = _NEWLINE_CUT.search(text, start + size)
        if m is None:
            break
        out.append(text[start : m.start()])
        start = m.start()
    out.append(text[start:])
    return out


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, hf_json: str, lowercase: bool = False):
        _require_hf()
        self.lowercase = bool(lowercase)
        self._json = hf_json
        try:
            spec = json.loads(hf_json)
            self._hf = HFTokenizer.from_str(hf_json)
        except Exception as e:  # HF raises plain Exception subclasses for malformed JSON
            raise CLLMError(f"bpe tokenizer: the embedded HF tokenizer JSON is malformed: {e}") from None
        self._validate(spec)
        # Byte length of every token: each character of a byte-level token stands for one byte.
        vocab = self._hf.get_vocab()
        self._byte_len = np.zeros(len(vocab), dtype=np.int64)
        for token, i in vocab.items():
            self._byte_len[i] = len(token) if i >= _OFFSET else 0
        self._reset_cache()

    def _validate(self, spec: dict) -> None:
        def need(ok: bool, what: str):
            if not ok:
                raise CLLMError(f"bpe tokenizer: the embedded HF tokenizer is not one of ours ({what})")

        need((spec.get("model") or {}).get("type") == "BPE", "model is not BPE")
        need(spec.get("normalizer") is None, "it has a normalizer")
        pre = spec.get("pre_tokenizer") or {}
        need(pre.get("type") == "ByteLevel" and not pre.get("add_prefix_space") and pre.get("use_regex"),
             "pre-tokenizer is not ByteLevel(add_prefix_space=False, use_regex=True)")
        need((spec.get("decoder") or {}).get("type") == "ByteLevel", "decoder is not ByteLevel")
        need(not spec.get("added_tokens"), "it has added tokens")
        need(all(self._hf.token_to_id(t) == i for i, t in enumerate(SPECIAL_TOKENS)), "specials are not at ids 0..3")
        need(self._hf.get_vocab_size() >= _MIN_VOCAB, "vocabulary lacks the 256 bytes")

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size()

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8192,
        min_freq: int = 0,
        lowercase: bool = False,
        **options,
    ) -> "BPETokenizer":
        _require_hf()
        if int(vocab_size) < _MIN_VOCAB:
            raise CLLMError(f"bpe tokenizer: vocab_size must be at least {_MIN_VOCAB} (4 specials + 256 bytes), got {vocab_size}")
        if int(min_freq) < 0:
            raise CLLMError(f"bpe tokenizer: min_freq must not be negative, got {min_freq}")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=int(vocab_size),
            min_frequency=int(min_freq),
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )

        def chunks():
            for text in texts:
                utf8_bytes(text)  # a lone surrogate is a CLLMError, not an HF crash
                yield from safe_chunks(text.lower() if lowercase else text)

        hf.train_from_iterator(chunks(), trainer)
        spec = json.loads(hf.to_str())
        spec["added_tokens"] = []  # specials stay in the vocabulary, but user text never matches them
        return cls(json.dumps(spec, ensure_ascii=False), lowercase=lowercase)

    # ---- encoding ----

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise CLLMError(f"bpe tokenizer: can only encode text, got {type(t).__name__}")
        if self.lowercase:
            texts = [t.lower() for t in texts]
        if len(self._piece_id) > _CACHE_LIMIT or self._n_store > _STORE_LIMIT:
            self._reset_cache()
        piece_id = self._piece_id
        lookup = piece_id.get
        splits = [_SPACE_CUT.split(t) for t in texts]
        # Each piece's number in the cache (-1: not cached yet), one C-level pass per text.
        pids = [np.fromiter(map(lookup, islice(parts, 1, None), repeat(-1)), dtype=np.int64, count=len(parts) - 1)
                for parts in splits]
        misses = [np.flatnonzero(pid < 0) + 1 for pid in pids]
        missing = set()
        for parts, miss in zip(splits, misses):
            if len(miss):
                missing.update(map(parts.__getitem__, miss.tolist()))
        missing = list(missing)
        heads = self._encode_heads_and_fill(splits, missing)
        get = piece_id.__getitem__
        for parts, pid, miss in zip(splits, pids, misses):
            if len(miss):
                pid[miss - 1] = np.fromiter(map(get, map(parts.__getitem__, miss.tolist())), dtype=np.int64,
                                            count=len(miss))
        store, starts, lengths = self._store, self._piece_start, self._piece_len
        out = []
        for head, pid in zip(heads, pids):
            # The text's ids: its head's, then each piece's run of the flat store, gathered in one
            # vectorised index (no Python work per token or per piece beyond one dict lookup).
            ln = lengths[pid]
            total = int(ln.sum())
            ends = np.cumsum(ln)
            idx = np.repeat(starts[pid] - (ends - ln), ln) + np.arange(total)
            ids = np.empty(len(head) + total, dtype=np.int64)
            ids[: len(head)] = head
            ids[len(head) :] = store[idx]
            out.append(ids)
        for p in missing:
            if len(p) > _CACHED_PIECE_CHARS:
                del piece_id[p]  # long, rarely repeated pieces do not stay in the cache
        return out

    def _reset_cache(self) -> None:
        """The piece cache: piece -> number k; piece k's ids are ``_store[_piece_start[k]:][:_piece_len[k]]``."""
        self._piece_id: dict[str, int] = {}
        self._store = np.zeros(1 << 16, dtype=np.int32)
        self._piece_start = np.zeros(1 << 12, dtype=np.int64)
        self._piece_len = np.zeros(1 << 12, dtype=np.int64)
        self._n_store = self._n_pieces = 0

    def _add_pieces(self, pieces: list[str], ids: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> None:
        """Cache ``pieces``, whose ids are ``ids[starts[k]:stops[k]]``, appending ``ids`` to the store."""
        n, m = len(ids), len(pieces)
        if self._n_store + n > len(self._store):
            self._store = np.resize(self._store, max(2 * len(self._store), self._n_store + n))
        if self._n_pieces + m > len(self._piece_start):
            size = max(2 * len(self._piece_start), self._n_pieces + m)
            self._piece_start = np.resize(self._piece_start, size)
            self._piece_len = np.resize(self._piece_len, size)
        self._store[self._n_store : self._n_store + n] = ids
        self._piece_start[self._n_pieces : self._n_pieces + m] = self._n_store + starts
        self._piece_len[self._n_pieces : self._n_pieces + m] = stops - starts
        self._piece_id.update(zip(pieces, range(self._n_pieces, self._n_pieces + m)))
        self._n_store += n
        self._n_pieces += m

    def _hf_batch(self, inputs: list[str]):
        try:
            # encode_batch_fast (no offsets) is newer than our minimum tokenizers version.
            fast = getattr(self._hf, "encode_batch_fast", self._hf.encode_batch)
            return fast(inputs, add_special_tokens=False)
        except Exception as e:  # lone surrogates and the like
            for text in inputs:
                utf8_bytes(text)
            raise CLLMError(f"bpe tokenizer: cannot encode text: {e}") from None

    def _encode_heads_and_fill(self, splits: list[list[str]], missing: list[str]) -> list[list[int]]:
        """Encode each text's first piece (returned) and every missing piece (into the cache) in one
        parallel HF call. Missing pieces go in as a few long texts " p1 p2 p3 ...": cutting before a
        space followed by a non-space is a pre-token boundary, so such a text's ids are the pieces'
        ids back to back, and each piece's share is found from the tokens' byte lengths."""
        inputs: list[str] = []
        head_chunks: list[int] = []
        for parts in splits:
            chunks = safe_chunks(parts[0])
            inputs.extend(chunks)
            head_chunks.append(len(chunks))
        # Groups of consecutive missing pieces of about _BATCH_CHARS characters each (vectorised).
        lens = np.fromiter(map(len, missing), dtype=np.int64, count=len(missing)) + 1
        ends = np.cumsum(lens)
        cuts = np.unique(np.searchsorted(ends, np.arange(_BATCH_CHARS, int(ends[-1]) if len(ends) else 0,
                                                          _BATCH_CHARS), side="left") + 1)
        bounds = [0, *cuts[cuts < len(missing)].tolist(), len(missing)] if missing else [0]
        groups = list(zip(bounds[:-1], bounds[1:]))
        group_texts = [" " + " ".join(missing[a:b]) for a, b in groups]
        encs = self._hf_batch(inputs + group_texts)
        heads, pos = [], 0
        for n in head_chunks:
            heads.append(list(chain.from_iterable(e.ids for e in encs[pos : pos + n])))
            pos += n
        byte_len = self._byte_len
        for (a, b), text, enc in zip(groups, group_texts, encs[pos:]):
            ids = np.array(enc.ids, dtype=np.int64)
            group = missing[a:b]
            if text.isascii():
                piece_ends = ends[a:b] - (ends[a - 1] if a else 0)
            else:
                sizes = (len(p.encode("utf-8")) for p in group)
                piece_ends = np.cumsum(np.fromiter(sizes, dtype=np.int64, count=b - a) + 1)
            ends_at = np.cumsum(byte_len[ids])
            stops = np.searchsorted(ends_at, piece_ends) + 1
            if stops[-1] == len(ids) and np.array_equal(ends_at[stops - 1], piece_ends):
                self._add_pieces(group, ids, np.r_[0, stops[:-1]], stops)
            else:  # never expected; stay correct by encoding this group's pieces one by one
                for p, e in zip(group, self._hf_batch([" " + p for p in group])):
                    one = np.array(e.ids, dtype=np.int64)
                    self._add_pieces([p], one, np.zeros(1, dtype=np.int64), np.array([len(one)]))
        return heads

    def encode_reference(self, text: str) -> np.ndarray:
        """HF's own encoding of the whole text in one call (slow; for tests and benchmarks)."""
        if self.lowercase:
            text = text.lower()
        utf8_bytes(text)
        return np.array(self._hf.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    # ---- decoding ----

    def decode(self, ids: Iterable[int]) -> str:
        ids = self._check_ids(ids)
        if not np.any(ids == UNK_ID):
            return self._hf.decode(ids[ids >= _OFFSET].tolist(), skip_special_tokens=False)
        parts = np.split(ids, np.flatnonzero(ids == UNK_ID))
        return UNK_TEXT.join(self.decode(p[p != UNK_ID]) for p in parts)

    def id_to_token(self, i: int) -> str:
        return self._hf.id_to_token(int(self._check_ids([i])[0]))

    # ---- serialisation ----

    def to_dict(self) -> dict:
        return {"hf_tokenizer": self._json, "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, data: dict) -> "BPETokenizer":
        hf_json = data["hf_tokenizer"]
        if not isinstance(hf_json, str):
            raise CLLMError("bpe tokenizer JSON: 'hf_tokenizer' must be the HF tokenizer's JSON string")
        return cls(hf_json, lowercase=bool(data.get("lowercase", False)))
