"""Exact Babai / CVP / SVP / ball enumeration against brute force over rigorously bounded boxes,
known lattices, and the inputs on which fplll/fpylll are known to fail."""

import contextlib
import json
import itertools
import math
import signal
from fractions import Fraction
from pathlib import Path

import flint
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from cllm.errors import CLLMError
from cllm.lattice.bkz import bkz
from cllm.lattice.enumeration import babai, closest_vector, enumerate_ball, shortest_vector
from cllm.lattice.reduction import gram_matrix, gram_schmidt, is_lll_reduced, lll


@contextlib.contextmanager
def time_limit(seconds):
    def handler(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def sqdist(v, t):
    return sum((Fraction(a) - Fraction(b)) ** 2 for a, b in zip(v, t))


def brute_force_points(B, t, rho2, max_box=60000):
    """All coefficient vectors x (w.r.t. independent rows R of the lattice) whose point can lie within
    distance √rho2 of t, by a rigorous box: x = v·R⁺ and ‖R⁺ column i‖² = (G⁻¹)ᵢᵢ, so
    |xᵢ − (t·R⁺)ᵢ| ≤ √(rho2·(G⁻¹)ᵢᵢ). Independent rows come from FLINT's HNF + LLL (not from cllm)."""
    R = [row for row in flint.fmpz_mat(B).hnf().tolist() if any(row)]
    if R:  # any basis gives a rigorous box; FLINT's own LLL keeps it small
        R = flint.fmpz_mat(R).lll().tolist()
    R = [[int(a) for a in row] for row in R]
    r = len(R)
    if r == 0:
        return R, np.zeros((1, 0), dtype=np.int64)
    Ginv = flint.fmpq_mat(flint.fmpz_mat(gram_matrix(R))).inv()
    Rt = flint.fmpq_mat(flint.fmpz_mat(R)).transpose()
    xt = (flint.fmpq_mat([[flint.fmpq(q.numerator, q.denominator) for q in map(Fraction, t)]]) * Rt * Ginv)
    ranges = []
    for i in range(r):
        q = Fraction(rho2) * Fraction(int(Ginv[i, i].p), int(Ginv[i, i].q))
        b = math.isqrt(math.ceil(q)) + 1  # ≥ √q
        c = Fraction(int(xt[0, i].p), int(xt[0, i].q))
        ranges.append(range(math.floor(c - b), math.ceil(c + b) + 1))
    size = math.prod(len(rg) for rg in ranges)
    assume(size <= max_box)
    X = np.array(list(itertools.product(*ranges)), dtype=np.int64).reshape(-1, r)
    return R, X


def brute_cvp(B, t):
    n = len(B[0])
    rho2 = min([sqdist([0] * n, t)] + [sqdist(row, t) for row in B])
    R, X = brute_force_points(B, t, rho2)
    V = X @ np.array(R, dtype=np.int64) if R else np.zeros((1, n), dtype=np.int64)
    D = math.lcm(*(Fraction(q).denominator for q in t))
    T = np.array([int(Fraction(q) * D) for q in t], dtype=np.int64)
    d2 = ((D * V - T) ** 2).sum(axis=1)
    return Fraction(int(d2.min()), D * D)


def brute_svp(B):
    rho2 = min(sum(a * a for a in row) for row in B if any(row))
    R, X = brute_force_points(B, [0] * len(B[0]), rho2)
    X = X[np.any(X != 0, axis=1)]
    V = X @ np.array(R, dtype=np.int64)
    return int((V**2).sum(axis=1).min())


def small_bases(max_dim=6, lo=-12, hi=12):
    def build(shape):
        m, n = shape
        return st.lists(st.lists(st.integers(lo, hi), min_size=n, max_size=n), min_size=m, max_size=m)
    return st.tuples(st.integers(1, max_dim), st.integers(1, max_dim)).flatmap(build)


rationals = st.fractions(min_value=-40, max_value=40, max_denominator=4)


@settings(max_examples=120, deadline=None)
@given(small_bases(), st.data())
def test_cvp_equals_brute_force(B, data):
    assume(any(any(r) for r in B))
    t = data.draw(st.lists(rationals, min_size=len(B[0]), max_size=len(B[0])))
    v = closest_vector(B, t)
    # v is in the lattice: solvable in integers (HNF membership check through FLINT)
    H = flint.fmpz_mat(B).hnf()
    assert flint.fmpz_mat(B + [v]).hnf() == flint.fmpz_mat(B + [[0] * len(v)]).hnf() or H.rank() == 0
    assert sqdist(v, t) == brute_cvp(B, t)


@settings(max_examples=120, deadline=None)
@given(small_bases())
def test_svp_equals_brute_force(B):
    assume(any(any(r) for r in B))
    v = shortest_vector(B)
    assert any(v)
    assert flint.fmpz_mat(B + [v]).hnf() == flint.fmpz_mat(B + [[0] * len(v)]).hnf()
    assert sum(a * a for a in v) == brute_svp(B)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 6), st.data())
def test_babai_bound(n, data):
    B = data.draw(st.lists(st.lists(st.integers(-30, 30), min_size=n, max_size=n), min_size=n, max_size=n))
    assume(flint.fmpz_mat(B).det() != 0)
    t = data.draw(st.lists(rationals, min_size=n, max_size=n))
    w = babai(B, t)
    bstar, _ = gram_schmidt(B)
    assert sqdist(w, t) <= Fraction(1, 4) * sum(sum(x * x for x in v) for v in bstar)
    assert flint.fmpz_mat(B + [w]).hnf() == flint.fmpz_mat(B + [[0] * n]).hnf()


@settings(max_examples=60, deadline=None)
@given(small_bases(max_dim=4, lo=-6, hi=6), st.data())
def test_enumerate_ball_brute_force(B, data):
    assume(any(any(r) for r in B))
    n = len(B[0])
    c = data.draw(st.lists(rationals, min_size=n, max_size=n))
    rad2 = data.draw(st.fractions(min_value=0, max_value=60, max_denominator=3))
    pts = enumerate_ball(B, c, rad2, squared=True)
    R, X = brute_force_points(B, c, rad2)
    V = X @ np.array(R, dtype=np.int64) if R else np.zeros((1, n), dtype=np.int64)
    expect = sorted({tuple(int(a) for a in v) for v in V if sqdist(v, c) <= rad2})
    assert sorted(tuple(v) for v in pts) == expect
    assert len(pts) == len(set(map(tuple, pts)))


def z_n(n):
    return [[int(i == j) for j in range(n)] for i in range(n)]


def d_n(n):  # {x ∈ Zⁿ : Σx even}, given by a generating set with dependencies (exercises rank)
    gens = [[int(k in (i, j)) * (1 if k == i else s) for k in range(n)]
            for i in range(n) for j in range(i + 1, n) for s in (1, -1)]
    return gens


def a_n(n):  # {x ∈ Z^{n+1} : Σx = 0}
    return [[1 if k == i else -1 if k == i + 1 else 0 for k in range(n + 1)] for i in range(n)]


def e8_doubled():  # 2·E8 = 2·D8 ∪ (2·D8 + 1): integral, minimal norm² 8
    return [[2 * x for x in v] for v in d_n(8)[:20]] + [[1] * 8, [2, 2] + [0] * 6]


@pytest.mark.parametrize("name,basis,lam2,kiss", [
    *[(f"Z{n}", z_n(n), 1, 2 * n) for n in (1, 2, 5, 8)],
    *[(f"D{n}", d_n(n), 2, 2 * n * (n - 1)) for n in (3, 4, 6, 8)],
    *[(f"A{n}", a_n(n), 2, n * (n + 1)) for n in (1, 2, 5, 8)],
    ("E8", e8_doubled(), 8, 240),
])
def test_known_lattices(name, basis, lam2, kiss):
    v = shortest_vector(basis)
    assert sum(a * a for a in v) == lam2
    n = len(basis[0])
    ball = enumerate_ball(basis, [0] * n, lam2, squared=True)
    assert ball[0] == [0] * n and len(ball) - 1 == kiss
    assert all(sum(a * a for a in p) == lam2 for p in ball[1:])
    if name == "E8":
        assert lll(basis).rank == 8 and abs(flint.fmpz_mat(lll(basis).basis).det()) == 2**8


def test_fpylll_issue_235_terminates_and_is_closest():
    case = json.loads((Path(__file__).parent / "data" / "fpylll_issue_235.json").read_text())
    A, t = case["basis"], case["target"]
    with time_limit(20):
        v = closest_vector(A, t)
        d2 = sqdist(v, t)
        assert d2 == case["closest_distance_squared"]
        assert enumerate_ball(A, t, 3, squared=True) == []  # nothing strictly closer
        assert flint.fmpz_mat([list(r) for r in A] + [v]).hnf() == flint.fmpz_mat([list(r) for r in A] + [[0] * 16]).hnf()
        # a unimodularly scrambled basis of the same lattice gives the same canonical answer
        S = [list(r) for r in A]
        for i in range(15):
            S[i] = [a + b for a, b in zip(S[i], S[i + 1])]
        assert closest_vector(S, t) == v


def test_fplll_known_failures():
    assert closest_vector([[1073741824, 0], [0, 1]], [500000000, 0]) == [0, 0]  # fplll #482
    assert closest_vector([[10**12, 0], [0, 1]], [4 * 10**11, 0]) == [0, 0]
    assert closest_vector([[3, -2]], [2, -1]) == [3, -2]  # fplll #496 (rank 1 in Z²)
    # fpylll #124: basis not LLL-reduced; the closest point is the row (462, 533, 231, 443) or better
    A = [[629, 303, 597, 980], [462, 533, 231, 443], [912, 451, 926, 105], [162, 742, 611, 734]]
    v = closest_vector(A, (123, 456, 345, 578))
    assert sqdist(v, (123, 456, 345, 578)) <= 152071
    assert sqdist(v, (123, 456, 345, 578)) == brute_cvp(A, (123, 456, 345, 578))


def test_classic_example_svp_cvp():
    B = [[1, 1, 1], [-1, 0, 2], [3, 5, 6]]
    assert shortest_vector(B) == [0, -1, 0]
    assert closest_vector(B, [Fraction(1, 2), 7, -3]) in enumerate_ball(B, [Fraction(1, 2), 7, -3], 2)


def test_degenerate_inputs():
    assert closest_vector([[0, 0]], [3, 4]) == [0, 0]
    assert closest_vector([], [1, 2]) == [0, 0]
    assert babai([[1, 2], [2, 4]], [3, 7]) in ([3, 6], [4, 8])
    assert shortest_vector([[5]]) == [-5]
    assert shortest_vector([[2, 0], [4, 0], [0, 3]]) == [-2, 0]
    assert enumerate_ball([[1]], [0], 0) == [[0]]
    assert enumerate_ball([[0]], [Fraction(1, 2)], Fraction(1, 2)) == [[0]]
    assert enumerate_ball([[1, 0]], [0, 2], 1) == []  # target far from the span
    with pytest.raises(CLLMError):
        shortest_vector([[0, 0], [0, 0]])
    with pytest.raises(CLLMError):
        shortest_vector([])
    with pytest.raises(CLLMError):
        closest_vector([[1, 0]], [1, 2, 3])
    with pytest.raises(CLLMError):
        enumerate_ball([[1, 0], [0, 1]], [0, 0], -1)
    with pytest.raises(CLLMError):
        enumerate_ball([[1, 0], [0, 1]], [0, 0], 100, limit=1000)
    with pytest.raises(CLLMError):
        closest_vector([[1, 0], [0, 1]], ["a", 1])


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 12), st.integers(2, 6), st.randoms(use_true_random=False))
def test_bkz_properties(n, beta, rnd):
    B = [[rnd.randrange(-2**20, 2**20) for _ in range(n)] for _ in range(n)]
    assume(flint.fmpz_mat(B).det() != 0)
    res = bkz(B, beta)
    R, U = res
    assert is_lll_reduced(R)
    assert flint.fmpz_mat(U) * flint.fmpz_mat(B) == flint.fmpz_mat(R) and abs(flint.fmpz_mat(U).det()) == 1
    assert sum(a * a for a in R[0]) <= sum(a * a for a in lll(B).basis[0])


def test_bkz_full_block_finds_near_shortest_and_degenerate():
    B = [[1, 1, 1], [-1, 0, 2], [3, 5, 6]]
    assert bkz(B, 3).basis[0] in ([0, 1, 0], [0, -1, 0])
    import random
    rnd = random.Random(5)
    B = [[rnd.randrange(2**25)] + [int(i == j) for j in range(14)] for i in range(14)]
    R = bkz(B, 14).basis
    lam2 = sum(a * a for a in shortest_vector(B))
    assert Fraction(99, 100) * sum(a * a for a in R[0]) <= lam2
    assert bkz([], 5) == ([], [])
    assert bkz([[0, 0], [1, 1]], 5).rank == 1
    with pytest.raises(CLLMError):
        bkz(B, 0)


@settings(max_examples=30, deadline=None)
@given(small_bases(max_dim=5), st.sampled_from([1, 2**70, 2**600]))
def test_scaling_huge_entries(B, s):
    """Entries far beyond double range (2**600) go through the rescaled float path; answers scale."""
    assume(any(any(r) for r in B))
    v = shortest_vector(B)
    assert shortest_vector([[s * a for a in r] for r in B]) == [s * a for a in v]
    t = [Fraction(7, 3)] * len(B[0])
    w = closest_vector(B, t)
    assert closest_vector([[s * a for a in r] for r in B], [s * q for q in t]) == [s * a for a in w]


def test_huge_targets_and_radii():
    """Targets far beyond double range are recentred exactly on their Babai point first."""
    assert closest_vector([[1, 0], [0, 1]], [2**3000 + Fraction(1, 3), 5]) == [2**3000, 5]
    far = 10**400
    v = closest_vector([[3, 1], [1, 3]], [far + 1, 7])
    near = closest_vector([[3, 1], [1, 3]], [far % 8 + 1, 7])  # 8·Z² lies in the lattice
    assert [v[0] - (far - far % 8), v[1]] == near
    assert len(enumerate_ball([[3, 1], [1, 3]], [far + 1, 7], 10)) == len(enumerate_ball([[3, 1], [1, 3]], [far % 8 + 1, 7], 10))
    with pytest.raises(CLLMError):
        enumerate_ball([[1, 0], [0, 1]], [0, 0], 10**400)
