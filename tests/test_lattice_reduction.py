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


# --- the rigorous float certificate and the exact fallback -------------------------------------

from cllm.lattice import reduction as _red  # noqa: E402
from cllm.lattice.certify import certify_lll, to_float  # noqa: E402


def _counts():
    return dict(_red.path_counts)


def _delta_up(delta):
    return float(delta) * (1.0 + 2.0**-50)


def test_certified_fast_path_is_used_and_exact():
    import random
    rng = random.Random(7)
    for n, bits in ((20, 10), (30, 30)):
        B = [[rng.randrange(2**bits) for _ in range(n)] for _ in range(n)]
        before = _counts()
        R, U = lll(B)
        assert _red.path_counts["certified"] == before["certified"] + 1
        assert _red.path_counts["exact"] == before["exact"]
        check_conditions_fraction(R, Fraction(99, 100))
        assert flint.fmpz_mat(U) * flint.fmpz_mat(B) == flint.fmpz_mat(R)
        R2 = lll(B, transform=False)
        assert R2.basis == R and R2.transform is None and R2.kernel is None and R2.rank == n


@pytest.mark.parametrize("scale", [1, 2**40, 2**200])
def test_exact_ties_fall_back_to_exact_pass(scale):
    """μ = ½ exactly and Lovász with equality: floats cannot decide, the exact pass must."""
    T = [[10 * scale, 0, 0], [5 * scale, 7 * scale, scale]]  # μ₁₀ = 1/2, 3/4·100 = 50 + 25
    assert is_lll_reduced(T, Fraction(3, 4))
    assert not certify_lll(to_float(T), _delta_up(Fraction(3, 4)))[0]
    # FLINT's answer for the classic example has μ₂₁ = 1/2 exactly: the exact pass decides
    B = [[scale * x for x in row] for row in [[1, 1, 1], [-1, 0, 2], [3, 5, 6]]]
    before = _counts()
    res = lll(B, Fraction(3, 4))
    assert _red.path_counts["exact"] == before["exact"] + 1
    assert res.basis == [[scale * x for x in row] for row in [[0, 1, 0], [1, 0, 1], [-1, 0, 2]]]
    check_conditions_fraction(res.basis, Fraction(3, 4))
    assert flint.fmpz_mat(res.transform) * flint.fmpz_mat(B) == flint.fmpz_mat(res.basis)


def test_huge_entries_fall_back_to_exact_pass():
    B = [[2**500, 0], [3, 1]]  # entries beyond the double range of the certificate
    before = _counts()
    R, U = lll(B)
    assert _red.path_counts["exact"] == before["exact"] + 1
    assert R[0] == [3, 1] and is_lll_reduced(R)
    assert flint.fmpz_mat(U) * flint.fmpz_mat(B) == flint.fmpz_mat(R)
    check_conditions_fraction(R, Fraction(99, 100))


@pytest.mark.parametrize("k", [20, 40, 60, 100])
def test_certificate_rejects_near_misses(k):
    """|μ| = ½ + 2⁻ᵏ and Lovász missed by a relative ≈ 2¹⁻ᵏ: never certified."""
    N = 2**k
    assert not certify_lll(to_float([[N, 0], [N // 2 + 1, 1]]), _delta_up(Fraction(1, 2)))[0]
    assert not is_lll_reduced([[N, 0], [N // 2 + 1, 1]], Fraction(1, 2))
    # ‖b₁*‖² = N² − 1 < δ‖b₀‖² with δ = 1, μ = 0
    B = [[N, 0, 0], [0, N - 1, 0]]
    assert not is_lll_reduced(B, 1)
    assert not certify_lll(to_float(B), 1.0)[0]
    assert certify_lll(to_float(B), _delta_up(Fraction(99, 100)))[0] == is_lll_reduced(B, Fraction(99, 100))


@settings(max_examples=200, deadline=None)
@given(bases(max_rows=8, max_cols=9, bits=30), st.data(),
       st.sampled_from([Fraction(99, 100), Fraction(3, 4), Fraction(1)]))
def test_certificate_is_sound(B, data, delta):
    """Whenever the float certificate says "reduced", the exact test agrees — on reduced bases and
    on bases perturbed by a unimodular step (mostly not reduced, often only barely)."""
    rows = lll(B, delta).basis
    if len(rows) < 2:
        return
    i = data.draw(st.integers(1, len(rows) - 1))
    j = data.draw(st.integers(0, i - 1))
    c = data.draw(st.sampled_from([0, 1, -1, 2]))
    W = [list(v) for v in rows]
    W[i] = [a + c * b for a, b in zip(W[i], W[j])]
    if data.draw(st.booleans()):
        W[i - 1], W[i] = W[i], W[i - 1]
    for M in (rows, W):
        if certify_lll(to_float(M), _delta_up(delta))[0]:
            assert is_lll_reduced(M, delta)
            check_conditions_fraction(M, delta)


def test_float_guided_size_reduction_path():
    import random
    rng = random.Random(3)
    n = 12
    B = [[rng.randrange(2**20) for _ in range(n)] for _ in range(n)]
    R = lll(B).basis
    W = [list(v) for v in R]
    for i in range(1, n):  # spoil size reduction everywhere: bᵢ += 2·bᵢ₋₁ (same lattice)
        W[i] = [a + 2 * b for a, b in zip(W[i], W[i - 1])]
    assert not is_lll_reduced(W)
    U = [[int(i == j) for j in range(n)] for i in range(n)]
    W0 = [list(v) for v in W]
    before = _counts()
    assert _red._certify_or_fix(W, U, Fraction(99, 100))
    assert _red.path_counts["size_fixed"] == before["size_fixed"] + 1
    check_conditions_fraction(W, Fraction(99, 100))
    assert flint.fmpz_mat(U) * flint.fmpz_mat(W0) == flint.fmpz_mat(W)


@settings(max_examples=60, deadline=None)
@given(bases(max_rows=6, max_cols=6, bits=20))
def test_transform_false_same_basis(B):
    res, res2 = lll(B), lll(B, transform=False)
    assert res2.basis == res.basis and res2.rank == res.rank and res2.transform is None


@settings(max_examples=25, deadline=None)
@given(st.integers(16, 22), st.integers(0, 3), st.sampled_from([4, 20, 40]), st.data(),
       st.sampled_from([Fraction(99, 100), Fraction(3, 4), Fraction(1)]))
def test_lll_properties_certificate_sizes(m, extra, bits, data, delta):
    """Sizes where lll() tries the float certificate first: same exact guarantees."""
    n = m + extra
    ent = st.integers(-(2**bits), 2**bits)
    B = data.draw(st.lists(st.lists(ent, min_size=n, max_size=n), min_size=m, max_size=m))
    res = lll(B, delta)
    R, U = res
    assert res.rank == flint.fmpz_mat(B).rank() and len(R) == res.rank
    assert flint.fmpz_mat(U) * flint.fmpz_mat(B) == flint.fmpz_mat(R + [[0] * n] * (m - res.rank))
    assert abs(flint.fmpz_mat(U).det()) == 1
    check_conditions_fraction(R, delta)
    assert hnf_rows(R, n) == hnf_rows(B, n)
