"""The chat template: conversations <-> token ids, with the mask of the tokens the model learns.

A conversation renders as

    <bos> [<|system|> text <|end|>] <|user|> text <|end|> <|assistant|> text <|end|> <|user|> ...

where the ``<|...|>`` tokens are reserved ids appended after the tokenizer's vocabulary
(``cllm.tokenizers.ChatTokenizer``), so text can never produce them and existing ids keep their
meaning. The mask is on for every assistant turn's text and its closing ``<|end|>`` (so the model
learns to answer and to stop), off for everything else. ``parse`` is ``render``'s inverse.

A base model trained before the template existed is fine-tuned by growing its token embedding
(and LM head) by the reserved rows: ``grow_vocab`` keeps every existing row and starts each new one
at the mean of the existing rows plus noise of the rows' own spread, so the new tokens start as
"typical" tokens that differ from each other.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import CLLMError
from ..model import GPT
from ..tokenizers import ChatTokenizer, Tokenizer

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
CHAT_TOKENS = (SYSTEM, USER, ASSISTANT, END)
ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}


def chat_tokenizer(tokenizer: Tokenizer) -> ChatTokenizer:
    """``tokenizer`` with the template's reserved tokens (itself if it already has them)."""
    if isinstance(tokenizer, ChatTokenizer):
        if tokenizer.tokens != list(CHAT_TOKENS):
            raise CLLMError(f"this chat tokenizer's reserved tokens {tokenizer.tokens} are not the template's "
                            f"{list(CHAT_TOKENS)}")
        return tokenizer
    return ChatTokenizer(tokenizer, CHAT_TOKENS)


def _encode(tokenizer: Tokenizer, text: str, lenient: bool) -> list[int]:
    return (tokenizer.encode_with_unk(text) if lenient else tokenizer.encode(text)).tolist()


def render(messages: list[dict], tokenizer: ChatTokenizer, lenient: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """messages: [{"role", "content"}] -> (ids int64 [N], mask bool [N]); mask[i]: token i is learned.

    ``lenient``: text the tokenizer cannot represent becomes <unk> instead of a CLLMError."""
    ids: list[int] = [tokenizer.bos_id if tokenizer.bos_id is not None else 0]
    mask: list[bool] = [False]
    end = tokenizer.token_id(END)
    for m in messages:
        role = m["role"]
        if role not in ROLES:
            raise CLLMError(f"unknown role {role!r} (expected system, user or assistant)")
        body = _encode(tokenizer, m["content"], lenient) + [end]
        learn = role == "assistant"
        ids += [tokenizer.token_id(ROLES[role])] + body
        mask += [False] + [learn] * len(body)
    return np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)


def render_prompt(messages: list[dict], tokenizer: ChatTokenizer, lenient: bool = True) -> list[int]:
    """The ids that ask for the next assistant turn: the conversation so far, then <|assistant|>."""
    ids, _ = render(messages, tokenizer, lenient)
    return ids.tolist() + [tokenizer.token_id(ASSISTANT)]


def parse(ids, tokenizer: ChatTokenizer) -> list[dict]:
    """Rendered ids -> the messages (render's inverse; a turn without <|end|> runs to the end)."""
    role_of = {tokenizer.token_id(tok): role for role, tok in ROLES.items()}
    end = tokenizer.token_id(END)
    messages: list[dict] = []
    role, body = None, []
    for i in [int(i) for i in ids]:
        if i in role_of:
            if role is not None:
                messages.append({"role": role, "content": tokenizer.decode(body)})
            role, body = role_of[i], []
        elif i == end:
            if role is not None:
                messages.append({"role": role, "content": tokenizer.decode(body)})
            role, body = None, []
        elif role is not None:
            body.append(i)
    if role is not None:
        messages.append({"role": role, "content": tokenizer.decode(body)})
    return messages


@torch.no_grad()
def grow_vocab(model: GPT, vocab_size: int, seed: int = 0) -> GPT:
    """A copy of ``model`` whose token embedding (and LM head, if untied) has ``vocab_size`` rows:
    the existing rows kept, new rows = mean of the existing ones + Gaussian noise with their
    per-dimension standard deviation (seeded). ``model`` itself if it is already that large."""
    old = model.cfg.vocab_size
    if vocab_size <= old:
        return model
    import dataclasses

    cfg = dataclasses.replace(model.cfg, vocab_size=vocab_size)
    grown = GPT(cfg)
    gen = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    new_state = {}
    for name, t in grown.state_dict().items():
        src = state[name]
        if src.shape != t.shape:  # wte.weight, lm_head.weight: [vocab, n_embd]
            rows = src.float()
            extra = rows.mean(0) + torch.randn(vocab_size - old, rows.size(1), generator=gen) * rows.std(0)
            src = torch.cat([src, extra.to(src.dtype)], 0)
        new_state[name] = src
    grown.load_state_dict(new_state)
    return grown.to(next(model.parameters()).device).train(model.training)
