"""Rigorous floating-point certificate that a basis is δ-LLL-reduced (no exact rationals needed).

``certify_lll(rows, delta)`` returns ``(True, mu)`` only when it has *proved* that the independent
integer rows b₀…b_{m−1} satisfy |μᵢⱼ| ≤ ½ (j < i) and δ‖b*ₖ₋₁‖² ≤ ‖b*ₖ‖² + μ²ₖ,ₖ₋₁‖b*ₖ₋₁‖² exactly.
Otherwise it returns ``(False, mu)`` (``mu`` = float approximation of μ, or None) and the caller falls
back to exact integer arithmetic. Only IEEE-754 binary64 with round-to-nearest is assumed (numpy on
x86-64 / ARM64); every rounding is covered by an a-priori bound. The argument, step by step
(u = 2⁻⁵³, |A| entrywise absolute value, inequalities between matrices entrywise):

1. Approximations, no rigour needed: L̃ ≈ μ (unit lower triangular, from a float QR of Bᵀ) and
   X ≈ L̃⁻¹ (unit lower triangular). Both are exactly known real matrices once stored.
2. Y = X·B has the same Gram–Schmidt vectors as B (row i of Y is bᵢ plus a combination of earlier
   rows), so ‖y*ᵢ‖² = ‖b*ᵢ‖² = Dᵢ and μ(Y) = M := X·L (unit lower triangular, ≈ I).
   Ỹ = fl(X·fl(B)) satisfies |Y − Ỹ| ≤ ρ := (m+3)u·|X|·|fl(B)| (γ_m for the product in any summation
   order, FMA or not, plus 2u for the conversion of the integers to doubles).
3. H = Y·Yᵀ: |H − fl(ỸỸᵀ)| ≤ r := (n+1)u·|Ỹ||Ỹ|ᵀ + |Ỹ|ρᵀ + ρ|Ỹ|ᵀ + ρρᵀ.
4. With Δᵢ = Hᵢᵢ ∈ [Δlo, Δhi] and H = S(I+E)S, S = diag(√Δ): |Eᵢⱼ| ≤ êᵢⱼ := (|H̃ᵢⱼ| + rᵢⱼ)/√(ΔloᵢΔloⱼ),
   ε := ‖ê‖_F ≥ ‖E‖₂. The projection π of yᵢ on span(y₀…yᵢ₋₁) has
   ‖π(yᵢ)‖² = gᵀH_<⁻¹g ≤ Δᵢ·Σⱼ<ᵢ êᵢⱼ²/(1−ε) =: Δᵢσᵢ²  (λ_min(I+E_<) ≥ 1−ε).
   Hence Dᵢ = Δᵢ − ‖π(yᵢ)‖² ∈ [Δloᵢ(1−σᵢ²), Δhiᵢ] and, as π(yᵢ) = Σⱼ Mᵢⱼb*ⱼ orthogonally,
   |Mᵢⱼ| ≤ σᵢ·√(Δhiᵢ/Dloⱼ) =: m̂ᵢⱼ.
5. P = X·L̃ is unit lower triangular; |P − I| ≤ T := |fl(XL̃) − I| + (m+1)u|X||L̃| (strictly lower).
   With t = ‖T‖∞ < 1: P⁻¹ = Σₖ(I−P)ᵏ (nilpotent), so |P⁻¹| ≤ I + t/(1−t)·𝟙𝟙ᵀ. Then
   L − L̃ = X⁻¹(M − XL̃) = L̃P⁻¹((M − I) − (P − I)), so
   |μ − L̃| ≤ β := |L̃|(I + c𝟙𝟙ᵀ)Q,  Q = m̂ + T,  c = t/(1−t).
6. Certified if |L̃ᵢⱼ| + βᵢⱼ ≤ ½ for all j < i, and δ·Dhiₖ₋₁ ≤ Dloₖ + max(0, |L̃ₖ,ₖ₋₁| − β)²·Dloₖ₋₁.

Rounding in the bound computations themselves: each bound is a sum/product of non-negative doubles
computed with at most (m + n + 100) roundings, so its exact value is at most (1 + 2⁻²⁰) times the
computed one (for m, n < 2²⁰); upper bounds are multiplied by ``_UP`` = 1 + 2⁻²⁰ and lower bounds
(after a subtraction) by ``_DOWN`` = 1 − 2⁻²⁰. Underflow adds at most k·2⁻¹⁰⁷⁴ to a k-term dot
product, covered by the absolute ``_TINY`` = 2⁻⁹⁰⁰. Any NaN/inf makes a comparison fail, which
only means "not certified".
"""

from __future__ import annotations

import numpy as np

_U = 2.0**-53
_UP = 1.0 + 2.0**-20
_DOWN = 1.0 - 2.0**-20
_TINY = 2.0**-900
_MAX_BITS = 400  # entries beyond this go straight to the exact path (doubles would overflow)


def float_mu(Bf: np.ndarray) -> np.ndarray | None:
    """Approximate μ (unit lower triangular m × m) of the float rows Bf via QR of Bfᵀ, or None."""
    m = Bf.shape[0]
    try:
        R = np.linalg.qr(Bf.T, mode="r")
    except np.linalg.LinAlgError:
        return None
    diag = np.diagonal(R)[:m]
    if not np.all(np.isfinite(R)) or np.any(diag == 0):
        return None
    Lt = np.tril(R[:m, :m].T / diag[None, :], -1)
    np.fill_diagonal(Lt, 1.0)
    return Lt


def to_float(rows: list[list[int]]) -> np.ndarray | None:
    """Rows as float64 (correctly rounded by CPython/numpy), or None when an entry reaches 2**_MAX_BITS."""
    try:
        Bf = np.array(rows, dtype=np.float64)
    except OverflowError:
        return None
    if Bf.size and not np.max(np.abs(Bf)) < 2.0**_MAX_BITS:
        return None
    return Bf


def certify_lll(Bf: np.ndarray, delta_float_up: float, Lt: np.ndarray | None = None):
    """Try to prove that the exact integer rows rounded to ``Bf`` are δ-LLL-reduced.

    ``Bf`` must be the float64 conversion of independent integer rows (m × n, m ≤ n);
    ``delta_float_up`` a double ≥ δ. Returns ``(certified, Lt)``; Lt is the float μ or None.
    """
    m, n = Bf.shape
    if m <= 1:
        return True, np.ones((m, m))
    if Lt is None:
        Lt = float_mu(Bf)
    if Lt is None:
        return False, None
    try:
        X = np.linalg.inv(Lt)
    except np.linalg.LinAlgError:
        return False, Lt
    X = np.tril(X, -1)
    np.fill_diagonal(X, 1.0)
    aX, aB = np.abs(X), np.abs(Bf)
    # step 2: Y = X·B
    Y = X @ Bf
    rho = ((m + 3) * _U * _UP) * (aX @ aB) + _TINY
    # step 3: H = Y·Yᵀ
    aY = np.abs(Y)
    H = Y @ Y.T
    W = aY @ rho.T
    r = (((n + 1) * _U) * (aY @ aY.T) + W + W.T + rho @ rho.T) * _UP + _TINY
    # step 4: diagonal scaling, ε, σ, D bounds, |M − I|
    hd, rd = np.diagonal(H), np.diagonal(r)
    dlo = (hd - rd) * _DOWN
    dhi = (hd + rd) * _UP
    if not np.all(dlo > 0):
        return False, Lt
    s = np.sqrt(dlo)
    e = (np.abs(H) + r) / np.outer(s, s) * _UP
    np.fill_diagonal(e, 0.0)
    eps = np.sqrt(np.sum(e * e)) * _UP
    if not eps < 0.5:
        return False, Lt
    sig2 = np.sum(np.tril(e, -1) ** 2, axis=1) / ((1.0 - eps) * _DOWN) * _UP
    if not np.all(sig2 < 0.5):
        return False, Lt
    Dlo = dlo * (1.0 - sig2) * _DOWN
    Dhi = dhi
    if not np.all(Dlo > 2.0**-400):  # keeps the absolute underflow errors below negligible
        return False, Lt
    mhat = np.tril(np.outer(np.sqrt(sig2 * dhi), 1.0 / np.sqrt(Dlo)), -1) * _UP
    # step 5: P = X·L̃ and the final bound β on |μ − L̃|
    aL = np.abs(Lt)
    P = X @ Lt
    T = np.tril(np.abs(P - np.eye(m)) * _UP + ((m + 1) * _U * _UP) * (aX @ aL) + _TINY, -1)
    t = np.max(np.sum(T, axis=1)) * _UP
    if not t < 0.5:
        return False, Lt
    c = t / ((1.0 - t) * _DOWN) * _UP
    Q = mhat + T
    beta = (aL @ Q + c * np.outer(np.sum(aL, axis=1), np.sum(Q, axis=0))) * _UP + _TINY
    # step 6: the LLL conditions on the enclosures
    low = np.tril(np.ones((m, m), dtype=bool), -1)
    if not np.all(((aL + beta) * _UP)[low] <= 0.5):
        return False, Lt
    k = np.arange(1, m)
    mu_lo = np.maximum(0.0, (aL[k, k - 1] - beta[k, k - 1]) * _DOWN)
    lhs = delta_float_up * Dhi[k - 1] * _UP
    rhs = (Dlo[k] + mu_lo * mu_lo * Dlo[k - 1]) * _DOWN
    if not np.all(lhs <= rhs):
        return False, Lt
    return True, Lt
