"""BKZ (Schnorr–Euchner) on top of the exact LLL and the enumeration of ``enumeration.py``.

Each tour walks k = 0 … r−2; for the block [k, min(k+β, r)) it enumerates the shortest nonzero
vector of the projected block lattice π_k(L(b_k…b_{k+β−1})) (same rigorous tree search as SVP, radius
δ·‖b*_k‖²). When that vector is shorter than δ·‖b*_k‖² it is inserted before b_k and the r + 1
generators are LLL-reduced exactly again (FLINT + exact pass), which removes the dependency.

All basis changes are integer row operations tracked in the transform, so the lattice is preserved
exactly whatever the floats did. BKZ's *quality* is heuristic (as everywhere); only the guarantee
"first vector no longer than LLL's" is enforced, by an exact final comparison.

Early abort: a tour that inserts nothing ends the reduction (the basis is then BKZ-β reduced up to
the δ slack); so does a tour that lowers the log-potential Σ (r−i)·log‖b*ᵢ‖² by less than
``abort_tolerance`` (relative) without shortening b₀; and ``max_tours`` caps the number of tours.
"""

from __future__ import annotations

import math
from fractions import Fraction

import flint
import numpy as np

from cllm.errors import CLLMError
from cllm.lattice.reduction import LLLResult, as_delta, as_int_matrix, lll
from cllm.lattice.tree import Prepared, enumerate_tree


def _potential(P: Prepared) -> float:
    logs = np.log(P.bstar) + 2 * P.shift * math.log(4)
    return float(np.sum((P.r - np.arange(P.r)) * logs))


def _block_svp(P: Prepared, k: int, end: int, delta: float):
    """Coefficients (w.r.t. b_k…b_{end−1}) of a shortest projected vector if shorter than δ·‖b*_k‖²."""
    mu = P.mu[k:end, k:end]
    bstar = P.bstar[k:end]
    found = {"x": None, "ell": delta * bstar[0]}

    def on_leaves(X, ell):
        j = int(np.argmin(ell))
        if ell[j] < found["ell"]:
            found["x"], found["ell"] = X[j].tolist(), float(ell[j])
            return found["ell"]
        return None

    enumerate_tree(mu, bstar, np.zeros(end - k), found["ell"], on_leaves, symmetric=True)
    return found["x"]


def bkz(basis, block_size: int = 10, delta=Fraction(99, 100), *, max_tours: int = 8,
        abort_tolerance: float = 1e-3) -> LLLResult:
    """BKZ-β reduction. Returns an ``LLLResult`` (``reduced, U = bkz(B, 10)``) with U·B = [reduced; 0].

    basis: m × n integer rows (any shape/rank); block_size β ≥ 1 (β ≤ 2 is plain LLL);
    delta: LLL/BKZ parameter in (1/4, 1]. The result is exactly δ-LLL-reduced and its first vector
    is never longer than that of ``lll(basis, delta)``.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise CLLMError(f"block_size must be a positive integer, got {block_size!r}")
    if not isinstance(max_tours, int) or max_tours < 0:
        raise CLLMError(f"max_tours must be a non-negative integer, got {max_tours!r}")
    B = as_int_matrix(basis)
    delta = as_delta(delta)
    start = lll(B, delta)
    rows, r = [list(v) for v in start.basis], start.rank
    U = [list(u) for u in start.transform[:r]]
    kernel = start.kernel
    if r < 2 or block_size <= 2:
        return start
    fdelta = float(delta)
    P = Prepared(rows)
    pot = _potential(P)
    for _tour in range(max_tours):
        changed = False
        first = sum(a * a for a in rows[0])
        for k in range(r - 1):
            end = min(k + block_size, r)
            x = _block_svp(P, k, end, fdelta)
            if x is None:
                continue
            blk = flint.fmpz_mat([x])
            v = (blk * flint.fmpz_mat(rows[k:end])).tolist()[0]
            uv = (blk * flint.fmpz_mat(U[k:end])).tolist()[0]
            gens = rows[:k] + [[int(a) for a in v]] + rows[k:]
            res = lll(gens, delta)
            if res.rank != r:
                raise CLLMError("internal error: BKZ insertion changed the rank")
            T = flint.fmpz_mat(res.transform[:r])
            U = [[int(a) for a in row] for row in (T * flint.fmpz_mat(U[:k] + [[int(a) for a in uv]] + U[k:])).tolist()]
            rows = [list(v) for v in res.basis]
            P = Prepared(rows)
            changed = True
        new_pot = _potential(P)
        shrunk = sum(a * a for a in rows[0]) < first
        if not changed or (not shrunk and pot - new_pot < abort_tolerance * abs(pot)):
            break
        pot = new_pot
    if sum(a * a for a in rows[0]) > sum(a * a for a in start.basis[0]):
        return start  # never worse than LLL (cannot happen with exact LLL after insertion; kept as a guard)
    return LLLResult(rows, U + kernel, r)
