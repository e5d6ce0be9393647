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
from cllm.lattice.reduction import as_int_matrix, integral_gram_schmidt, lll

_U = 2.0**-53  # unit roundoff of IEEE double
_CHUNK = 1 << 14  # nodes expanded together; bounds memory and lets the radius shrink between chunks
_XMAX = 2.0**50  # coefficients stay far inside the exactly-representable integers of a double


class Prepared:
    """Exact and float Gram–Schmidt data of independent integer rows (r × n).

    ``mu[i, j]`` = μᵢⱼ (j < i, else 0) and ``bstar[i]`` = ‖b*ᵢ‖² / 4**shift, both correctly rounded
    doubles; ``shift`` rescales huge bases into the double range (radii are rescaled alike).
    """

    def __init__(self, rows: list[list[int]]):
        gs = integral_gram_schmidt(rows)
        if gs is None:
            raise CLLMError("basis rows are linearly dependent")
        self.rows = rows
        self.r = len(rows)
        self.n = len(rows[0]) if rows else 0
        self.d, self.lam = gs
        d = self.d
        top = max((d[i + 1].bit_length() - d[i].bit_length() for i in range(self.r)), default=0)
        self.shift = max(0, (top - 900) // 2 + 1)
        self.mu = np.zeros((self.r, self.r))
        for i in range(self.r):
            for j in range(i):
                self.mu[i, j] = self.lam[i][j] / d[j + 1]
        try:
            self.bstar = np.array([d[i + 1] / (d[i] << (2 * self.shift)) for i in range(self.r)])
        except OverflowError:
            raise CLLMError("basis too ill-conditioned for enumeration (Gram–Schmidt norms overflow)") from None
        if self.r and self.bstar.min() < 2.0**-900:
            raise CLLMError("basis too ill-conditioned for enumeration (Gram–Schmidt norms underflow)")

    def target(self, t: list[Fraction]):
        """Exact GS data of a rational target t: (D, T, lam_t, perp2) with t = T/D, T integral,
        lam_t[j] = d[j+1]·⟨T, b*ⱼ⟩/‖b*ⱼ‖² (integers), perp2 = ‖t − proj(t)‖² (Fraction)."""
        D = math.lcm(*(q.denominator for q in t)) if t else 1
        T = [int(q * D) for q in t]
        d, lam = self.d, self.lam
        lt: list[int] = []
        for j, bj in enumerate(self.rows):
            u = sum(a * b for a, b in zip(T, bj))
            for i in range(j):  # Cohen's integral Gram–Schmidt recursion; divisions are exact
                u = (d[i + 1] * u - lt[i] * lam[j][i]) // d[i]
            lt.append(u)
        u = sum(a * a for a in T)
        for i in range(self.r):
            u = (d[i + 1] * u - lt[i] * lt[i]) // d[i]
        return D, T, lt, Fraction(u, d[self.r] * D * D)

    def to_float_up(self, q: Fraction) -> float:
        """A double ≥ q / 4**shift (q ≥ 0); +inf when that exceeds the double range."""
        try:
            return float(Fraction(q.numerator, q.denominator << (2 * self.shift))) * (1 + 4 * _U)
        except OverflowError:
            return math.inf


def enumerate_tree(mu: np.ndarray, bstar: np.ndarray, tau: np.ndarray, radius2: float, on_leaves,
                   symmetric: bool = False) -> None:
    """Visit every integer x with Σᵢ yᵢ²·bstar[i] ≤ radius2, yᵢ = xᵢ − τᵢ + Σ_{j>i} μⱼᵢxⱼ.

    Leaves are passed in batches to ``on_leaves(X, ell)`` (X: int64 (N, r) coefficient rows, ell: a
    lower bound of each leaf's length); it may return a smaller radius2 to shrink the search, or None.
    ``symmetric``: skip x with last nonzero coefficient negative, and x = 0 (for SVP with τ = 0).
    The leaves are a superset of the points inside the radius (rigorous float error bounds).
    """
    r = len(bstar)
    state = {"R2": float(radius2)}
    if r == 0:
        if not symmetric:
            on_leaves(np.zeros((1, 0), dtype=np.int64), np.zeros(1))
        return
    amu = np.abs(mu)
    atau = np.abs(tau)

    def descend(level: int, X: np.ndarray, ell: np.ndarray, zf: np.ndarray) -> None:
        keep = ell <= state["R2"]
        if not keep.all():
            X, ell, zf = X[keep], ell[keep], zf[keep]
        if X.shape[0] == 0:
            return
        X, ell, zf = _expand(level, X, ell, zf, mu, amu, bstar, tau, atau, state["R2"], symmetric)
        if level == 0:
            if symmetric:
                nz = ~zf
                X, ell = X[nz], ell[nz]
            if X.shape[0]:
                new = on_leaves(X.astype(np.int64), ell)
                if new is not None and new < state["R2"]:
                    state["R2"] = float(new)
            return
        for s in range(0, X.shape[0], _CHUNK):
            descend(level - 1, X[s : s + _CHUNK], ell[s : s + _CHUNK], zf[s : s + _CHUNK])

    descend(r - 1, np.zeros((1, 0)), np.zeros(1), np.ones(1, dtype=bool))


def _expand(i, X, ell, zf, mu, amu, bstar, tau, atau, R2, symmetric):
    """Children of the nodes (rows of X = fixed coefficients x_{i+1..r-1}) at level i.

    Error analysis (u = 2⁻⁵³, m = number of terms): the computed centre c̃ = fl(τ̃ᵢ − Σ μ̃ⱼᵢxⱼ) differs
    from the exact c by at most e = 4(m+4)u·(Σ|μ̃ⱼᵢxⱼ| + |τ̃ᵢ| + |c̃|) + 1e-290: (m+3)u for the
    rounding of μ̃, τ̃ and of the dot product in any order or with FMA, u|c̃| for the final subtraction,
    the factor 4 absorbs second-order terms and the rounding of the error sum itself, the constant
    underflow. Then |x − c| ≥ |fl(x − c̃)|(1 − u) − e ≥ lb_y computed with rounding toward safety,
    and lb_y²·bstar·(1 − 8u) ≤ the exact term because bstar is within u of the exact value and the
    three roundings lose at most 3u. Partial sums are scaled by (1 − 2u) after each addition.
    """
    m = X.shape[1]
    col = mu[i + 1 :, i]
    cen = tau[i] - X @ col
    sabs = np.abs(X) @ amu[i + 1 :, i] + atau[i]
    e = 4.0 * (m + 4) * _U * (sabs + np.abs(cen)) + 1e-290
    rem = np.maximum(R2 - ell, 0.0)
    w0 = np.sqrt(rem / bstar[i])
    # candidate interval: a superset (margins ≫ rounding); the exact-safe filter below decides
    w = w0 + e + 1e-11 * (1.0 + np.abs(cen) + w0)
    lo = np.ceil(cen - w)
    hi = np.floor(cen + w)
    if symmetric:
        lo = np.where(zf, np.maximum(lo, 0.0), lo)
    if lo.size and (np.abs(lo).max() > _XMAX or np.abs(hi).max() > _XMAX):
        raise CLLMError("enumeration coefficients exceed 2**50 (radius too large or basis badly conditioned)")
    counts = np.maximum(hi - lo + 1, 0).astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros((0, m + 1)), np.zeros(0), np.zeros(0, dtype=bool)
    parent = np.repeat(np.arange(X.shape[0]), counts)
    offs = np.cumsum(counts) - counts
    x = lo[parent] + (np.arange(total) - offs[parent])
    y = np.abs(x - cen[parent])
    lb = np.maximum(y * (1.0 - 4 * _U) - e[parent], 0.0)
    new_ell = (ell[parent] + lb * lb * bstar[i] * (1.0 - 8 * _U)) * (1.0 - 2 * _U)
    keep = new_ell <= R2
    parent, x, new_ell = parent[keep], x[keep], new_ell[keep]
    Xc = np.empty((x.size, m + 1))
    Xc[:, 0] = x
    Xc[:, 1:] = X[parent]
    return Xc, new_ell, zf[parent] & (x == 0)


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
        from cllm.lattice.bkz import bkz  # local import: bkz itself builds on this module

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
