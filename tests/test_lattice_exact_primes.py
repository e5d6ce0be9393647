"""Exact arithmetic (mpmath/Fraction helpers) and primes against known tables and independent oracles."""

from fractions import Fraction

import flint
import numpy as np
import pytest
import sympy
from hypothesis import given, settings, strategies as st

from cllm.errors import CLLMError
from cllm.lattice import exact
from cllm.lattice.primes import (factorize, is_prime, nth_prime, prime_pi, primes_in_range, sieve,
                                 smallest_prime_factors)

PI_50 = "3.1415926535897932384626433832795028841971693993751"
E_50 = "2.7182818284590452353602874713526624977572470937000"
PHI_50 = "1.6180339887498948482045868343656381177203091798058"


def test_constants_known_digits():
    assert exact.constant("pi", 50) == PI_50
    assert exact.constant("e", 50) == E_50
    assert exact.constant("phi", 50) == PHI_50
    assert exact.to_str(exact.sqrt(2, 30), 30) == "1.41421356237309504880168872421"


def test_constants_many_digits_match_flint_arb():
    ctx = flint.ctx
    old = ctx.prec
    try:
        ctx.prec = 3400  # bits, > 1000 digits
        for ours, theirs in [(exact.pi(1000), flint.arb.pi()), (exact.e(1000), flint.arb(1).exp()),
                             (exact.ln(10, 1000), flint.arb(10).log())]:
            assert exact.to_str(ours, 1000)[:990] == theirs.str(1000, radius=False)[:990]
    finally:
        ctx.prec = old


def test_functions_and_errors():
    assert exact.to_str(exact.exp(1, 40), 40) == exact.to_str(exact.e(40), 40)
    assert exact.to_str(exact.ln(exact.exp(Fraction(1, 3), 60), 60), 50).startswith("0.3333333333333333")
    assert exact.as_fraction("1/3") == Fraction(1, 3)
    assert exact.as_fraction(0.5) == Fraction(1, 2)
    assert exact.as_fraction(np.int64(7)) == 7
    for bad in ["abc", float("nan"), None, True]:
        with pytest.raises(CLLMError):
            exact.as_fraction(bad)
    with pytest.raises(CLLMError):
        exact.sqrt(-1)
    with pytest.raises(CLLMError):
        exact.ln(0)
    with pytest.raises(CLLMError):
        exact.pi(0)
    with pytest.raises(CLLMError):
        exact.constant("tau")


PI_TABLE = [4, 25, 168, 1229, 9592, 78498, 664579, 5761455, 50847534, 455052511, 4118054813]


def test_prime_pi_powers_of_ten():
    for k, val in enumerate(PI_TABLE, start=1):
        assert prime_pi(10**k) == val


def test_sieve_counts_and_segments():
    assert sieve(30).tolist() == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert sieve(1).size == 0 and sieve(2).tolist() == [2]
    assert sieve(10**7).size == 664579
    # segmented path (beyond the plain-sieve limit) agrees with sympy on a window
    window = primes_in_range(10**9, 10**9 + 3000).tolist()
    assert window == list(sympy.primerange(10**9, 10**9 + 3001))
    assert primes_in_range(0, 10).tolist() == [2, 3, 5, 7]
    assert primes_in_range(20, 10).size == 0


def test_nth_prime_table():
    assert [nth_prime(k) for k in range(1, 11)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert nth_prime(10**6) == 15485863
    assert nth_prime(10**7) == 179424673
    assert nth_prime(10**8) == 2038074743  # Dusart window + Lucy prime counting path
    with pytest.raises(CLLMError):
        nth_prime(0)


def test_is_prime_against_sympy_small_range():
    flags = [is_prime(n) for n in range(-5, 20000)]
    assert flags == [sympy.isprime(n) for n in range(-5, 20000)]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_is_prime_64bit_matches_flint(n):
    assert is_prime(n) == flint.fmpz(n).is_prime()


def test_is_prime_hard_cases():
    # strong pseudoprimes to several bases, Carmichael numbers, and a Arnault-style composite
    composites = [3215031751, 2152302898747, 3474749660383, 341550071728321, 3825123056546413051,
                  318665857834031151167461, 3317044064679887385961981, 561, 41041, 825265]
    assert not any(is_prime(c) for c in composites)
    primes = [2**61 - 1, 2**89 - 1, 2**127 - 1, 2**64 - 59, 10**30 + 57]
    assert all(is_prime(p) for p in primes)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=2, max_value=10**40))
def test_is_prime_beyond_64bit_matches_flint(n):
    assert is_prime(n) == flint.fmpz(n).is_prime()


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=10**18))
def test_factorize_roundtrip(n):
    f = factorize(n)
    prod = 1
    for p, e in f.items():
        assert is_prime(p) and e >= 1
        prod *= p**e
    assert prod == n
    assert list(f) == sorted(f)


def test_factorize_known():
    assert factorize(1) == {}
    assert factorize(2**10 * 3**5 * 1000003) == {2: 10, 3: 5, 1000003: 1}
    assert factorize(2**67 - 1) == {193707721: 1, 761838257287: 1}
    assert factorize(1000003**2) == {1000003: 2}
    with pytest.raises(CLLMError):
        factorize(0)
    with pytest.raises(CLLMError):
        factorize(2.5)


def test_smallest_prime_factors():
    spf = smallest_prime_factors(1000)
    for k in range(2, 1001):
        assert spf[k] == min(factorize(k))
