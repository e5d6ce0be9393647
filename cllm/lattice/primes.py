"""Primes: segmented numpy sieve, prime counting, n-th prime, primality and factorisation.

* ``sieve(n)``           all primes ≤ n as an int64 array (segmented, odd-only, numpy slices).
* ``primes_in_range``     primes in [a, b] by the same segmented sieve.
* ``prime_pi(n)``         π(n) by the Lucy–Hedgehog (Legendre–Meissel style) method, O(n^¾) numpy work.
* ``nth_prime(n)``        p_n with Dusart's bounds: π(lower) then a short segmented sieve.
* ``is_prime(n)``         deterministic Miller–Rabin (bases 2..41) for n < 3.3·10²⁴, which covers
                          every 64-bit integer; above that BPSW (strong base-2 + strong Lucas), a
                          strong probable-prime test with no known counterexample but no proof.
* ``factorize(n)``        trial division by small primes, then Pollard rho (Brent's variant).
"""

from __future__ import annotations

import math
import numbers
import random

import numpy as np

from cllm.errors import CLLMError

# Up to this bound a plain (non-segmented) sieve is cheaper than the segment bookkeeping.
_PLAIN_LIMIT = 1 << 24
# Odd numbers per segment: 2 MiB of bools, which stays in L2/L3 cache and keeps numpy slices long.
_SEGMENT = 1 << 21
# Largest n for which prime_pi uses int64 arithmetic safely (n // i and counts fit comfortably).
PRIME_PI_MAX = 10**15


def _check_int(n, name: str = "n", minimum: int | None = None) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise CLLMError(f"{name} must be an integer, got {n!r}")
    n = int(n)
    if minimum is not None and n < minimum:
        raise CLLMError(f"{name} must be ≥ {minimum}, got {n}")
    return n


def _plain_sieve(n: int) -> np.ndarray:
    """Primes ≤ n (n small enough for one array), odd-only: index i stands for 2i + 1."""
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    odd = np.ones((n + 1) // 2, dtype=bool)
    odd[0] = False  # 1 is not prime
    for i in range(1, (math.isqrt(n) - 1) // 2 + 1):
        if odd[i]:
            p = 2 * i + 1
            odd[p * p // 2 :: p] = False
    return np.concatenate(([2], 2 * np.flatnonzero(odd) + 1)).astype(np.int64)


def primes_in_range(a: int, b: int) -> np.ndarray:
    """All primes p with a ≤ p ≤ b, ascending int64 array (segmented sieve; memory O(√b + segment))."""
    a = max(_check_int(a, "a"), 0)
    b = _check_int(b, "b")
    if b > 2**62:
        raise CLLMError("primes_in_range: b must be below 2**62 (int64 arrays)")
    if b < 2 or b < a:
        return np.zeros(0, dtype=np.int64)
    if b <= _PLAIN_LIMIT:
        p = _plain_sieve(b)
        return p[p >= a]
    base = _plain_sieve(math.isqrt(b))[1:]  # odd base primes
    out = [np.array([2], dtype=np.int64)] if a <= 2 else []
    lo = max(a, 3) | 1  # first odd number ≥ max(a, 3)
    while lo <= b:
        count = min(_SEGMENT, (b - lo) // 2 + 1)  # odd numbers lo, lo+2, ..., lo+2(count-1)
        hi = lo + 2 * (count - 1)
        seg = np.ones(count, dtype=bool)
        for p in base.tolist():
            pp = p * p
            if pp > hi:
                break
            start = max(pp, -(-lo // p) * p)
            if start % 2 == 0:
                start += p  # skip even multiples; the segment holds odd numbers only
            seg[(start - lo) // 2 :: p] = False
        out.append(lo + 2 * np.flatnonzero(seg).astype(np.int64))
        lo = hi + 2
    res = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    return res[res >= 2] if a <= 1 else res


def sieve(n: int) -> np.ndarray:
    """All primes ≤ n as an ascending int64 numpy array (``sieve(10) → [2, 3, 5, 7]``)."""
    n = _check_int(n)
    return primes_in_range(2, n)


def prime_pi(n: int) -> int:
    """π(n), the number of primes ≤ n, exactly. Lucy–Hedgehog: O(n^¾) time, O(√n) memory.

    Valid for n ≤ PRIME_PI_MAX (10^15); raises CLLMError above.
    """
    n = _check_int(n)
    if n < 2:
        return 0
    if n > PRIME_PI_MAX:
        raise CLLMError(f"prime_pi supports n ≤ {PRIME_PI_MAX}, got {n}")
    if n <= 1 << 20:
        return int(sieve(n).size)
    r = math.isqrt(n)
    # S(v) = count of numbers in [2, v] that survive sieving by primes < p (eventually π(v)).
    small = np.maximum(np.arange(r + 1, dtype=np.int64) - 1, 0)  # small[v] = S(v), v ≤ r
    idx = np.arange(1, r + 1, dtype=np.int64)
    large = np.zeros(r + 1, dtype=np.int64)
    large[1:] = n // idx - 1  # large[i] = S(n // i)
    for k, p in enumerate(_plain_sieve(r).tolist()):
        sp = k  # S(p - 1) = number of primes below p
        p2 = p * p
        imax = min(r, n // p2)
        i = idx[:imax]
        # S(n // (i p)): from `large` while i p ≤ r, else from `small` (then n // (i p) ≤ r).
        cut = min(imax, r // p)
        sub = np.empty(imax, dtype=np.int64)
        sub[:cut] = large[i[:cut] * p]
        sub[cut:] = small[n // (i[cut:] * p)]
        large[1 : imax + 1] -= sub - sp
        if p2 <= r:
            v = np.arange(p2, r + 1, dtype=np.int64)
            small[p2:] -= small[v // p] - sp  # right side is evaluated from the old values first
    return int(large[1])


def nth_prime(n: int) -> int:
    """The n-th prime, 1-based: ``nth_prime(1) == 2``, ``nth_prime(10**6) == 15485863``.

    Uses Dusart's bounds n(ln n + ln ln n − 1) ≤ p_n ≤ n(ln n + ln ln n − 0.9484) (n ≥ 39017):
    counts primes below the lower bound with ``prime_pi`` and sieves the short gap above it.
    """
    n = _check_int(n, minimum=1)
    if n < 6:
        return (2, 3, 5, 7, 11)[n - 1]
    ln_n = math.log(n)
    lnln = math.log(ln_n)
    # Rosser's bound p_n < n(ln n + ln ln n) for n ≥ 6; widened a little against float rounding.
    upper = int(n * (ln_n + lnln) * (1 + 1e-9)) + 2
    if upper <= 1 << 26:
        return int(sieve(upper)[n - 1])
    if n >= 39017:
        upper = int(n * (ln_n + lnln - 0.9484) * (1 + 1e-9)) + 2
    lower = max(2, int(n * (ln_n + lnln - 1) * (1 - 1e-9)) - 2)
    below = prime_pi(lower - 1)
    ps = primes_in_range(lower, upper)
    k = n - below
    if not 1 <= k <= ps.size:  # cannot happen with Dusart's bounds; guard against float trouble
        raise CLLMError(f"nth_prime: internal bound failure for n={n}")
    return int(ps[k - 1])


_SMALL_PRIMES = tuple(int(p) for p in _plain_sieve(1000))
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
# Sorenson & Webster (2015): Miller–Rabin with the 13 prime bases ≤ 41 is correct below this bound.
MR_DETERMINISTIC_LIMIT = 3317044064679887385961981


def _strong_probable_prime(n: int, a: int) -> bool:
    """Miller–Rabin strong probable-prime test of odd n > 2 to base a."""
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    x = pow(a, d, n)
    if x == 1 or x == n - 1:
        return True
    for _ in range(s - 1):
        x = x * x % n
        if x == n - 1:
            return True
    return False


def _jacobi(a: int, n: int) -> int:
    a %= n
    result = 1
    while a:
        while a % 2 == 0:
            a //= 2
            if n % 8 in (3, 5):
                result = -result
        a, n = n, a
        if a % 4 == 3 and n % 4 == 3:
            result = -result
        a %= n
    return result if n == 1 else 0


def _strong_lucas(n: int) -> bool:
    """Strong Lucas probable-prime test with Selfridge's parameters (method A), n odd, not a square."""
    D = 5
    while True:
        j = _jacobi(D, n)
        if j == -1:
            break
        if j == 0 and abs(D) != n:
            return False
        D = -D - 2 if D > 0 else -D + 2
    P, Q = 1, (1 - D) // 4
    d, s = n + 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    # Binary Lucas chain for U_d, V_d (mod n), left to right.
    U, V, Qk = 1, P, Q % n
    inv2 = (n + 1) // 2
    for bit in bin(d)[3:]:
        U, V = U * V % n, (V * V - 2 * Qk) % n
        Qk = Qk * Qk % n
        if bit == "1":
            U, V = (P * U + V) * inv2 % n, (D * U + P * V) * inv2 % n
            Qk = Qk * Q % n
    if U == 0 or V == 0:
        return True
    for _ in range(s - 1):
        V = (V * V - 2 * Qk) % n
        Qk = Qk * Qk % n
        if V == 0:
            return True
    return False


def is_prime(n: int) -> bool:
    """Primality of an integer. Exact (deterministic) for n < 3.3·10²⁴ ⊃ all 64-bit integers.

    Beyond that bound the answer is BPSW: a strong probable-prime test (base 2 Miller–Rabin plus
    strong Lucas) — no composite is known to pass it, but it is not a proof.
    """
    n = _check_int(n)
    if n < 2:
        return False
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    if n < 1_000_000:  # no factor ≤ 997 and n < 997², so n is prime
        return True
    if n < MR_DETERMINISTIC_LIMIT:
        return all(_strong_probable_prime(n, a) for a in _MR_BASES)
    if not _strong_probable_prime(n, 2):
        return False
    if math.isqrt(n) ** 2 == n:
        return False
    return _strong_lucas(n)


def _pollard_brent(n: int, rng: random.Random) -> int:
    """A non-trivial factor of the odd composite n (Brent's cycle finding, batched gcds)."""
    while True:
        y, c, m = rng.randrange(1, n), rng.randrange(1, n), 128
        g = r = q = 1
        x = ys = y
        while g == 1:
            x = y
            for _ in range(r):
                y = (y * y + c) % n
            k = 0
            while k < r and g == 1:
                ys = y
                for _ in range(min(m, r - k)):
                    y = (y * y + c) % n
                    q = q * abs(x - y) % n
                g = math.gcd(q, n)
                k += m
            r *= 2
        if g == n:  # batched product overshot: redo one step at a time
            g = 1
            while g == 1:
                ys = (ys * ys + c) % n
                g = math.gcd(abs(x - ys), n)
        if g != n:
            return g


def factorize(n: int) -> dict[int, int]:
    """Prime factorisation ``{p: e}`` of an integer n ≥ 1, primes ascending (``factorize(1) == {}``)."""
    n = _check_int(n, minimum=1)
    out: dict[int, int] = {}
    for p in _SMALL_PRIMES:
        if p * p > n:
            break
        while n % p == 0:
            out[p] = out.get(p, 0) + 1
            n //= p
    rng = random.Random(0x5EED)  # fixed seed: factorisations are reproducible
    stack = [n] if n > 1 else []
    while stack:
        m = stack.pop()
        if m == 1:
            continue
        if is_prime(m):
            out[m] = out.get(m, 0) + 1
            continue
        r = math.isqrt(m)
        if r * r == m:  # rho is slow on perfect squares of primes; split them directly
            stack += [r, r]
            continue
        f = _pollard_brent(m, rng)
        stack += [f, m // f]
    return dict(sorted(out.items()))


def smallest_prime_factors(n: int) -> np.ndarray:
    """``spf[k]`` = smallest prime factor of k for 0 ≤ k ≤ n (spf[0] = 0, spf[1] = 1), int64 array."""
    n = _check_int(n, minimum=0)
    spf = np.arange(n + 1, dtype=np.int64)
    for p in _plain_sieve(math.isqrt(n)).tolist():
        block = spf[p * p :: p]
        mask = block == np.arange(p * p, n + 1, p)  # still "its own factor": not yet marked
        block[mask] = p
    return spf
