"""Exact LLL: reduction conditions, lattice preservation, unimodularity, rank, degenerate inputs."""

from fractions import Fraction

import flint
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cllm.errors import CLLMError
from cllm.lattice.reduction import (gram_matrix, gram_schmidt, integral_gram_schmidt, integral_lll,
                                    is_lll_reduced, lll)


def bases(max_rows=7, max_cols=7, bits=20):
    """Random integer matrices, any shape, entries up to ``bits`` bits, often with dependencies."""
    def build(shape):
        m, n = shape
        ent = st.integers(-(2**bits), 2**bits) | st.integers(-3, 3)
        return st.lists(st.lists(ent, min_size=n, max_size=n), min_size=m, max_size=m)
    return st.tuples(st.integers(1, max_rows), st.integers(1, max_cols)).flatmap(build)


def check_conditions_fraction(R, delta):
    """Independent check of the LLL conditions with the Fraction Gram–Schmidt."""
    bstar, mu = gram_schmidt(R)
    norms = [sum(x * x for x in v) for v in bstar]
    assert all(nv > 0 for nv in norms)
    for i in range(len(R)):
        for j in range(i):
            assert abs(mu[i][j]) <= Fraction(1, 2)
        if i:
            assert delta * norms[i - 1] <= norms[i] + mu[i][i - 1] ** 2 * norms[i - 1]


@settings(max_examples=250, deadline=None)
@given(bases(), st.sampled_from([Fraction(99, 100), Fraction(3, 4), Fraction(51, 100), Fraction(1)]))
def test_lll_properties(B, delta):
    res = lll(B, delta)
    R, U = res
    m, n = len(B), len(B[0])
    r = res.rank
    assert r == flint.fmpz_mat(B).rank()
    assert len(R) == r and all(any(v) for v in R)
    # U unimodular and U·B = [R; 0]
    Um = flint.fmpz_mat(U)
    assert Um.nrows() == m and Um.ncols() == m and abs(Um.det()) == 1
    assert Um * flint.fmpz_mat(B) == flint.fmpz_mat(R + [[0] * n] * (m - r))
    assert all(not any(row) for row in (flint.fmpz_mat(res.kernel) * flint.fmpz_mat(B)).tolist()) if res.kernel else True
    # exact conditions, two independent ways
    assert is_lll_reduced(R, delta)
    check_conditions_fraction(R, delta)
    # same lattice: identical canonical Hermite normal forms (FLINT, independent of LLL)
    assert hnf_rows(R, n) == hnf_rows(B, n)
    # Gram determinant (covolume²) preserved
    H = hnf_rows(B, n)
    assert int(flint.fmpz_mat(gram_matrix(R)).det() if R else 1) == int(flint.fmpz_mat(gram_matrix(H)).det() if H else 1)


def hnf_rows(M, n):
    if not M:
        return []
    return [row for row in flint.fmpz_mat(M).hnf().tolist() if any(row)]


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 9), st.data())
def test_square_determinant_preserved(n, data):
    B = data.draw(st.lists(st.lists(st.integers(-50, 50), min_size=n, max_size=n), min_size=n, max_size=n))
    det = flint.fmpz_mat(B).det()
    R, U = lll(B)
    if det != 0:
        assert len(R) == n and abs(flint.fmpz_mat(R).det()) == abs(det)
    else:
        assert len(R) < n


def test_classic_example():
    R, U = lll([[1, 1, 1], [-1, 0, 2], [3, 5, 6]], Fraction(3, 4))
    assert R == [[0, 1, 0], [1, 0, 1], [-1, 0, 2]]  # the textbook (Wikipedia) answer
    assert flint.fmpz_mat(U) * flint.fmpz_mat([[1, 1, 1], [-1, 0, 2], [3, 5, 6]]) == flint.fmpz_mat(R)


def test_degenerate_inputs():
    assert lll([]) == ([], []) and lll([]).rank == 0
    res = lll([[0, 0, 0]])
    assert res.basis == [] and res.rank == 0 and res.kernel == [[1]]
    assert lll([[7]]) == ([[7]], [[1]])
    assert lll([[-7]]).basis in ([[7]], [[-7]])
    res = lll([[1, 2, 3], [2, 4, 6], [0, 0, 0], [3, 6, 9]])
    assert res.rank == 1 and res.basis in ([[1, 2, 3]], [[-1, -2, -3]]) and len(res.kernel) == 3
    res = lll([[1, 0], [0, 1], [1, 1]])  # more rows than columns
    assert res.rank == 2 and is_lll_reduced(res.basis)
    assert lll(np.array([[3, 1], [1, 3]])).rank == 2
    for bad in ([[1, 2], [3]], [[1.5, 2]], "abc", [[1, "x"]], 5):
        with pytest.raises(CLLMError):
            lll(bad)
    for bad_delta in (Fraction(1, 4), 0, 1.5, "x"):
        with pytest.raises(CLLMError):
            lll([[1, 0], [0, 1]], bad_delta)


def test_is_lll_reduced_and_gram_schmidt():
    assert is_lll_reduced([])
    assert not is_lll_reduced([[1, 0], [0, 0]])
    assert not is_lll_reduced([[1, 0], [5, 1]])  # μ = 5
    assert not is_lll_reduced([[10, 0], [0, 1]])  # Lovász fails
    assert is_lll_reduced([[1, 0], [0, 1]], 1)
    bstar, mu = gram_schmidt([[1, 1], [1, 0], [2, 2]])
    assert bstar[2] == [0, 0] and mu[1][0] == Fraction(1, 2)
    assert integral_gram_schmidt([[1, 1], [2, 2]]) is None
    d, lam = integral_gram_schmidt([[3, 1], [1, 3]])
    assert d == [1, 10, 64] and lam == [[], [6]]


@settings(max_examples=40, deadline=None)
@given(bases(max_rows=6, max_cols=8, bits=12))
def test_pure_integral_lll_matches_conditions(B):
    """The exact pass alone (no FLINT) also produces a reduced basis of the same lattice."""
    rows = lll(B).basis  # independent rows spanning the lattice
    if not rows:
        return
    # scramble with a unimodular upper-triangular matrix so there is work to do
    W = [list(v) for v in rows]
    for i in range(len(W) - 1):
        W[i] = [a + 3 * b for a, b in zip(W[i], W[i + 1])]
    U = [[int(i == j) for j in range(len(W))] for i in range(len(W))]
    d, lam = integral_gram_schmidt(W)
    W0 = [list(v) for v in W]
    integral_lll(W, U, d, lam, Fraction(99, 100))
    assert is_lll_reduced(W)
    assert flint.fmpz_mat(U) * flint.fmpz_mat(W0) == flint.fmpz_mat(W)
    assert (d, lam) == integral_gram_schmidt(W)  # the in-place updates stayed exact
