"""One process per run directory: an OS file lock on ``OUT/.lock``.

``fcntl.flock`` locks belong to the open file, so the kernel releases them when the process ends in
any way (kill -9 included): there is never a stale lock to clean up. The holder's pid is written in
the file, so a second ``cllm train`` on the same directory stops at once naming it. The lock is
re-entrant within a process (``cllm train`` takes it before reading the checkpoint it resumes, then
``train()`` takes it again).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import CLLMError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None

LOCK_FILE = ".lock"

_held: dict[str, list] = {}  # resolved lock path -> [fd, depth]


def _forget_in_child() -> None:
    """A forked child (a tokenising worker) closes its copy of the lock's file descriptor, so the lock
    ends with the process that took it even if a child outlives it."""
    for fd, _ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "a process that has not written its pid yet"


@contextlib.contextmanager
def run_lock(out: str | Path, create: bool = True):
    """Hold the lock on run directory ``out`` for the ``with`` block; raise CLLMError at once if
    another process holds it. A missing ``out`` is created, or with ``create=False`` not locked (the
    caller is about to report that it does not exist)."""
    out = Path(out)
    if fcntl is None or os.environ.get("RANK", "0") != "0" or (not create and not out.is_dir()):
        yield  # (distributed: rank 0 holds it for all ranks)
        return
    created = [p for p in (out, *out.parents) if not p.exists()]  # removed again if the run leaves nothing
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    key = os.path.realpath(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CLLMError(f"run directory {out} is in use by another cllm process ({_holder(path)}); wait for it "
                        "to finish or stop it, or use a different --out") from None
    except OSError:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = [fd, 1]
        yield
    finally:
        _held.pop(key, None)
        if created:  # a run that failed before writing anything leaves no directory behind
            with contextlib.suppress(OSError):
                if [p.name for p in out.iterdir()] == [LOCK_FILE]:
                    path.unlink()
                    for p in created:
                        p.rmdir()
        os.close(fd)  # releases the lock
