"""Where text comes from: files, directories (recursive, text files only, include/exclude globs) and
JSONL files, read as a stream of documents in bounded memory.

A *document* is one text file, or one line of a ``.jsonl`` file (its ``text_field``). Documents are
read in pieces ("chunks") of about ``BLOCK_BYTES``, cut only at a lone newline or space between two
non-space characters (see ``_safe_cut``). Every tokenizer kind tokenises such pieces to exactly the
ids of the whole text, so a document larger than RAM streams through. Memory is bounded by the
block size plus the longest stretch without such a cut point (in practice, a line).

This module does not import torch, so the tokenizer tools can use it cheaply.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

from ..errors import CLLMError

BUNDLED_CORPUS = "bundled:shakespeare"
BLOCK_BYTES = 1 << 20  # bytes read at a time from a text file (and the most text per chunk)
_SNIFF_BYTES = 8192


def bundled_corpus_path() -> Path:
    return Path(str(resources.files("cllm.corpus").joinpath("shakespeare.txt")))


def split_paths(data: str | list[str] | tuple[str, ...]) -> list[str]:
    """``--data`` values -> paths. Each value may hold several paths separated by ``os.pathsep``
    (":" on Linux/macOS), unless the whole value is itself an existing path."""
    values = [data] if isinstance(data, str) else list(data)
    out: list[str] = []
    for v in values:
        if not v:
            continue
        if os.pathsep in v and not Path(v).exists():
            out.extend(p for p in v.split(os.pathsep) if p)
        else:
            out.append(v)
    return out


def split_globs(patterns: str) -> list[str]:
    return [p.strip() for p in patterns.split(",") if p.strip()]


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(_SNIFF_BYTES)


def _matches(rel: str, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def find_text_files(path: str | Path, include: str | list[str] = "", exclude: str | list[str] = "",
                    quiet: bool = False) -> list[Path]:
    """The text files at ``path``: the file itself, or every non-binary, non-hidden file below a
    directory (recursively, sorted) whose relative path or name matches an ``include`` glob (all
    files when there is none) and no ``exclude`` glob. Globs are comma-separated strings or lists."""
    path = Path(path)
    include = split_globs(include) if isinstance(include, str) else list(include)
    exclude = split_globs(exclude) if isinstance(exclude, str) else list(exclude)
    if not path.exists():
        raise CLLMError(f"data path not found: {path}")
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CLLMError(f"data path is neither a file nor a directory: {path}")
    files, skipped, filtered = [], [], 0
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, editor folders: never corpus text
        for name in sorted(names):
            p = Path(root) / name
            if name.startswith(".") or not p.is_file():
                continue
            rel = p.relative_to(path).as_posix()
            if (include and not _matches(rel, include)) or (exclude and _matches(rel, exclude)):
                filtered += 1
                continue
            (skipped if _looks_binary(p) else files).append(p)
    if not files:
        why = f"{len(skipped)} binary files skipped" + (f", {filtered} excluded by --include/--exclude" if filtered else "")
        raise CLLMError(f"no text files found in directory {path} ({why})")
    if not quiet:
        for p in skipped:
            print(f"note: skipping binary file {p}", file=sys.stderr)
    return files


def _utf8_error(path, offset: int, reason: str, hint: str = "") -> CLLMError:
    return CLLMError(f"{path}: invalid UTF-8 at byte offset {offset} ({reason}){hint}")


_HINT = "; pass --errors replace (U+FFFD) or --errors skip (drop the bad bytes) to continue"


def decode_utf8(raw: bytes, path, errors: str = "strict", base_offset: int = 0, hint: str = "",
                on_invalid: Callable[[int], None] | None = None) -> str:
    """``raw`` as text. strict: CLLMError naming the file and the absolute byte offset of the first
    bad byte; replace: U+FFFD for each bad sequence; skip: bad bytes dropped. ``on_invalid(offset)``
    is called once (with the first bad offset) when a non-strict mode had something to fix."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if errors == "strict":
            raise _utf8_error(path, base_offset + e.start, e.reason, hint) from None
        if on_invalid is not None:
            on_invalid(base_offset + e.start)
        return raw.decode("utf-8", "replace" if errors == "replace" else "ignore")


def read_text(path: str | Path, errors: str = "strict") -> str:
    """A whole file's text as UTF-8 (see ``decode_utf8`` for ``errors``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CLLMError(f"cannot read {path}: {e.strerror}") from None
    return decode_utf8(raw, path, errors, hint=_HINT if errors == "strict" else "")


def _safe_cut(text: str) -> int:
    r"""Where to cut ``text`` so that every tokenizer kind encodes the two sides to exactly the ids of
    the whole: just after the last newline, or else before the last space, that has a non-space
    character on both sides (0 when there is none).

    Why both neighbours: a whitespace run before a non-space character tokenises differently at the
    end of a string (GPT-2's ``\s+(?!\S)`` keeps its last character apart only when a non-space
    follows; the word tokenizer keeps the run whole), so a cut must not end a chunk inside or just
    after a run of more than one whitespace character. A lone newline or space between non-space
    characters is its own pre-token for GPT-2 (a space joins the word after it, so we cut before
    it), its own token for the word tokenizer, and irrelevant to char and byte. Python's
    ``isspace`` covers every character Oniguruma's and ``re``'s ``\s`` match, so "not isspace" is a
    non-space for all of them."""
    for sep, after in (("\n", 1), (" ", 0)):
        j = text.rfind(sep)
        while j > 0:
            if j + 1 < len(text) and not text[j - 1].isspace() and not text[j + 1].isspace():
                return j + after
            j = text.rfind(sep, 0, j)
    return 0


@dataclass
class Source:
    """One input file: plain text (one document) or JSONL (one document per non-blank line)."""

    path: Path
    jsonl: bool
    size: int
    mtime_ns: int
    label: str = ""  # what meta.json shows (the bundled corpus is "bundled:shakespeare")

    @property
    def name(self) -> str:
        return self.label or str(self.path)

    def stat_record(self) -> dict:
        return {"path": self.name, "format": "jsonl" if self.jsonl else "text", "bytes": self.size,
                "mtime_ns": self.mtime_ns}


def resolve_sources(data: str | list[str], include: str = "", exclude: str = "", quiet: bool = False) -> list[Source]:
    """Every input file named by ``data`` (see ``split_paths``): "" means the bundled corpus."""
    paths = split_paths(data)
    if not paths:
        p = bundled_corpus_path()
        st = p.stat()
        return [Source(p, False, st.st_size, st.st_mtime_ns, BUNDLED_CORPUS)]
    sources, seen = [], set()
    for given in paths:
        for f in find_text_files(given, include, exclude, quiet=quiet):
            key = f.resolve()
            if key in seen:
                continue
            seen.add(key)
            st = f.stat()
            sources.append(Source(f, f.suffix.lower() == ".jsonl", st.st_size, st.st_mtime_ns))
    return sources


@dataclass
class ReadStats:
    """What reading skipped or repaired, for the notes printed after preparation."""

    bad_lines: dict[str, list[int]] = field(default_factory=dict)  # source -> [count, first line]
    empty_documents: int = 0
    invalid_utf8: dict[str, int] = field(default_factory=dict)  # source -> first bad byte offset
    sha256: dict[str, str] = field(default_factory=dict)  # source -> content hash (when hashing)

    def notes(self, errors: str) -> list[str]:
        out = []
        for name, (n, first) in self.bad_lines.items():
            out.append(f"skipped {n} bad JSONL line(s) in {name} (first: line {first})")
        if self.empty_documents:
            out.append(f"skipped {self.empty_documents} empty document(s)")
        verb = "replaced with U+FFFD" if errors == "replace" else "dropped"
        for name, off in self.invalid_utf8.items():
            out.append(f"invalid UTF-8 in {name} (first at byte offset {off}) {verb}")
        return out


def iter_chunks(source: Source, errors: str = "strict", text_field: str = "text", skip_bad_lines: bool = False,
                stats: ReadStats | None = None, hasher: bool = False, hint: bool = True) -> Iterator[tuple[int, str]]:
    """``(document_slot, text_chunk)`` for every document of ``source``, in order; the slot is 0 for a
    text file and the index among the non-blank lines for JSONL. Empty documents yield nothing (and
    are counted in ``stats.empty_documents``). With ``hasher``,
    the source's SHA-256 is left in ``stats.sha256``."""
    stats = stats if stats is not None else ReadStats()
    h = hashlib.sha256() if hasher else None
    name = source.name
    hint = _HINT if errors == "strict" and hint else ""

    def invalid(offset: int) -> None:
        stats.invalid_utf8.setdefault(name, offset)

    try:
        f = open(source.path, "rb")
    except OSError as e:
        raise CLLMError(f"cannot read {name}: {e.strerror}") from None
    with f:
        if source.jsonl:
            slot, offset = -1, 0
            for lineno, line in enumerate(f, start=1):
                if h:
                    h.update(line)
                start, offset = offset, offset + len(line)
                if line.isspace():
                    continue
                slot += 1
                text = decode_utf8(line, name, errors, start, hint, invalid)
                try:
                    obj = json.loads(text)
                    value = obj[text_field] if isinstance(obj, dict) else None
                    problem = None if isinstance(value, str) else (
                        f"has no string field {text_field!r}" if value is None or not isinstance(obj, dict)
                        else f"field {text_field!r} is {type(value).__name__}, not a string")
                except json.JSONDecodeError as e:
                    problem, value = f"is not valid JSON ({e.msg} at column {e.colno})", None
                except KeyError:
                    problem, value = f"has no field {text_field!r} (use --text-field)", None
                if problem:
                    if not skip_bad_lines:
                        raise CLLMError(f"{name} line {lineno} {problem}; pass --skip-bad-lines to skip such lines")
                    rec = stats.bad_lines.setdefault(name, [0, lineno])
                    rec[0] += 1
                    continue
                if not value:
                    stats.empty_documents += 1
                    continue
                pos = 0
                while len(value) - pos > BLOCK_BYTES:
                    cut = _safe_cut(value[pos : pos + BLOCK_BYTES])
                    if cut == 0:
                        break
                    yield slot, value[pos : pos + cut]
                    pos += cut
                yield slot, value[pos:] if pos else value
        else:
            offset, pending, carry, any_text = 0, b"", "", False
            while True:
                block = f.read(BLOCK_BYTES)
                if h and block:
                    h.update(block)
                data = pending + block
                if block:
                    # Decode up to the last newline (or, in a file without them, space): neither byte
                    # occurs inside a multi-byte UTF-8 sequence, so no character is split.
                    nl = data.rfind(b"\n")
                    if nl < 0:
                        nl = data.rfind(b" ")
                    if nl < 0:
                        pending = data
                        continue
                    piece, pending = data[: nl + 1], data[nl + 1 :]
                else:
                    piece, pending = data, b""
                text = carry + decode_utf8(piece, name, errors, offset, hint, invalid)
                offset += len(piece)
                if block:
                    cut = _safe_cut(text)
                    text, carry = text[:cut], text[cut:]
                else:
                    carry = ""
                if text:
                    any_text = True
                    yield 0, text
                if not block:
                    break
            if not any_text:
                stats.empty_documents += 1
    if h:
        stats.sha256[name] = h.hexdigest()


def iter_documents(data: str | Path | list, errors: str = "strict", text_field: str = "text",
                   skip_bad_lines: bool = False, include: str = "", exclude: str = "") -> Iterator[str]:
    """Every document under ``data`` as one string (a whole file, or one JSONL record's text)."""
    for source in resolve_sources([str(data)] if isinstance(data, (str, Path)) else data, include, exclude, quiet=True):
        current, parts = None, []
        for slot, chunk in iter_chunks(source, errors, text_field, skip_bad_lines, hint=False):
            if slot != current and parts:
                yield "".join(parts)
                parts = []
            current = slot
            parts.append(chunk)
        if parts:
            yield "".join(parts)
