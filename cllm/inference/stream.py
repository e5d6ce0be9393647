"""Incremental decoding: token ids in, text out as soon as it can no longer change.

Two things make a naive ``decode(new ids)`` per token wrong. With the byte and BPE tokenizers a
character's UTF-8 bytes can arrive in several tokens; decoded alone, an incomplete character
becomes U+FFFD. And a stop string may be arriving: text that could be its beginning must not be
shown until the next tokens rule it in or out.

So the ids since the last clean character boundary are kept and decoded together; trailing U+FFFDs
are held back (a character is at most 4 bytes, so the next tokens decide them); once the decoded
tail ends cleanly it is committed. Decoding is concatenative at character boundaries for every
tokenizer kind here (char and word join table entries; byte and byte-level BPE decode the joined
bytes), so committed text never changes.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ..tokenizers import Tokenizer

REPLACEMENT = "\ufffd"


class StreamDecoder:
    """Feed one row's generated ids with ``push``; each call returns the newly final text.

    ``text`` is everything generated so far, cut just before the first stop string once one has
    appeared (``stopped`` is then True and further ids are ignored); ``flush`` returns what was
    held back when generation ends.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self._longest_stop = max((len(s) for s in self.stop), default=0)
        self._committed = ""  # the decoded text of ids before _pending
        self._pending: list[int] = []  # ids since the last clean character boundary
        self._emitted = 0  # characters of text already returned
        self._searched = 0  # stop strings cannot start before this index any more
        self.text = ""
        self.stopped = False

    def push(self, ids: Iterable[int]) -> str:
        if self.stopped:
            return ""
        self._pending.extend(int(i) for i in ids)
        tail = self.tokenizer.decode(self._pending)
        self.text = self._committed + tail
        if not tail.endswith(REPLACEMENT):
            self._committed, self._pending = self.text, []
        if self._find_stop():
            return self._take(len(self.text))
        end = len(self.text) - (len(tail) - len(tail.rstrip(REPLACEMENT)))
        return self._take(end - self._stop_prefix_len(self.text[:end]))

    def flush(self) -> str:
        """The rest of the text, held-back characters included (generation has ended)."""
        return self._take(len(self.text))

    def _find_stop(self) -> bool:
        """Cut text before the earliest stop string, if one has appeared."""
        if not self.stop:
            return False
        start = max(0, self._searched - self._longest_stop + 1)
        found = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        self._searched = len(self._committed)  # a held-back tail may still change
        if not found:
            return False
        self.text, self.stopped = self.text[: min(found)], True
        return True

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest end of text that is the beginning of a stop string (held back)."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best

    def _take(self, end: int) -> str:
        end = max(end, self._emitted)
        piece = self.text[self._emitted:end]
        self._emitted = end
        return piece
