"""Fine-tuning data: JSONL conversations -> rendered ids and masks -> batches with response-only targets.

Each line of the file is one conversation, either ``{"messages": [{"role": "system"|"user"|"assistant",
"content": "..."}]}`` or ``{"prompt": "...", "response": "..."}`` (one user turn, one assistant
turn). A line that is not JSON, has no messages, an unknown role, a non-text or empty assistant
turn, no assistant turn, text the tokenizer cannot encode, or renders longer than the context
(block_size + 1 tokens) stops reading with a one-line CLLMError naming the line, or with
``skip_bad_lines`` is skipped and counted.

Batches: each row is whole conversations packed one after another (a conversation is never cut)
and padded to block_size + 1 tokens; x = row[:-1], y = row[1:] with -100 wherever the target is
not an assistant token or is padding, which ``F.cross_entropy`` ignores: the loss is on the
responses only, with no change to the model or the trainer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CLLMError
from ..tokenizers import PAD_ID, ChatTokenizer
from .template import ROLES, render

IGNORE = -100  # F.cross_entropy's default ignore_index


@dataclass
class Conversation:
    ids: np.ndarray  # int64 [N]
    mask: np.ndarray  # bool [N]: the token is an assistant token (learned)
    line: int  # 1-based line in its file


@dataclass
class ConversationSet:
    conversations: list[Conversation]
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason) of skipped lines

    @property
    def tokens(self) -> int:
        return sum(len(c.ids) for c in self.conversations)

    @property
    def learned_tokens(self) -> int:
        return sum(int(c.mask[1:].sum()) for c in self.conversations)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for c in self.conversations:
            h.update(c.ids.tobytes())
            h.update(np.packbits(c.mask).tobytes())
            h.update(b"|")
        return h.hexdigest()[:16]


def messages_of(record) -> list[dict]:
    """A JSON record -> its messages, checked; ValueError (the reason) if it is not a conversation."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("no messages")
    elif "prompt" in record and "response" in record:
        messages = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["response"]}]
    else:
        raise ValueError('no messages (expected "messages", or "prompt" and "response")')
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} is not an object with role and content")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has unknown role {m['role']!r} (expected system, user or assistant)")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i} ({m['role']}) has content that is not text")
        if m["role"] == "assistant" and not m["content"].strip():
            raise ValueError(f"message {i} is an empty assistant turn")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("no assistant turn (nothing to learn)")
    return messages


def read_conversations(path: str | Path, tokenizer: ChatTokenizer, block_size: int,
                       skip_bad_lines: bool = False) -> ConversationSet:
    """Every conversation of a JSONL file rendered; bad lines stop with CLLMError (file:line: reason)
    or, with ``skip_bad_lines``, are skipped and listed in ``skipped``."""
    path = Path(path)
    if not path.is_file():
        raise CLLMError(f"fine-tuning data not found: {path}")
    out = ConversationSet([])
    limit = block_size + 1
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                reason = "not UTF-8"
            else:
                if not text.strip():
                    continue
                try:
                    messages = messages_of(json.loads(text))
                    ids, mask = render(messages, tokenizer)
                    if len(ids) > limit:
                        raise ValueError(f"the conversation is {len(ids)} tokens, longer than the context "
                                         f"(block_size + 1 = {limit})")
                    out.conversations.append(Conversation(ids, mask, number))
                    continue
                except json.JSONDecodeError as e:
                    reason = f"not JSON ({e.msg})"
                except (ValueError, CLLMError) as e:
                    reason = str(e)
            if not skip_bad_lines:
                raise CLLMError(f"{path}:{number}: {reason} (--skip-bad-lines skips such lines)")
            out.skipped.append((number, reason))
    if not out.conversations:
        raise CLLMError(f"{path} holds no usable conversation" + (f" ({len(out.skipped)} bad lines skipped)"
                                                                 if out.skipped else ""))
    return out


def split_conversations(data: ConversationSet, val_fraction: float, seed: int) -> tuple[ConversationSet, ConversationSet]:
    """Train and val sets, split by whole conversations (a seeded random choice); at least one of
    each when there are two or more conversations and val_fraction > 0."""
    n = len(data.conversations)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [c for i, c in enumerate(data.conversations) if i not in val_idx]
    val = [c for i, c in enumerate(data.conversations) if i in val_idx]
    return ConversationSet(train, data.skipped), ConversationSet(val)


def pack_row(convs: list[Conversation], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Conversations laid end to end and padded to ``length``: (ids, learned-mask)."""
    ids = np.full(length, PAD_ID, dtype=np.int64)
    mask = np.zeros(length, dtype=bool)
    at = 0
    for c in convs:
        ids[at:at + len(c.ids)] = c.ids
        mask[at:at + len(c.ids)] = c.mask
        at += len(c.ids)
    return ids, mask


def to_xy(rows: list[tuple[np.ndarray, np.ndarray]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed rows -> x [B, T] and y [B, T] with IGNORE where the target is not learned."""
    ids = np.stack([r[0] for r in rows])
    mask = np.stack([r[1] for r in rows])
    y = np.where(mask[:, 1:], ids[:, 1:], IGNORE)
    return torch.from_numpy(ids[:, :-1].copy()).to(device), torch.from_numpy(y).to(device)


class ConversationBatches:
    """``get()`` -> (x, y) [batch_size, block_size]: each row packs conversations in a shuffled order
    (a new permutation each epoch) until the next does not fit. ``state()``/``set_state()`` are the
    epoch and position, so a resumed run continues with the very same rows."""

    def __init__(self, data: ConversationSet, batch_size: int, block_size: int, seed: int, device,
                 pack: bool = True):
        if not data.conversations:
            raise CLLMError("no training conversations")
        self.data, self.batch_size, self.length, self.seed, self.device = data, batch_size, block_size + 1, seed, device
        self.pack = pack
        self.epoch, self.pos = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.data.conversations))

    def _next(self) -> Conversation:
        if self.pos == len(self._order):
            self.epoch, self.pos = self.epoch + 1, 0
            self._order = self._permutation()
        c = self.data.conversations[self._order[self.pos]]
        self.pos += 1
        return c

    def _peek_len(self) -> int:
        if self.pos == len(self._order):
            return len(self.data.conversations[np.random.default_rng([self.seed, self.epoch + 1]).permutation(
                len(self.data.conversations))[0]].ids)
        return len(self.data.conversations[self._order[self.pos]].ids)

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for _ in range(self.batch_size):
            convs = [self._next()]
            used = len(convs[0].ids)
            while self.pack and used + self._peek_len() <= self.length:
                convs.append(self._next())
                used += len(convs[-1].ids)
            rows.append(pack_row(convs, self.length))
        return to_xy(rows, self.device)

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def set_state(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._permutation()


def eval_batches(data: ConversationSet, batch_size: int, block_size: int, device):
    """The val set in order, one conversation a row (padded): every assistant token scored once."""
    convs = data.conversations
    for i in range(0, len(convs), batch_size):
        yield to_xy([pack_row([c], block_size + 1) for c in convs[i:i + batch_size]], device)
