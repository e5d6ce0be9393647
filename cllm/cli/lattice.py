"""``cllm lattice lll|cvp|svp|bkz --input basis.json [--target ...]``: exact lattice tools, JSON out.

``cllm.cli`` calls ``register(subparsers)``. Input files hold a JSON list of integer rows (``[[1, 2], [3, 4]]``,
or an object with a "basis" key) or whitespace-separated rows, one lattice vector per line;
``--input -`` reads standard input.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

from cllm.errors import CLLMError
from cllm.lattice.bkz import bkz
from cllm.lattice.enumeration import closest_vector, shortest_vector
from cllm.lattice.exact import as_fraction
from cllm.lattice.reduction import as_delta, as_int_matrix, lll


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    p = Path(path)
    if not p.is_file():
        raise CLLMError(f"input file not found: {path}")
    try:
        return p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CLLMError(f"cannot read {path}: {exc}") from None


def parse_rows(text: str, source: str) -> list:
    """Rows from JSON (list of lists, or {"basis": ...}) or whitespace-separated lines of numbers."""
    s = text.strip()
    if s.startswith("[") or s.startswith("{"):
        try:
            data = json.loads(s)
        except json.JSONDecodeError as exc:
            raise CLLMError(f"{source}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict):
            if "basis" not in data:
                raise CLLMError(f"{source}: JSON object has no 'basis' key")
            data = data["basis"]
        if not isinstance(data, list):
            raise CLLMError(f"{source}: expected a JSON list of rows")
        return data
    rows = []
    for lineno, line in enumerate(s.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            rows.append([int(tok) for tok in line.replace(",", " ").split()])
        except ValueError:
            raise CLLMError(f"{source}: line {lineno} is not a row of integers: {line[:60]!r}") from None
    return rows


def _load_basis(path: str) -> list[list[int]]:
    rows = parse_rows(_read_text(path), path)
    if rows and not all(isinstance(r, list) for r in rows):
        raise CLLMError(f"{path}: expected a list of rows (a list of lists of integers)")
    return as_int_matrix(rows, "basis")


def _load_target(tokens: list[str]) -> list[Fraction]:
    """``--target 1 2 3``, ``--target "[1, 2, 3]"`` or ``--target path`` (JSON list or numbers)."""
    if len(tokens) == 1:
        tok = tokens[0].strip()
        if tok.startswith("["):
            data = parse_rows(tok, "--target")
        elif Path(tok).is_file():
            data = parse_rows(_read_text(tok), tok)
            if len(data) == 1 and isinstance(data[0], list):
                data = data[0]  # one whitespace-separated line
        else:
            data = tok.replace(",", " ").split()
    else:
        data = tokens
    if any(isinstance(x, list) for x in data):
        raise CLLMError("--target must be one vector, not a list of rows")
    return [as_fraction(x) for x in data]


def _num(q: Fraction):
    """JSON form of an exact rational: int when integral, else the string "p/q"."""
    return q.numerator if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def run(args: argparse.Namespace) -> int:
    """Execute one ``cllm lattice`` sub-command; prints one JSON object to stdout, returns 0."""
    cmd = args.lattice_command
    basis = _load_basis(args.input)
    delta = as_delta(args.delta)
    n = len(basis[0]) if basis else 0
    if cmd in ("lll", "bkz"):
        if cmd == "lll":
            res = lll(basis, delta)
            out = {"command": "lll"}
        else:
            res = bkz(basis, args.block_size, delta)
            out = {"command": "bkz", "block_size": args.block_size}
        out.update({"delta": _num(delta), "rank": res.rank, "basis": res.basis, "transform": res.transform})
    elif cmd == "svp":
        v = shortest_vector(basis)
        out = {"command": "svp", "vector": v, "norm_squared": sum(a * a for a in v)}
    elif cmd == "cvp":
        if args.target is None:
            raise CLLMError("cvp needs --target")
        t = _load_target(args.target)
        if basis and len(t) != n:
            raise CLLMError(f"target has length {len(t)} but the basis vectors have length {n}")
        v = closest_vector(basis, t)
        d2 = sum((a - b) ** 2 for a, b in zip(v, t))
        out = {"command": "cvp", "vector": v, "distance_squared": _num(Fraction(d2))}
    else:  # argparse restricts the choices; kept for direct callers
        raise CLLMError(f"unknown lattice command {cmd!r}")
    print(json.dumps(out))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``lattice`` sub-parser (sub-commands lll, cvp, svp, bkz) to an argparse subparsers."""
    p = subparsers.add_parser("lattice", help="exact lattice reduction, CVP and SVP (JSON output)",
                              description="Exact LLL / BKZ reduction, closest and shortest vectors.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--input", required=True, metavar="PATH",
                        help="basis file: JSON list of integer rows, or whitespace-separated rows ('-' = stdin)")
    common.add_argument("--delta", default="99/100", help="LLL parameter in (1/4, 1] (default 99/100)")
    sub = p.add_subparsers(dest="lattice_command", metavar="{lll,cvp,svp,bkz}")
    sub.required = True
    sub.add_parser("lll", parents=[common], help="exact LLL reduction with transform")
    cvp = sub.add_parser("cvp", parents=[common], help="exact closest vector to --target")
    cvp.add_argument("--target", nargs="+", required=True, metavar="T",
                     help="target vector: numbers, a JSON list, or a file")
    sub.add_parser("svp", parents=[common], help="exact shortest nonzero vector")
    b = sub.add_parser("bkz", parents=[common], help="BKZ reduction")
    b.add_argument("--block-size", type=int, default=10, help="BKZ block size (default 10)")
    p.set_defaults(func=run, target=None, block_size=10)
    return p
