"""The `cllm` command: one module per command, each with ``register(subparsers)``.

Every user-facing failure is a CLLMError (or a bad flag), reported as one line on stderr with exit
code 2; tracebacks are reserved for bugs. Only the entry points (this package's ``main``,
``python -m cllm``) import it; nothing in the library below does.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
from typing import NoReturn

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
    it: atexit handlers still run and stdout and stderr are still flushed, but objects alive to the
    end are left to the OS unfinalized (Python never promised ``__del__`` at exit; cllm closes its
    files, checkpoints and metrics, before ``main`` returns). Not in ``main``, which
    tests and notebooks call in a process that goes on. torchrun's workers leave as ``_leave_worker``
    says.
    """
    code = main(argv)
    if "RANK" in os.environ:  # set by torchrun; distributed.launched() would import torch for commands without it
        _leave_worker(code)
    gc.collect()
    gc.freeze()
    return code


def _leave_worker(code: int) -> NoReturn:
    """End a torchrun worker without the interpreter's shutdown, once its atexit handlers have run
    and its output is flushed (cllm has closed its own files by now).

    gloo's worker threads outlive ``destroy_process_group`` and free their last finished collective
    when they next get the GIL; a tensor Python created (``all_gather_object``'s) then needs the GIL
    to be released, and if the interpreter has begun shutting down that thread is made to exit with
    a C++ frame on its stack: "terminate called without an active exception", SIGABRT, a failed job
    after a finished run (2 of ~520 two-rank runs; the core showed ``ProcessGroupGloo::runLoop``
    destroying an ``AsyncBarrierWork`` while ``Py_FinalizeEx`` ran). Without that shutdown the
    threads simply end with the process.
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
