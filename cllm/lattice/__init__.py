"""cllm.lattice: exact "crystalline" mathematics, independent of the trainer (no torch here).

* exact arithmetic: Python ints, ``fractions.Fraction``, ``mpmath`` (``exact``);
* primes: sieve, prime_pi, nth_prime, is_prime, factorize (``primes``);
* lattice reduction: exact LLL, Gram–Schmidt, checks (``reduction``), BKZ (``bkz``);
* exact Babai / CVP / SVP / ball enumeration (``enumeration``);
* token geometry: Ulam and Vogel spirals, 12-fold clock, CrystallineToken (``geometry``).

See docs/LATTICE.md for the guarantees and why they hold.
"""

from cllm.lattice.bkz import bkz
from cllm.lattice.enumeration import babai, closest_vector, enumerate_ball, shortest_vector
from cllm.lattice.exact import as_fraction, constant, e, exp, ln, phi, pi, sqrt, to_str
from cllm.lattice.geometry import (GOLDEN_ANGLE, CrystallineToken, clock_position, clock_positions_vec,
                                   crystalline_table, ulam_coords, ulam_coords_vec, ulam_index,
                                   vogel_point, vogel_points_vec)
from cllm.lattice.primes import (factorize, is_prime, nth_prime, prime_pi, primes_in_range, sieve,
                                 smallest_prime_factors)
from cllm.lattice.reduction import LLLResult, gram_matrix, gram_schmidt, is_lll_reduced, lll

__all__ = [
    "as_fraction", "constant", "e", "exp", "ln", "phi", "pi", "sqrt", "to_str",
    "factorize", "is_prime", "nth_prime", "prime_pi", "primes_in_range", "sieve", "smallest_prime_factors",
    "LLLResult", "gram_matrix", "gram_schmidt", "is_lll_reduced", "lll", "bkz",
    "babai", "closest_vector", "enumerate_ball", "shortest_vector",
    "GOLDEN_ANGLE", "CrystallineToken", "clock_position", "clock_positions_vec", "crystalline_table",
    "ulam_coords", "ulam_coords_vec", "ulam_index", "vogel_point", "vogel_points_vec",
]
