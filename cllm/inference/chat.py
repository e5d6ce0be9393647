"""A chat session with a fine-tuned model: history, the chat template, context trimming, streaming.

Each turn renders the conversation so far with the chat template (cllm.finetune.template) and
asks for an assistant turn; the reply is sampled with the KV cache (``decode_steps``), streamed as
its text becomes final (``StreamDecoder``), and ends at the end-of-turn token (or any other
reserved token, or <eos>, or ``max_new_tokens``). When the rendered conversation no longer
leaves room for a reply in the model's context, the oldest turns are dropped (the system message
is kept); a single message too long for the context is refused with a CLLMError.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import CLLMError
from ..finetune.template import END, render_prompt
from ..tokenizers import ChatTokenizer, Tokenizer
from .generate import check_sampling, decode_steps
from .stream import StreamDecoder


class ChatSession:
    def __init__(self, model, tokenizer: Tokenizer, system: str = "", max_new_tokens: int = 256,
                 temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0, seed: int = 0):
        if not isinstance(tokenizer, ChatTokenizer):
            raise CLLMError("this checkpoint is not a chat model (its tokenizer has no chat tokens): "
                            "fine-tune it first with cllm finetune")
        check_sampling(max_new_tokens, temperature, top_k, top_p)
        self.model, self.tokenizer, self.system = model, tokenizer, system
        self.max_new_tokens, self.temperature, self.top_k, self.top_p = max_new_tokens, temperature, top_k, top_p
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.history: list[dict] = []
        self.dropped = 0  # messages dropped from the front so far, to fit the context

    @property
    def block_size(self) -> int:
        return self.model.cfg.block_size

    def clear(self) -> None:
        self.history = []

    def _messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def prompt_ids(self) -> list[int]:
        """The rendered conversation asking for the next reply, oldest turns dropped until it leaves
        ``min(max_new_tokens, block_size // 2)`` positions for the reply (or only the last message is
        left: it is refused only if it leaves no position at all)."""
        budget = self.block_size - max(1, min(self.max_new_tokens, self.block_size // 2))
        ids = render_prompt(self._messages(), self.tokenizer)
        while len(ids) > budget and len(self.history) > 1:
            self.history.pop(0)
            self.dropped += 1
            while self.history and self.history[0]["role"] != "user":  # start at a user turn
                self.history.pop(0)
                self.dropped += 1
            ids = render_prompt(self._messages(), self.tokenizer)
        if len(ids) >= self.block_size:  # not even one position left for the reply
            self.history = self.history[:-1]
            raise CLLMError(f"the message is too long for this model: {len(ids)} tokens with the template, "
                            f"the context holds {self.block_size} (block_size) with the reply")
        return ids

    def reply(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        """Add a user turn, generate the assistant's reply (streamed to ``on_text``), return it."""
        self.history.append({"role": "user", "content": text})
        idx = torch.tensor([self.prompt_ids()], dtype=torch.long, device=self.device)
        end, first_reserved = self.tokenizer.token_id(END), self.tokenizer.first_id
        decoder = StreamDecoder(self.tokenizer)
        for step in decode_steps(self.model, idx, self.max_new_tokens, temperature=self.temperature,
                                 top_k=self.top_k, top_p=self.top_p, eos_id=end, generator=self.generator):
            i = int(step.ids[0])
            if i == end or i >= first_reserved or i == self.tokenizer.eos_id:
                break
            piece = decoder.push([i])
            if piece and on_text is not None:
                on_text(piece)
        piece = decoder.flush()
        if piece and on_text is not None:
            on_text(piece)
        self.history.append({"role": "assistant", "content": decoder.text})
        return decoder.text
