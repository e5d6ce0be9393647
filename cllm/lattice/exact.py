"""Exact and arbitrary-precision arithmetic, delegated to well-kept libraries.

* big integers: Python ``int`` (unbounded, exact);
* exact rationals: ``fractions.Fraction``;
* arbitrary-precision reals: ``mpmath`` (pi, e, phi, ln, exp, sqrt to any number of digits).

No home-made big-number code lives here: these helpers only pick a working precision with guard
digits, validate input, and convert between representations.
"""

from __future__ import annotations

import numbers
from fractions import Fraction

import mpmath

from cllm.errors import CLLMError

# Extra decimal digits carried while computing, so that the digits we report are not spoiled by
# rounding in the last places of the working precision.
GUARD_DIGITS = 15


def _check_digits(digits: int) -> int:
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 1:
        raise CLLMError(f"digits must be a positive integer, got {digits!r}")
    return int(digits)


def as_fraction(x) -> Fraction:
    """Exact rational value of ``x``: int, Fraction, decimal/rational string ("1/3", "2.5"), or float.

    A float converts to its exact binary value (``0.1`` becomes 3602879701896397/36028797018963968),
    never to a rounded decimal. Raises CLLMError for anything else (NaN, inf, text that is no number).
    """
    if isinstance(x, bool):
        raise CLLMError(f"expected a number, got {x!r}")
    if isinstance(x, Fraction):
        return x
    if isinstance(x, numbers.Integral):
        return Fraction(int(x))
    if isinstance(x, numbers.Rational):
        return Fraction(int(x.numerator), int(x.denominator))
    if isinstance(x, numbers.Real):
        xf = float(x)
        if xf != xf or xf in (float("inf"), float("-inf")):
            raise CLLMError(f"expected a finite number, got {x!r}")
        return Fraction(xf)
    if isinstance(x, str):
        try:
            return Fraction(x.strip())
        except (ValueError, ZeroDivisionError):
            raise CLLMError(f"not a rational number: {x!r}") from None
    raise CLLMError(f"expected a number, got {type(x).__name__} {x!r}")


def _mpf(x) -> mpmath.mpf:
    """Exact mpmath value of a rational input, rounded only once at the current precision."""
    if isinstance(x, mpmath.mpf):
        return x
    q = as_fraction(x)
    return mpmath.mpf(q.numerator) / q.denominator


def _at(digits: int, f, *args) -> mpmath.mpf:
    digits = _check_digits(digits)
    with mpmath.workdps(digits + GUARD_DIGITS):
        # unary plus re-rounds the result to the working precision inside the context
        return +f(*args)


def pi(digits: int = 50) -> mpmath.mpf:
    """π with at least ``digits`` correct significant digits (an ``mpmath.mpf``)."""
    return _at(digits, lambda: mpmath.pi)


def e(digits: int = 50) -> mpmath.mpf:
    """Euler's number e with at least ``digits`` correct significant digits."""
    return _at(digits, lambda: mpmath.e)


def phi(digits: int = 50) -> mpmath.mpf:
    """The golden ratio (1 + √5)/2 with at least ``digits`` correct significant digits."""
    return _at(digits, lambda: mpmath.phi)


def sqrt(x, digits: int = 50) -> mpmath.mpf:
    """√x for a rational x ≥ 0, to ``digits`` significant digits."""
    if as_fraction(x) < 0:
        raise CLLMError(f"sqrt of a negative number: {x!r}")
    return _at(digits, lambda: mpmath.sqrt(_mpf(x)))


def ln(x, digits: int = 50) -> mpmath.mpf:
    """Natural logarithm of a rational x > 0, to ``digits`` significant digits."""
    if as_fraction(x) <= 0:
        raise CLLMError(f"ln needs a positive argument, got {x!r}")
    return _at(digits, lambda: mpmath.log(_mpf(x)))


def exp(x, digits: int = 50) -> mpmath.mpf:
    """e**x for a rational x, to ``digits`` significant digits."""
    return _at(digits, lambda: mpmath.exp(_mpf(x)))


def to_str(x: mpmath.mpf, digits: int) -> str:
    """Decimal string of ``x`` rounded to ``digits`` significant digits (no exponent for moderate x)."""
    digits = _check_digits(digits)
    with mpmath.workdps(digits + GUARD_DIGITS):
        return mpmath.nstr(x, digits, strip_zeros=False, min_fixed=-10**9, max_fixed=10**9)


def constant(name: str, digits: int = 50) -> str:
    """``constant("pi", 30)`` → "3.14159265358979323846264338328": named constant as a decimal string."""
    table = {"pi": pi, "e": e, "phi": phi}
    if name not in table:
        raise CLLMError(f"unknown constant {name!r}; choose from {', '.join(sorted(table))}")
    return to_str(table[name](digits), digits)
