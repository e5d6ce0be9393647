"""Pieces every command module shares."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CLLMError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``cllm: error: ...`` and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"cllm: error: {message} (see {self.prog} --help)\n")


def read_text_arg(text: str | None, file: str | None, what: str) -> str:
    """The text of a ``--X`` / ``--X-file`` pair of flags."""
    if file is None:
        return text or ""
    from ..data import read_text

    path = Path(file)
    if not path.is_file():
        raise CLLMError(f"{what} file not found: {file}")
    return read_text(path)


def can_encode(tokenizer, text: str) -> bool:
    try:
        tokenizer.encode(text)
        return True
    except CLLMError:
        return False
