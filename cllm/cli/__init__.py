"""The `cllm` command: one module per command, each with ``register(subparsers)``.

Every user-facing failure is a CLLMError (or a bad flag), reported as one line on stderr with exit
code 2; tracebacks are reserved for bugs. Only the entry points (this package's ``main``,
``python -m cllm``) import it; nothing in the library below does.
"""

from __future__ import annotations

import gc
import importlib
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

    The interpreter's last garbage collection walks every object torch, Dynamo and Inductor created:
    0.4-0.8 s on every command (``python benchmarks/startup.py``). Frozen, those objects are skipped:
    atexit handlers still run, stdout and stderr are still flushed, and what modules hold is still
    released as they are torn down; only reference cycles alive at exit are left to the OS, and cllm
    has closed its own files (checkpoints, metrics) before ``main`` returns. Not in ``main``, which
    tests and notebooks call in a process that goes on.
    """
    code = main(argv)
    gc.freeze()
    return code
