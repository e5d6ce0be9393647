"""Ulam / Vogel / clock geometry and CrystallineToken, scalar against vectorised forms."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cllm.errors import CLLMError
from cllm.lattice.geometry import (GOLDEN_ANGLE, CrystallineToken, clock_position, clock_positions_vec,
                                   crystalline_table, ulam_coords, ulam_coords_vec, ulam_index,
                                   vogel_point, vogel_points_vec)
from cllm.lattice.primes import factorize, is_prime, nth_prime


def test_ulam_first_points():
    expect = [(0, 0), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (2, -1),
              (2, 0), (2, 1), (2, 2), (1, 2), (0, 2), (-1, 2), (-2, 2), (-2, 1), (-2, 0), (-2, -1),
              (-2, -2), (-1, -2), (0, -2), (1, -2), (2, -2), (3, -2)]
    assert [ulam_coords(n) for n in range(1, 27)] == expect


def test_ulam_bijection_and_steps():
    seen = set()
    prev = ulam_coords(1)
    for n in range(2, 5000):
        p = ulam_coords(n)
        assert abs(p[0] - prev[0]) + abs(p[1] - prev[1]) == 1  # consecutive numbers are neighbours
        assert ulam_index(*p) == n
        seen.add(p)
        prev = p
    assert len(seen) == 4998
    # every point of the square [-10, 10]² is hit exactly once by 1 … 441
    assert sorted(ulam_coords(n) for n in range(1, 442)) == sorted((x, y) for x in range(-10, 11) for y in range(-10, 11))
    # odd squares on the diagonal below-right
    assert all(ulam_coords((2 * k + 1) ** 2) == (k, -k) for k in range(50))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**40))
def test_ulam_roundtrip_big(n):
    assert ulam_index(*ulam_coords(n)) == n


def test_ulam_vectorised_matches_scalar():
    n = np.concatenate([np.arange(1, 3000), np.array([2**52 - 1, 2**51 + 12345, (2 * 10**7 + 1) ** 2])])
    x, y = ulam_coords_vec(n)
    assert list(zip(x.tolist(), y.tolist())) == [ulam_coords(int(k)) for k in n]
    with pytest.raises(CLLMError):
        ulam_coords_vec(np.array([0]))
    with pytest.raises(CLLMError):
        ulam_coords(0)


def test_vogel():
    assert vogel_point(0) == (0.0, 0.0)
    x, y = vogel_point(4, scale=2.0)
    assert math.isclose(math.hypot(x, y), 4.0)
    assert math.isclose(GOLDEN_ANGLE, 2.399963229728653)
    vx, vy = vogel_points_vec(np.arange(100))
    for k in range(100):
        assert np.allclose((vx[k], vy[k]), vogel_point(k), atol=1e-12)


def test_clock():
    assert clock_position(0)[:2] == (0, 0) and np.allclose(clock_position(0)[2:], (0, 1))
    assert clock_position(15)[:2] == (1, 3) and np.allclose(clock_position(15)[2:], (2, 0), atol=1e-12)
    ring, hour, cx, cy = clock_positions_vec(np.arange(300))
    for m in range(300):
        r, h, x, y = clock_position(m)
        assert (ring[m], hour[m]) == (r, h) and np.allclose((cx[m], cy[m]), (x, y))
    # primes > 3 lie on the four spokes 1, 5, 7, 11
    assert {p % 12 for p in range(5, 10000) if is_prime(p)} == {1, 5, 7, 11}


def test_crystalline_token_and_table():
    t = CrystallineToken.from_id(0)
    assert (t.prime, t.factors, t.ulam, t.clock) == (2, {}, (0, 0), (0, 0))
    t = CrystallineToken.from_id(11)
    assert t.prime == 37 and t.factors == {2: 2, 3: 1} and t.ulam == (2, 1) and t.clock == (0, 11)
    assert t.prime_hour == 1
    tab = crystalline_table(2000)
    assert all(len(a) == 2000 for a in tab.values())
    for tid in (0, 1, 2, 11, 99, 1023, 1999):
        tok = CrystallineToken.from_id(tid)
        assert tab["prime"][tid] == tok.prime == nth_prime(tid + 1)
        assert (tab["ulam_x"][tid], tab["ulam_y"][tid]) == tok.ulam
        assert (tab["clock_ring"][tid], tab["clock_hour"][tid]) == tok.clock
        f = factorize(tid + 1)
        assert tab["omega"][tid] == len(f) and tab["big_omega"][tid] == sum(f.values())
        assert tab["largest_factor"][tid] == max(f, default=1)
    assert crystalline_table(0)["prime"].size == 0
    with pytest.raises(CLLMError):
        CrystallineToken.from_id(-1)
