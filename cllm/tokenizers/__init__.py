"""Tokenizers: the registry of kinds, and JSON save/load shared by all of them."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CLLMError
from .base import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, UNK_TEXT, Tokenizer
from .bpe import BPETokenizer
from .byte import ByteTokenizer
from .char import CharTokenizer
from .chat import ChatTokenizer
from .word import WordTokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {
    "char": CharTokenizer,
    "byte": ByteTokenizer,
    "word": WordTokenizer,
    "bpe": BPETokenizer,
}

__all__ = [
    "Tokenizer", "TOKENIZERS", "SPECIAL_TOKENS", "PAD_ID", "UNK_ID", "BOS_ID", "EOS_ID", "UNK_TEXT",
    "CharTokenizer", "ByteTokenizer", "WordTokenizer", "BPETokenizer", "ChatTokenizer",
    "tokenizer_class", "tokenizer_from_json", "save_tokenizer", "load_tokenizer",
]


def tokenizer_class(kind: str) -> type[Tokenizer]:
    try:
        return TOKENIZERS[kind]
    except KeyError:
        raise CLLMError(f"unknown tokenizer {kind!r} (choose from {', '.join(sorted(TOKENIZERS))})") from None


def tokenizer_from_json(text: str) -> Tokenizer:
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("expected a JSON object")
        if data.get("kind") == ChatTokenizer.kind:  # a trained kind plus reserved chat tokens (cllm finetune)
            return ChatTokenizer.from_dict(data)
        return tokenizer_class(data["kind"]).from_dict(data)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CLLMError(f"tokenizer JSON is malformed: {e}") from None


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> None:
    Path(path).write_text(tokenizer.to_json(), encoding="utf-8")


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise CLLMError(f"tokenizer file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CLLMError(f"tokenizer file is not UTF-8 JSON: {path}") from None
    return tokenizer_from_json(text)
