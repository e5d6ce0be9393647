"""Benchmark cllm.lattice against fpylll (optional) and sympy: LLL times, CVP/SVP times and
disagreements. Prints Markdown tables. Run it alone on the machine:

    flock /tmp/cllm-bench.lock python benchmarks/lattice_bench.py [--quick]

Inputs are generated here with a seeded ``random.Random`` (the same Python-list matrices go to every
library): "uniform b-bit" = n × n entries uniform in [0, 2^b); "knapsack b-bit" = n × (n+1) rows
(a_i, e_i) with a_i uniform b-bit. Times are medians over repetitions, conversion from Python lists
included for every library. "cllm path" says how cllm proved the result: ``certified`` (rigorous float
certificate), ``size_fixed`` (certificate after a float-guided integer size reduction) or ``exact``
(integral LLL fallback). fpylll peers: LLL.reduction (no transform, its default; and with a
transform, which cllm always returns); CVP.closest_vector(method="fast" and "proved") on an LLL-reduced
basis; for SVP the unpruned float enumeration fpylll's own SVP would run (Enumeration on GSO.Mat).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cllm.lattice import closest_vector, lll, reduction, shortest_vector  # noqa: E402
from common import median_seconds  # noqa: E402

try:
    from fpylll import CVP, GSO, LLL, Enumeration, IntegerMatrix
    import fpylll
    HAVE_FPYLLL = True
except ImportError:  # optional peer
    HAVE_FPYLLL = False

import sympy  # noqa: E402
from sympy import QQ, ZZ  # noqa: E402
from sympy.polys.matrices import DomainMatrix  # noqa: E402


def uniform(rng, n, bits):
    return [[rng.randrange(2**bits) for _ in range(n)] for _ in range(n)]


def knapsack(rng, n, bits):
    return [[rng.randrange(2**bits)] + [int(i == j) for j in range(n)] for i in range(n)]


def median_time(fn, reps):
    return median_seconds(fn, reps, warmup=0)


def sympy_lll(B, pure):
    M = DomainMatrix([[ZZ(x) for x in r] for r in B], (len(B), len(B[0])), ZZ)
    if pure:  # force sympy's pure-Python DDM implementation instead of its FLINT-backed DFM
        M = DomainMatrix.from_rep(M.rep.to_ddm())
    return M.lll(delta=QQ(99, 100))


def fpylll_lll(B, with_u):
    A = IntegerMatrix.from_matrix(B)
    if with_u:
        U = IntegerMatrix.identity(A.nrows)
        LLL.reduction(A, U)
    else:
        LLL.reduction(A)
    return A


def ms(x):
    return f"{1e3 * x:.2f}" if x is not None else "—"


def bench_lll(args, rng):
    print("\n### LLL (δ = 0.99), median ms\n")
    cols = ["basis", "n", "cllm lll", "cllm lll no U", "fpylll", "fpylll +U", "ratio cllm/fpylll",
            "ratio cllm no U/fpylll", "ratio cllm/fpylll+U", "sympy (FLINT DFM)", "sympy (pure Python)", "cllm path"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    kinds = [("uniform", 10), ("uniform", 20), ("uniform", 30), ("knapsack", 30), ("knapsack", None)]
    for n in (10, 20, 40):
        for kind, bits in kinds:
            b = bits if bits is not None else 10 * n  # "hard" knapsack: 10n-bit numbers
            B = uniform(rng, n, b) if kind == "uniform" else knapsack(rng, n, b)
            reps = args.reps
            before = dict(reduction.path_counts)
            t_c = median_time(lambda: lll(B), reps)
            path = "+".join(k for k in reduction.path_counts if reduction.path_counts[k] > before[k])
            t_cn = median_time(lambda: lll(B, transform=False), reps)
            t_f = median_time(lambda: fpylll_lll(B, False), reps) if HAVE_FPYLLL else None
            t_fu = median_time(lambda: fpylll_lll(B, True), reps) if HAVE_FPYLLL else None
            t_sf = median_time(lambda: sympy_lll(B, False), reps)
            t_sp = median_time(lambda: sympy_lll(B, True), max(1, reps // 5)) if (n <= 20 or not args.quick) and b <= 40 else None
            print(f"| {kind} {b}-bit | {n} | {ms(t_c)} | {ms(t_cn)} | {ms(t_f)} | {ms(t_fu)} | "
                  f"{t_c / t_f:.2f} | {t_cn / t_f:.2f} | {t_c / t_fu:.2f} | {ms(t_sf)} | {ms(t_sp)} | {path} |"
                  if HAVE_FPYLLL else
                  f"| {kind} {b}-bit | {n} | {ms(t_c)} | {ms(t_cn)} | — | — | — | — | — | {ms(t_sf)} | {ms(t_sp)} "
                  f"| {path} |", flush=True)


def sqd(v, t):
    return sum((a - b) ** 2 for a, b in zip(v, t))


def bench_cvp_svp(args, rng):
    print("\n### CVP / SVP on uniform 10-bit bases (target uniform 10-bit), per-instance times\n")
    cols = ["n", "inst", "cllm CVP median ms", "fpylll fast CVP median ms", "fpylll fast farther",
            "fpylll proved farther", "cllm farther", "cllm SVP median ms", "cllm SVP max ms",
            "fpylll enum SVP median ms", "SVP norm differs"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for n in (10, 15, 20, 25, 30):
        tc, tf, ts, tfs = [], [], [], []
        fast_worse = proved_worse = ours_worse = svp_diff = 0
        for _ in range(args.instances):
            B = uniform(rng, n, 10)
            t = [rng.randrange(2**10) for _ in range(n)]
            t0 = time.perf_counter()
            v = closest_vector(B, t)
            tc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            s = shortest_vector(B)
            ts.append(time.perf_counter() - t0)
            if HAVE_FPYLLL:
                t0 = time.perf_counter()
                A = IntegerMatrix.from_matrix(B)
                LLL.reduction(A)
                f = CVP.closest_vector(A, t, method="fast")
                tf.append(time.perf_counter() - t0)
                p = CVP.closest_vector(A, t, method="proved")
                fast_worse += sqd(f, t) > sqd(v, t)
                proved_worse += sqd(p, t) > sqd(v, t)
                ours_worse += sqd(v, t) > min(sqd(f, t), sqd(p, t))
                t0 = time.perf_counter()
                A = IntegerMatrix.from_matrix(B)
                LLL.reduction(A)
                M = GSO.Mat(A)
                M.update_gso()
                coeffs = Enumeration(M).enumerate(0, n, M.get_r(0, 0), 0)[0][1]
                fs = A.multiply_left([int(round(c)) for c in coeffs])
                tfs.append(time.perf_counter() - t0)
                svp_diff += sum(a * a for a in fs) != sum(a * a for a in s)
        med = lambda xs: ms(statistics.median(xs)) if xs else "—"  # noqa: E731
        print(f"| {n} | {args.instances} | {med(tc)} | {med(tf)} | {fast_worse if HAVE_FPYLLL else '—'} | "
              f"{proved_worse if HAVE_FPYLLL else '—'} | {ours_worse if HAVE_FPYLLL else '—'} | {med(ts)} | "
              f"{ms(max(ts))} | {med(tfs)} | {svp_diff if HAVE_FPYLLL else '—'} |", flush=True)


def bench_svp30(args, rng):
    print("\n### Exact SVP at n = 30 (cllm shortest_vector, LLL included), seconds\n")
    print("| basis | instances | median s | max s |\n|---|---|---|---|")
    for kind, bits in [("uniform", 10), ("uniform", 30), ("knapsack", 30), ("knapsack", 300)]:
        ts = []
        for _ in range(args.instances):
            B = uniform(rng, 30, bits) if kind == "uniform" else knapsack(rng, 30, bits)
            t0 = time.perf_counter()
            shortest_vector(B)
            ts.append(time.perf_counter() - t0)
        print(f"| {kind} {bits}-bit | {len(ts)} | {statistics.median(ts):.3f} | {max(ts):.3f} |", flush=True)


_ISSUE_235 = json.loads((Path(__file__).resolve().parents[1] / "tests" / "data" / "fpylll_issue_235.json").read_text())
ISSUE_235 = [tuple(row) for row in _ISSUE_235["basis"]]
TARGET_235 = tuple(_ISSUE_235["target"])


def _fpylll_235(method):
    A = IntegerMatrix.from_matrix([list(r) for r in ISSUE_235])
    CVP.closest_vector(A, TARGET_235, method=method)


def bench_issue235(args):
    print("\n### fpylll issue #235 (16-dim CVP)\n")
    t0 = time.perf_counter()
    v = closest_vector(ISSUE_235, TARGET_235)
    print(f"- cllm closest_vector: distance² = {sqd(v, TARGET_235)} in {time.perf_counter() - t0:.3f} s")
    if HAVE_FPYLLL:
        for method in ("fast", "proved"):
            p = mp.get_context("fork").Process(target=_fpylll_235, args=(method,))
            t0 = time.perf_counter()
            p.start()
            p.join(args.timeout)
            if p.is_alive():
                p.kill()
                p.join()
                print(f"- fpylll {fpylll.__version__} CVP method={method!r}: no answer after {args.timeout:.0f} s (killed)")
            else:
                print(f"- fpylll CVP method={method!r}: returned in {time.perf_counter() - t0:.3f} s")


def bench_parts(args, rng):
    """Where cllm's LLL time goes at n = 40 (uniform 30-bit): FLINT LLL, conversions, the float
    certificate, and (for comparison) the exact certificate used as fallback."""
    import flint

    from cllm.lattice.certify import certify_lll, float_mu, to_float
    from cllm.lattice.reduction import _FLINT_ETA, integral_gram_schmidt

    print("\n### cllm lll cost breakdown, uniform 30-bit, n = 40, median ms\n")
    print("| step | ms |\n|---|---|")
    B = uniform(rng, 40, 30)
    R, T = flint.fmpz_mat(B).lll(transform=True, delta=0.994, eta=_FLINT_ETA)
    rows = [[int(x) for x in r] for r in R.tolist()]
    Bf = to_float(rows)
    G = R * R.transpose()
    for name, fn in [("whole cllm lll(B)", lambda: lll(B)),
                     ("whole cllm lll(B, transform=False)", lambda: lll(B, transform=False)),
                     ("FLINT fmpz_mat.lll(transform=True) incl. fmpz_mat(B)",
                      lambda: flint.fmpz_mat(B).lll(transform=True, delta=0.994, eta=_FLINT_ETA)),
                     ("FLINT fmpz_mat.lll(transform=False) incl. fmpz_mat(B)",
                      lambda: flint.fmpz_mat(B).lll(transform=False, delta=0.994, eta=_FLINT_ETA)),
                     ("reduced basis + U to Python ints", lambda: ([[int(x) for x in r] for r in R.tolist()],
                                                                    [[int(x) for x in r] for r in T.tolist()])),
                     ("rows to float64 (to_float)", lambda: to_float(rows)),
                     ("float QR for approximate μ (float_mu)", lambda: float_mu(Bf)),
                     ("float certificate (certify_lll, incl. QR)", lambda: certify_lll(Bf, 0.99 * (1 + 2**-50))),
                     ("fallback only: FLINT fflu of the Gram matrix", lambda: G.fflu()),
                     ("fallback only: integral_gram_schmidt (fflu + conversion)", lambda: integral_gram_schmidt(rows))]:
        print(f"| {name} | {ms(median_time(fn, args.reps))} |", flush=True)
    assert certify_lll(Bf, 0.99 * (1 + 2**-50))[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and instances")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per LLL timing")
    ap.add_argument("--instances", type=int, default=None, help="random instances per CVP/SVP size")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before fpylll on #235 is killed")
    ap.add_argument("--only", choices=["lll", "parts", "cvp", "svp30", "235"], default=None)
    args = ap.parse_args()
    args.reps = args.reps or (5 if args.quick else 15)
    args.instances = args.instances or (5 if args.quick else 20)
    rng = random.Random(args.seed)
    print(f"# cllm.lattice benchmark — python {platform.python_version()}, sympy {sympy.__version__}, "
          f"fpylll {fpylll.__version__ if HAVE_FPYLLL else 'not installed'}, seed {args.seed}")
    if args.only in (None, "lll"):
        bench_lll(args, rng)
    if args.only in (None, "parts"):
        bench_parts(args, rng)
    if args.only in (None, "cvp"):
        bench_cvp_svp(args, rng)
    if args.only in (None, "svp30"):
        bench_svp30(args, rng)
    if args.only in (None, "235"):
        bench_issue235(args)


if __name__ == "__main__":
    main()
