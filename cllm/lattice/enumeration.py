"""Exact Babai, CVP, SVP and ball enumeration.

Floating point only *guides* the search; it never decides the answer:

1. The basis is LLL-reduced exactly (``reduction.lll``) and its Gram–Schmidt data is computed exactly
   in integers (``integral_gram_schmidt``). Floats μ̃ᵢⱼ, ‖b*ᵢ‖² are correctly rounded from those
   exact rationals (Python's int/int division rounds correctly, for any size of integer).
2. The enumeration tree (Schnorr–Euchner/Fincke–Pohst, processed level by level with numpy,
   depth-first over chunks of nodes) prunes a node only when a *rigorous lower bound* of its exact
   partial squared length exceeds a float that is ≥ the exact squared radius. The lower bound
   carries explicit a-priori error bounds for every floating-point operation (see ``_expand``), so a
   node whose exact partial length is ≤ the exact radius² is never pruned.
3. Every surviving leaf is checked in exact integer arithmetic, and the answer is the exact minimum.
   Radius updates use exact values (the best exact squared distance found so far).

Hence: every lattice point within the radius is reached, and the returned vector is certified by
exact comparison. docs/LATTICE.md spells out the argument.
"""

from __future__ import annotations

import math
from fractions import Fraction

import flint
import numpy as np

from cllm.errors import CLLMError
from cllm.lattice.exact import as_fraction
from cllm.lattice.bkz import bkz
from cllm.lattice.reduction import as_int_matrix, integral_gram_schmidt, lll
from cllm.lattice.tree import Prepared, enumerate_tree

def _as_target(target, n: int, name: str = "target") -> list[Fraction]:
    if isinstance(target, (str, bytes)) or not hasattr(target, "__iter__"):
        raise CLLMError(f"{name} must be a list of numbers")
    t = [as_fraction(v) for v in target]
    if len(t) != n:
        raise CLLMError(f"{name} has length {len(t)} but the basis vectors have length {n}")
    return t


def _reduced(basis):
    """(n, exactly LLL-reduced independent rows) of the lattice spanned by ``basis``."""
    B = as_int_matrix(basis)
    n = len(B[0]) if B else None
    return n, lll(B).basis


def _combine(X: np.ndarray, rows: list[list[int]]) -> list[list[int]]:
    """Exact lattice vectors x·B for integer coefficient rows X (via FLINT)."""
    if not rows:
        return [[] for _ in range(X.shape[0])]
    V = flint.fmpz_mat(X.tolist()) * flint.fmpz_mat(rows)
    return [[int(v) for v in row] for row in V.tolist()]


def _nearest_plane(P: Prepared, D: int, lt: list[int]) -> list[int]:
    """Babai coefficients x, exactly: xᵢ = round(yᵢ), yᵢ = τᵢ − Σ_{j>i} μⱼᵢxⱼ, in integers."""
    x = [0] * P.r
    for i in range(P.r - 1, -1, -1):
        num = lt[i] - D * sum(P.lam[j][i] * x[j] for j in range(i + 1, P.r))
        den = D * P.d[i + 1]  # yᵢ = num / den
        x[i] = (2 * num + den) // (2 * den)
    return x


def _canon(v: list[int]) -> list[int]:
    """The lexicographically smaller of v and −v."""
    return min(v, [-a for a in v])


def _sqdist(v: list[int], T: list[int], D: int) -> Fraction:
    return Fraction(sum((D * a - b) ** 2 for a, b in zip(v, T)), D * D)


def _recentre(P: Prepared, t: list[Fraction]):
    """Translate the target by its exact Babai point w (the lattice is translation invariant and
    lexicographic order is preserved), so the float data τ stays small however large t is.
    Returns (w, D, T, lam_t, perp2) for t − w."""
    D, _T, lt, _ = P.target(t)
    w = _combine(np.array([_nearest_plane(P, D, lt)], dtype=object), P.rows)[0]
    D, T, lt, perp2 = P.target([q - a for q, a in zip(t, w)])
    return w, D, T, lt, perp2


def _tau(P: Prepared, D: int, lt: list[int]) -> np.ndarray:
    """Correctly rounded target GS coordinates τ_j = lam_t[j] / (D·d[j+1])."""
    try:
        return np.array([lt[j] / (D * P.d[j + 1]) for j in range(P.r)], dtype=np.float64)
    except OverflowError:
        raise CLLMError("target coordinates overflow double precision after recentring") from None


def babai(basis, target) -> list[int]:
    """Babai's nearest-plane lattice vector for ``target`` (rational vector of length n), exact.

    Uses the rows as given when they are independent (so ‖t − w‖² ≤ ‖t⊥‖² + ¼Σ‖b*ᵢ‖² for *this*
    basis), otherwise the LLL-reduced basis of their lattice. Returns an int list of length n.
    """
    B = as_int_matrix(basis)
    t = _as_target(target, len(B[0]) if B else len(list(target)))
    if not B or integral_gram_schmidt(B) is None:
        B = lll(B).basis if B else []
    if not B:
        return [0] * len(t)
    P = Prepared(B)
    D, _T, lt, _ = P.target(t)
    x = _nearest_plane(P, D, lt)
    return [sum(c * row[k] for c, row in zip(x, B)) for k in range(P.n)]


def closest_vector(basis, target) -> list[int]:
    """A lattice vector v minimising ‖v − target‖, exactly; target entries may be rational.

    Canonical: of all closest vectors the lexicographically smallest is returned (the final radius
    is the exact optimum, so every tie is visited). Int list of length n.
    """
    n, rows = _reduced(basis)
    t = _as_target(target, n if n is not None else len(list(target)))
    if not rows:
        return [0] * len(t)
    P = Prepared(rows)
    w, D, T, lt, perp2 = _recentre(P, t)  # search around t − w (w = Babai point), add w back
    best = [0] * P.n
    best_d = _sqdist(best, T, D)
    tau = _tau(P, D, lt)

    def on_leaves(X, _ell):
        nonlocal best, best_d
        for v in _combine(X, rows):
            dv = _sqdist(v, T, D)
            if dv < best_d or (dv == best_d and v < best):
                best, best_d = v, dv
        return P.to_float_up(best_d - perp2)

    enumerate_tree(P.mu, P.bstar, tau, P.to_float_up(best_d - perp2), on_leaves)
    return [a + b for a, b in zip(best, w)]


# Above this Gaussian-heuristic tree size BKZ preprocessing pays for itself (measured at n = 35–45:
# the estimate overshoots the real tree, whose radius shrinks as soon as a short vector is found).
_PREPROCESS_NODES = 1e8


def _sqnorms(rows: list[list[int]]) -> list[int]:
    return [sum(a * a for a in v) for v in rows]


def estimate_nodes(P: Prepared, radius2) -> float:
    """Gaussian-heuristic size of the full enumeration tree of radius² ``radius2`` (a heuristic,
    used only to decide on preprocessing): Σₖ vol(k-ball of radius R) / Π_{i ≥ r−k} ‖b*ᵢ‖."""
    if P.r == 0:
        return 0.0
    lr = 0.5 * (math.log(float(radius2)) - 2 * P.shift * math.log(4))
    logs = 0.5 * np.log(P.bstar[::-1])
    total, acc = 0.0, 0.0
    for k in range(1, P.r + 1):
        acc += logs[k - 1]
        lv = 0.5 * k * math.log(math.pi) + k * lr - math.lgamma(k / 2 + 1) - acc
        total += math.exp(min(lv, 700.0))
    return total / 2


def shortest_vector(basis, preprocess: bool = True) -> list[int]:
    """A nonzero lattice vector of minimal Euclidean norm, exactly. Canonical: of all shortest
    vectors (both signs) the lexicographically smallest is returned, whatever basis was given.

    ``preprocess``: BKZ-reduce first when the rank is ≥ 20 (a better basis means a smaller tree;
    exactness does not depend on it). Raises CLLMError for a lattice of rank 0.
    """
    n, rows = _reduced(basis)
    if not rows:
        raise CLLMError("the lattice has rank 0: there is no nonzero vector")
    P = Prepared(rows)
    beta = 10
    while preprocess and beta <= min(30, P.r) and estimate_nodes(P, min(_sqnorms(rows))) > _PREPROCESS_NODES:
        rows = bkz(rows, block_size=beta, max_tours=4).basis
        P = Prepared(rows)
        beta += 10
    best = min((_canon(v) for v in rows), key=lambda v: (sum(a * a for a in v), v))
    best_n = sum(a * a for a in best)

    def on_leaves(X, _ell):
        nonlocal best, best_n
        for v in _combine(X, rows):
            nv = sum(a * a for a in v)
            v = _canon(v)
            if nv < best_n or (nv == best_n and v < best):
                best, best_n = v, nv
        return P.to_float_up(Fraction(best_n))

    enumerate_tree(P.mu, P.bstar, np.zeros(P.r), P.to_float_up(Fraction(best_n)), on_leaves, symmetric=True)
    return best


def enumerate_ball(basis, center, radius, *, squared: bool = False, limit: int = 10**6) -> list[list[int]]:
    """All lattice vectors v with ‖v − center‖ ≤ radius (exact, boundary included), sorted by
    (squared distance, v). ``squared=True`` reads ``radius`` as the squared radius. Raises CLLMError
    when more than ``limit`` points lie in the ball."""
    n, rows = _reduced(basis)
    c = _as_target(center, n if n is not None else len(list(center)), "center")
    rad = as_fraction(radius)
    if rad < 0:
        raise CLLMError(f"radius must be ≥ 0, got {radius}")
    R2 = rad if squared else rad * rad
    if not rows:
        return [[0] * len(c)] if sum(q * q for q in c) <= R2 else []
    P = Prepared(rows)
    w, D, T, lt, perp2 = _recentre(P, c)
    if R2 < perp2:
        return []
    tau = _tau(P, D, lt)
    found: list[tuple[Fraction, list[int]]] = []

    def on_leaves(X, _ell):
        for v in _combine(X, rows):
            dv = _sqdist(v, T, D)
            if dv <= R2:
                found.append((dv, [a + b for a, b in zip(v, w)]))
        if len(found) > limit:
            raise CLLMError(f"more than {limit} lattice points in the ball; raise limit or shrink radius")
        return None

    enumerate_tree(P.mu, P.bstar, tau, P.to_float_up(R2 - perp2), on_leaves)
    found.sort()
    return [v for _, v in found]
