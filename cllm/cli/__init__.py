"""The `cllm` command: one module per command, each with ``register(subparsers)``.

Every user-facing failure is a CLLMError (or a bad flag), reported as one line on stderr with exit
code 2; tracebacks are reserved for bugs. Only the entry points (this package's ``main``,
``python -m cllm``) import it; nothing in the library below does.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

from ..errors import CLLMError
from .common import ArgumentParser

# The order in `cllm --help`.
COMMANDS = ("prepare", "train", "finetune", "sample", "chat", "eval", "bench", "tokenizer", "lattice", "crystal",
            "export")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="cllm", description="Train GPT-style language models from raw text.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLLMError as e:
        print(f"cllm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cllm: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permissions, ...: the user's environment, not a bug
        print(f"cllm: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2


def entry(argv: list[str] | None = None) -> int:
    """The process's entry point (the console script, ``python -m cllm``): ``main``, then a quick exit.

    At exit the interpreter tears its modules down and collects garbage more than once, walking every
    object torch, Dynamo and Inductor created: 0.4-0.8 s on every command (``python
    benchmarks/startup.py``). Here the garbage left by the command is collected once, as usual
    (finalizers run), and what is still alive is frozen, so the interpreter's own collections skip
    it; atexit handlers still run and stdout and stderr are still flushed. Not in torchrun's workers,
    whose exit is left as it was, and not in ``main``, which tests and notebooks call in a process
    that goes on.
    """
    code = main(argv)
    if "RANK" not in os.environ:
        gc.collect()
        gc.freeze()
    return code
