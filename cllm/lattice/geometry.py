"""Token geometry: Ulam square spiral, golden-angle (Vogel) spiral, 12-fold clock lattice, and the
``CrystallineToken`` record, each with a vectorised numpy form for whole vocabularies.

Indexing: geometry is defined for a 1-based index n ≥ 1; a token id t uses n = t + 1 (so token 0 is
the centre of the Ulam spiral and maps to the first prime, 2).

* Ulam spiral: 1 at (0, 0), 2 at (1, 0), then counter-clockwise: 3 (1, 1), 4 (0, 1), 5 (−1, 1),
  6 (−1, 0), 7 (−1, −1), 8 (0, −1), 9 (1, −1), 10 (2, −1), … Ring k ≥ 1 holds (2k−1)²+1 … (2k+1)².
  Exact integer arithmetic (``math.isqrt``); ``ulam_index`` is the inverse.
* Vogel spiral: point n at radius c·√n and angle n·γ, γ = π(3 − √5) the golden angle (floats).
* Clock lattice: m ↦ ring m // 12, hour m mod 12, drawn at radius ring + 1 and angle hour·30°
  clockwise from 12 o'clock. Every prime > 3 sits on hour 1, 5, 7 or 11.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from cllm.errors import CLLMError
from cllm.lattice.primes import factorize, nth_prime, sieve, smallest_prime_factors

GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))  # radians, ≈ 2.399963; exact digits: exact.py
_VEC_MAX = 2**52  # vectorised forms use int64/float64; float sqrt is then corrected exactly


def _index(n, name: str = "n", minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < minimum:
        raise CLLMError(f"{name} must be an integer ≥ {minimum}, got {n!r}")
    return int(n)


def ulam_coords(n: int) -> tuple[int, int]:
    """(x, y) of n ≥ 1 on the square Ulam spiral (exact for any size of n)."""
    n = _index(n)
    if n == 1:
        return (0, 0)
    k = (math.isqrt(n - 1) + 1) // 2  # ring
    m = n - (2 * k - 1) ** 2  # 1 … 8k along the ring
    if m <= 2 * k:
        return (k, m - k)
    if m <= 4 * k:
        return (3 * k - m, k)
    if m <= 6 * k:
        return (-k, 5 * k - m)
    return (m - 7 * k, -k)


def ulam_index(x: int, y: int) -> int:
    """Inverse of ``ulam_coords``: the n ≥ 1 sitting at integer point (x, y)."""
    for name, val in (("x", x), ("y", y)):
        if isinstance(val, bool) or not isinstance(val, numbers.Integral):
            raise CLLMError(f"{name} must be an integer, got {val!r}")
    x, y = int(x), int(y)
    k = max(abs(x), abs(y))
    if k == 0:
        return 1
    base = (2 * k - 1) ** 2
    if x == k and y > -k:
        return base + y + k
    if y == k:
        return base + 3 * k - x
    if x == -k:
        return base + 5 * k - y
    return base + 7 * k + x


def _isqrt_vec(v: np.ndarray) -> np.ndarray:
    """Exact floor(√v) for int64 0 ≤ v < 2**52: float estimate, then integer correction."""
    s = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    s -= (s * s > v).astype(np.int64)
    s += ((s + 1) * (s + 1) <= v).astype(np.int64)
    return s


def _as_index_array(n, minimum: int = 1) -> np.ndarray:
    a = np.asarray(n)
    if a.dtype.kind not in "iu":
        raise CLLMError("indices must be an integer array")
    a = a.astype(np.int64)
    if a.size and (a.min() < minimum or a.max() >= _VEC_MAX):
        raise CLLMError(f"indices must lie in [{minimum}, 2**52)")
    return a


def ulam_coords_vec(n) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``ulam_coords``: int arrays (x, y) for an int array of n ≥ 1."""
    n = _as_index_array(n)
    k = (_isqrt_vec(np.maximum(n - 1, 0)) + 1) // 2
    m = n - (2 * k - 1) ** 2
    x = np.select([k == 0, m <= 2 * k, m <= 4 * k, m <= 6 * k], [0, k, 3 * k - m, -k], m - 7 * k)
    y = np.select([k == 0, m <= 2 * k, m <= 4 * k, m <= 6 * k], [0, m - k, k, 5 * k - m], -k)
    return x, y


def vogel_point(n: int, scale: float = 1.0) -> tuple[float, float]:
    """(x, y) of point n ≥ 0 on the golden-angle spiral: radius scale·√n, angle n·γ."""
    n = _index(n, minimum=0)
    r = scale * math.sqrt(n)
    a = (n * GOLDEN_ANGLE) % (2 * math.pi)
    return (r * math.cos(a), r * math.sin(a))


def vogel_points_vec(n, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``vogel_point``: float arrays (x, y)."""
    n = _as_index_array(n, minimum=0)
    r = scale * np.sqrt(n.astype(np.float64))
    a = np.mod(n.astype(np.float64) * GOLDEN_ANGLE, 2 * math.pi)
    return r * np.cos(a), r * np.sin(a)


def clock_position(m: int) -> tuple[int, int, float, float]:
    """12-fold clock lattice: (ring, hour, x, y) for m ≥ 0; ring = m // 12, hour = m mod 12,
    drawn at radius ring + 1, angle hour·30° clockwise from 12 o'clock (hour 0 points up)."""
    m = _index(m, "m", minimum=0)
    ring, hour = divmod(m, 12)
    a = 2 * math.pi * hour / 12
    return (ring, hour, (ring + 1) * math.sin(a), (ring + 1) * math.cos(a))


def clock_positions_vec(m):
    """Vectorised ``clock_position``: (ring, hour, x, y) arrays."""
    m = _as_index_array(m, minimum=0)
    ring, hour = np.divmod(m, 12)
    a = 2 * math.pi * hour / 12
    return ring, hour, (ring + 1) * np.sin(a), (ring + 1) * np.cos(a)


@dataclass(frozen=True)
class CrystallineToken:
    """Everything ``cllm.lattice`` attaches to one token id (index n = token_id + 1).

    prime: the n-th prime; factors: prime factorisation {p: e} of n; ulam: Ulam (x, y) of n;
    vogel: golden-angle spiral (x, y) of n; clock: (ring, hour) of the token id on the 12-fold
    clock; prime_hour: prime mod 12 (1, 5, 7 or 11 for every prime > 3).
    """

    token_id: int
    prime: int
    factors: dict
    ulam: tuple[int, int]
    vogel: tuple[float, float]
    clock: tuple[int, int]
    prime_hour: int

    @classmethod
    def from_id(cls, token_id: int) -> "CrystallineToken":
        t = _index(token_id, "token_id", minimum=0)
        n = t + 1
        p = nth_prime(n)
        ring, hour, _, _ = clock_position(t)
        return cls(t, p, factorize(n), ulam_coords(n), vogel_point(n), (ring, hour), p % 12)


def crystalline_table(vocab_size: int) -> dict[str, np.ndarray]:
    """Vectorised ``CrystallineToken`` data for token ids 0 … vocab_size − 1 (arrays of that length).

    Keys: token_id, prime, prime_hour, ulam_x, ulam_y, vogel_x, vogel_y, clock_ring, clock_hour,
    clock_x, clock_y, omega (distinct prime factors of n), big_omega (with multiplicity),
    largest_factor (1 for n = 1). Factor statistics come from one smallest-prime-factor sieve.
    """
    v = _index(vocab_size, "vocab_size", minimum=0)
    ids = np.arange(v, dtype=np.int64)
    n = ids + 1
    if v == 0:
        primes = np.zeros(0, dtype=np.int64)
    else:
        ln = math.log(max(v, 6))
        primes = sieve(int(max(v, 6) * (ln + math.log(ln))) + 3)[:v]  # Rosser: p_v < v(ln v + ln ln v)
    ux, uy = ulam_coords_vec(n) if v else (ids, ids)
    vx, vy = vogel_points_vec(n)
    ring, hour, cx, cy = clock_positions_vec(ids)
    spf = smallest_prime_factors(v)
    rest = n.copy()
    omega = np.zeros(v, dtype=np.int64)
    big = np.zeros(v, dtype=np.int64)
    largest = np.ones(v, dtype=np.int64)
    last = np.zeros(v, dtype=np.int64)
    while True:  # peel one smallest prime factor per pass; at most log2(v) passes
        act = rest > 1
        if not act.any():
            break
        p = spf[rest[act]]
        big[act] += 1
        omega[act] += (p != last[act]).astype(np.int64)
        last[act] = p
        largest[act] = np.maximum(largest[act], p)
        rest[act] //= p
    return {"token_id": ids, "prime": primes, "prime_hour": primes % 12, "ulam_x": ux, "ulam_y": uy,
            "vogel_x": vx, "vogel_y": vy, "clock_ring": ring, "clock_hour": hour, "clock_x": cx,
            "clock_y": cy, "omega": omega, "big_omega": big, "largest_factor": largest}
