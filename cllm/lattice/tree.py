"""The enumeration engine: a lattice's Gram–Schmidt data as guiding floats (``Prepared``) and the
level-by-level Schnorr–Euchner tree search with rigorous pruning bounds (``enumerate_tree``).

Shared by exact CVP/SVP (``enumeration``) and BKZ (``bkz``); the argument for why no point inside
the radius is ever pruned is in ``enumeration``'s docstring and docs/LATTICE.md.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from cllm.errors import CLLMError
from cllm.lattice.reduction import integral_gram_schmidt

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
