"""Exact LLL reduction, exact Gram–Schmidt, and exact LLL checks.

Conventions: a basis is a list of m rows (lattice vectors), each a list of n Python ints; the lattice
is the set of integer combinations of the rows. All results are exact.

``lll`` runs FLINT's LLL (``python-flint``'s ``fmpz_mat.lll``, floating-point guided, fast) and then
*proves* the result: first with the rigorous floating-point certificate of ``cllm.lattice.certify``
(a-priori-bounded float64 enclosures of the exact Gram–Schmidt data); if that is inconclusive (exact
ties such as |μ| = ½, huge entries, small bases where it does not pay), with an exact *integral* LLL
pass (Cohen, Algorithm 2.6.7, de Weger's integral variables) that checks every size-reduction and
Lovász condition in integers and repairs any violation. Either way the output satisfies |μᵢⱼ| ≤ ½
and Lovász with the requested rational δ exactly.

Integral Gram–Schmidt variables (used throughout ``cllm.lattice``): for independent rows b₀…b_{r-1}
    d[0] = 1,  d[i+1] = det(Gram(b₀…bᵢ)) = Π_{j≤i} ‖b*ⱼ‖²        (positive integers)
    lam[i][j] = d[j+1]·μᵢⱼ                                      (integers, j < i)
so ‖b*ᵢ‖² = d[i+1]/d[i] and μᵢⱼ = lam[i][j]/d[j+1].
"""

from __future__ import annotations

import numbers
from fractions import Fraction

import flint
import numpy as np

from cllm.errors import CLLMError
from cllm.lattice.certify import certify_lll, to_float
from cllm.lattice.exact import as_fraction

IntMatrix = list  # list[list[int]]


class LLLResult(tuple):
    """``(reduced, transform)`` pair with extra attributes; unpacks as ``reduced, U = lll(B)``.

    * ``basis`` / ``reduced``: r × n list of int rows, r = ``rank``, zero vectors dropped.
    * ``transform``: m × m unimodular integer matrix U with U·B = [reduced; 0] (the last m − r rows of
      U·B are zero). With full row rank, U·B = reduced exactly.
    * ``kernel``: the last m − r rows of U, a basis of the integer vectors x with x·B = 0.
    * ``rank``: r.
    """

    def __new__(cls, reduced: IntMatrix, transform: IntMatrix, rank: int):
        obj = super().__new__(cls, (reduced, transform))
        obj.rank = rank
        return obj

    @property
    def basis(self) -> IntMatrix:
        return self[0]

    reduced = basis

    @property
    def transform(self) -> IntMatrix:
        return self[1]

    @property
    def kernel(self) -> IntMatrix | None:
        return None if self[1] is None else self[1][self.rank :]


def as_int_matrix(rows, name: str = "basis") -> IntMatrix:
    """Validate and copy a matrix of integers (nested sequences, a 2-D numpy int array, an fmpz_mat).

    Raises CLLMError on ragged rows or non-integer entries. ``[]`` is the empty 0 × 0 matrix.
    """
    if hasattr(rows, "tolist") and not isinstance(rows, (list, tuple)):
        rows = rows.tolist()
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__iter__"):
        raise CLLMError(f"{name} must be a list of rows of integers")
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not hasattr(row, "__iter__"):
            raise CLLMError(f"{name} row {i} is not a list of integers")
        if type(row) in (list, tuple) and all(type(x) is int for x in row):
            out.append(list(row))  # fast path: plain Python ints
            continue
        r = []
        for j, x in enumerate(row):
            if isinstance(x, bool) or not isinstance(x, (numbers.Integral, flint.fmpz)):
                if isinstance(x, Fraction) and x.denominator == 1:
                    x = x.numerator
                else:
                    raise CLLMError(f"{name} entries must be integers; got {x!r} at row {i}, column {j}")
            r.append(int(x))
        out.append(r)
    if out and any(len(r) != len(out[0]) for r in out):
        raise CLLMError(f"{name} rows have different lengths: {sorted({len(r) for r in out})}")
    return out


def as_delta(delta) -> Fraction:
    """LLL parameter δ as an exact Fraction in (1/4, 1]."""
    d = as_fraction(delta)
    if not Fraction(1, 4) < d <= 1:
        raise CLLMError(f"delta must satisfy 1/4 < delta <= 1, got {delta}")
    return d


def gram_matrix(basis) -> IntMatrix:
    """Exact Gram matrix B·Bᵀ (m × m ints)."""
    B = as_int_matrix(basis)
    if not B:
        return []
    M = flint.fmpz_mat(B)
    return [[int(x) for x in row] for row in (M * M.transpose()).tolist()]


def integral_gram_schmidt(basis) -> tuple[list[int], list[list[int]]] | None:
    """Integral GS variables ``(d, lam)`` of linearly independent rows (see module docstring).

    Computed as the fraction-free (Bareiss) LU factorisation of the Gram matrix in FLINT: its pivots
    are the d[i+1] and its upper triangle holds lam. Returns None when the rows are dependent.
    """
    B = basis if _validated(basis) else as_int_matrix(basis)
    r = len(B)
    if r == 0:
        return [1], []
    if not B[0]:
        return None
    M = flint.fmpz_mat(B)
    G = M * M.transpose()
    P, _L, _D, U = G.fflu()
    if P != _identity(r):
        return None  # a zero pivot forced a row exchange: the Gram matrix is singular
    Ul = U.tolist()
    d = [1] + [int(Ul[i][i]) for i in range(r)]
    if any(x <= 0 for x in d):
        return None
    lam = [[int(Ul[j][i]) for j in range(i)] for i in range(r)]
    return d, lam


def _validated(rows) -> bool:
    """Cheap check that rows is already a list of lists of Python ints (skips re-validation)."""
    return type(rows) is list and all(type(r) is list for r in rows) and (
        not rows or all(len(r) == len(rows[0]) for r in rows)) and all(type(x) is int for r in rows for x in r)


def _identity(r: int):
    return flint.fmpz_mat([[int(i == j) for j in range(r)] for i in range(r)])


def gram_schmidt(basis) -> tuple[list[list[Fraction]], list[list[Fraction]]]:
    """Exact Gram–Schmidt orthogonalisation (classical, in Fractions), for checks and small inputs.

    Returns ``(bstar, mu)``: bstar is m × n (b*ᵢ, zero rows where bᵢ depends on earlier rows),
    mu is m × m lower-unitriangular with μᵢⱼ = ⟨bᵢ, b*ⱼ⟩/‖b*ⱼ‖² (0 where b*ⱼ = 0).
    """
    B = as_int_matrix(basis)
    m = len(B)
    bstar: list[list[Fraction]] = []
    norms: list[Fraction] = []
    mu = [[Fraction(int(i == j)) for j in range(m)] for i in range(m)]
    for i in range(m):
        v = [Fraction(x) for x in B[i]]
        for j in range(i):
            if norms[j]:
                mu[i][j] = sum((Fraction(a) * b for a, b in zip(B[i], bstar[j])), Fraction(0)) / norms[j]
                v = [a - mu[i][j] * b for a, b in zip(v, bstar[j])]
        bstar.append(v)
        norms.append(sum((a * a for a in v), Fraction(0)))
    return bstar, mu


def is_lll_reduced(basis, delta=Fraction(99, 100)) -> bool:
    """Exact test: rows independent, |μᵢⱼ| ≤ ½ and δ‖b*ₖ₋₁‖² ≤ ‖b*ₖ‖² + μ²ₖ,ₖ₋₁‖b*ₖ₋₁‖².

    Dependent rows (including zero rows) are not a basis and give False; the empty basis is reduced.
    """
    delta = as_delta(delta)
    gs = integral_gram_schmidt(basis)
    if gs is None:
        return False
    d, lam = gs
    p, q = delta.numerator, delta.denominator
    for k in range(len(lam)):
        for j in range(k):
            if 2 * abs(lam[k][j]) > d[j + 1]:
                return False
        if k >= 1 and p * d[k] ** 2 - q * lam[k][k - 1] ** 2 > q * d[k + 1] * d[k - 1]:
            return False
    return True


def integral_lll(B: IntMatrix, U: IntMatrix, d: list[int], lam: list[list[int]], delta: Fraction) -> None:
    """Exact LLL on independent rows B (in place), applying the same row operations to U.

    Cohen, *A Course in Computational Algebraic Number Theory*, Algorithm 2.6.7, 0-based: all
    quantities are integers and every division is exact, so the result is exactly δ-LLL-reduced.
    ``d`` and ``lam`` must be the integral GS variables of B and are updated in place. ``U`` may be
    None (no transform tracked).
    """
    r = len(B)
    p, q = delta.numerator, delta.denominator

    def red(k: int, l: int) -> None:
        dl = d[l + 1]
        if 2 * abs(lam[k][l]) > dl:
            c = (2 * lam[k][l] + dl) // (2 * dl)  # nearest integer to μ = lam/d (ties upward)
            bk, bl = B[k], B[l]
            B[k] = [x - c * y for x, y in zip(bk, bl)]
            if U is not None:
                U[k] = [x - c * y for x, y in zip(U[k], U[l])]
            lam[k][l] -= c * dl
            lk, ll = lam[k], lam[l]
            for i in range(l):
                lk[i] -= c * ll[i]

    def swap(k: int) -> None:
        B[k], B[k - 1] = B[k - 1], B[k]
        if U is not None:
            U[k], U[k - 1] = U[k - 1], U[k]
        lk, lk1 = lam[k], lam[k - 1]
        for j in range(k - 1):
            lk[j], lk1[j] = lk1[j], lk[j]
        lm = lk[k - 1]
        nb = (d[k - 1] * d[k + 1] + lm * lm) // d[k]
        for i in range(k + 1, r):
            t = lam[i][k]
            lam[i][k] = (d[k + 1] * lam[i][k - 1] - lm * t) // d[k]
            lam[i][k - 1] = (nb * t + lm * lam[i][k]) // d[k + 1]
        d[k] = nb

    k = 1
    while k < r:
        red(k, k - 1)
        if p * d[k] ** 2 - q * lam[k][k - 1] ** 2 > q * d[k + 1] * d[k - 1]:
            swap(k)
            k = max(1, k - 1)
        else:
            for l in range(k - 2, -1, -1):
                red(k, l)
            k += 1


path_counts = {"certified": 0, "size_fixed": 0, "exact": 0}  # which path proved each lll() result
_FLINT_ETA = 0.5001  # FLINT's size-reduction tolerance; FLINT accepts eta ∈ [0.5, √δ)
_CERT_MIN_ROWS = 16  # below this the exact pass is cheaper than the float certificate (measured)
_FIX_ABOVE = 0.5 + 1e-9  # float-guided size reduction of |μ̃| above this (heuristic; exactness unaffected)


def lll(basis, delta=Fraction(99, 100), transform: bool = True) -> LLLResult:
    """δ-LLL reduction, exact. ``reduced, U = lll(B)``; see ``LLLResult`` for the extra attributes.

    basis: m × n integer rows, any m, n (not necessarily square or of full rank). Zero vectors
    produced by dependencies are dropped from ``reduced``; ``rank`` says how many rows remain.
    delta: rational in (1/4, 1] (Fraction, int, "99/100", or a float taken at its exact value).
    transform: when False, U is not computed (``transform`` and ``kernel`` are None) — a little
    faster; the reduced basis is certified exactly all the same.

    The result is proved δ-LLL-reduced either by the rigorous floating-point certificate of
    ``cllm.lattice.certify`` or, when that is inconclusive, by the exact integral LLL pass.
    ``path_counts`` (module level) counts which path decided: ``certified``, ``size_fixed``
    (certified after a float-guided integer size reduction), ``exact``.
    """
    B = as_int_matrix(basis)
    delta = as_delta(delta)
    m = len(B)
    if m == 0:
        return LLLResult([], [] if transform else None, 0)
    n = len(B[0])
    if n == 0:  # m empty rows: every row is the zero vector
        return LLLResult([], [[int(i == j) for j in range(m)] for i in range(m)] if transform else None, 0)
    # FLINT with a slightly stronger δ (Lovász then holds with a margin the certificate can see)
    # and η just above ½, so that |μ| ≤ ½ usually holds already.
    fdelta = min(float(delta) + 0.004, 0.999)
    if transform:
        R, T = flint.fmpz_mat(B).lll(transform=True, delta=fdelta, eta=_FLINT_ETA)
        Ut = [[int(x) for x in row] for row in T.tolist()]
    else:
        R = flint.fmpz_mat(B).lll(transform=False, delta=fdelta, eta=_FLINT_ETA)
        Ut = None
    rows = [[int(x) for x in row] for row in R.tolist()]
    z = 0  # FLINT's zbasis mode moves the zero vectors of a dependent input to the top
    while z < m and not any(rows[z]):
        z += 1
    red_rows = rows[z:]
    red_U, kernel = (Ut[z:], Ut[:z]) if transform else (None, None)
    if any(not any(r) for r in red_rows):  # defensive: a zero row that is not on top
        keep = [i for i, r in enumerate(red_rows) if any(r)]
        if transform:
            kernel += [red_U[i] for i in range(len(red_rows)) if i not in keep]
            red_U = [red_U[i] for i in keep]
        red_rows = [red_rows[i] for i in keep]
    if len(red_rows) < _CERT_MIN_ROWS or not _certify_or_fix(red_rows, red_U, delta):
        gs = integral_gram_schmidt(red_rows)
        if gs is None:
            raise CLLMError("internal error: FLINT returned dependent nonzero rows")
        d, lam = gs
        integral_lll(red_rows, red_U, d, lam, delta)
        path_counts["exact"] += 1
    return LLLResult(red_rows, red_U + kernel if transform else None, len(red_rows))


def _certify_or_fix(rows: IntMatrix, U: IntMatrix | None, delta: Fraction) -> bool:
    """True when ``rows`` is proved δ-LLL-reduced by the float certificate (possibly after a
    float-guided integer size reduction, applied exactly to rows and U). False: use the exact pass.
    """
    if len(rows) <= 1:
        return True  # no LLL condition to check (rows are nonzero)
    Bf = to_float(rows)
    if Bf is None or Bf.shape[0] > Bf.shape[1]:
        return False
    dup = float(delta) * (1.0 + 2.0**-50)  # ≥ δ: float(Fraction) is correctly rounded
    ok, Lt = certify_lll(Bf, dup)
    if ok:
        path_counts["certified"] += 1
        return True
    if Lt is None:
        return False
    # Reduce only entries clearly above ½: an exact tie μ = ±½ is allowed and must not be flipped.
    bad = np.nonzero(np.any(np.abs(np.tril(Lt, -1)) > _FIX_ABOVE, axis=1))[0]
    if not len(bad):
        return False  # undecided or a Lovász violation: exact pass
    for i in bad.tolist():  # ascending: rows j < i (and their Lt rows) are final when row i is done
        li, bi = Lt[i], rows[i]
        ui = U[i] if U is not None else None
        for j in range(i - 1, -1, -1):
            x = float(li[j])
            if abs(x) > _FIX_ABOVE:
                c = round(x)
                bj = rows[j]
                bi = [a - c * b for a, b in zip(bi, bj)]
                if ui is not None:
                    ui = [a - c * b for a, b in zip(ui, U[j])]
                li[: j + 1] -= c * Lt[j, : j + 1]
        rows[i] = bi
        if ui is not None:
            U[i] = ui
    Bf = to_float(rows)
    if Bf is None:
        return False
    ok, _ = certify_lll(Bf, dup)
    if ok:
        path_counts["size_fixed"] += 1
    return ok
