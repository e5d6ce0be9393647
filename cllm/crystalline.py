"""Where lattice geometry meets the model: fixed positional tables and token-embedding inits.

Every table here is a deterministic function of its shape, built with numpy (and ``cllm.lattice``
for the crystalline kinds), so a checkpoint needs to store none of them. Each is a pure function
of the position (or token) index, so it extends to any context length: row t of a table for n
positions equals row t of the table for any longer n.

Fixed positional tables, ``position_table(kind, n_positions, n_embd)`` -> float64
``[n_positions, n_embd]``, each row scaled to unit RMS (the model scales the table to 0.02):

* ``sinusoidal``: the Transformer's sin/cos of t at geometric frequencies.
* ``ulam``: position t sits at n = t + 1 on the square Ulam spiral, (x, y) = ``ulam_coords(n)``;
  columns cycle through four feature families, each a sin/cos pair at geometric frequencies
  (base 10000, like ``sinusoidal``): the coordinate x, the coordinate y, the Euclidean radius
  √(x² + y²) and the ring max(|x|, |y|) -- plus angle harmonics sin(kθ), cos(kθ) of θ = atan2(y, x).
  Distinct positions have distinct (x, y), and the lowest frequency of x and y is injective over
  any practical range, so rows are distinct.
* ``clock``: the 12-fold clock lattice of t (``clock_position``): hour h = t mod 12 and ring
  r = t // 12. Up to 11 columns are the hour harmonics cos(2πkh/12), sin(2πkh/12) (k = 1..6, the
  full set of independent functions of h mod 12); the rest are sin/cos of the ring at geometric
  frequencies. (h, r) determines t, so rows are distinct once n_embd ≥ 4.
* ``prime``: phases of the (t+1)-th prime p: sin(p·ω), cos(p·ω) at the sinusoidal frequencies ω,
  i.e. a sinusoidal table read at prime positions (the prime gaps warp it), plus -- in the last
  column pair -- the prime's clock hour p mod 12 as a phase.

``token_embedding_init(vocab_size, n_embd, std)`` -> float64 ``[vocab_size, n_embd]``: the
``crystalline`` token init (see its docstring).

Tables are built once per (kind, shape) and cached (``functools.lru_cache``, read-only arrays);
the public functions hand out writable copies.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .config import FIXED_POSITION_TABLES, TOKEN_EMBEDDING_INITS  # noqa: F401  (the names are config's; re-exported here)


_BASE = 10000.0  # geometric frequency base shared by every sin/cos family here


def _frequencies(count: int, span: int) -> np.ndarray:
    """count geometric frequencies from 1 down to ~1/_BASE (the sinusoidal ladder for a width span)."""
    return 1.0 / _BASE ** (2.0 * np.arange(count, dtype=np.float64) / max(span, 1))


def _sincos(values: np.ndarray, count: int, span: int) -> np.ndarray:
    """values [n] -> [n, 2*count]: interleaved sin, cos of values * frequency."""
    angles = values[:, None] * _frequencies(count, span)[None, :]
    out = np.empty((values.shape[0], 2 * count))
    out[:, 0::2] = np.sin(angles)
    out[:, 1::2] = np.cos(angles)
    return out


def sinusoidal_table(n_positions: int, n_embd: int) -> np.ndarray:
    """The Transformer's sin/cos table: [n_positions, n_embd], column pairs at geometric frequencies."""
    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    freqs = 1.0 / 10000.0 ** (np.arange(0, n_embd, 2, dtype=np.float64) / n_embd)
    table = np.zeros((n_positions, n_embd))
    table[:, 0::2] = np.sin(pos * freqs)
    table[:, 1::2] = np.cos(pos * freqs)[:, : n_embd // 2]
    return table


def _interleave(families: list[np.ndarray], n_embd: int) -> np.ndarray:
    """Take columns round-robin from each family (in order) until n_embd columns are taken.

    Column pairs stay together, so every family contributes its lowest-index (highest-frequency)
    pairs first and its low frequencies appear as soon as the width allows.
    """
    n = families[0].shape[0]
    cols: list[np.ndarray] = []
    pair = 0
    while len(cols) < n_embd:
        progressed = False
        for fam in families:
            if 2 * pair < fam.shape[1]:
                cols.extend(fam[:, 2 * pair : 2 * pair + 2].T)
                progressed = True
        if not progressed:
            break
        pair += 1
    table = np.zeros((n, n_embd))
    taken = np.stack(cols[:n_embd], axis=1) if cols else table
    table[:, : taken.shape[1]] = taken
    return table


def ulam_table(n_positions: int, n_embd: int) -> np.ndarray:
    """Ulam-spiral features of positions 0..n_positions-1: [n_positions, n_embd] (see module doc)."""
    from cllm.lattice import ulam_coords_vec

    n = np.arange(1, n_positions + 1, dtype=np.int64)
    x, y = (a.astype(np.float64) for a in ulam_coords_vec(n)) if n_positions else (n * 1.0, n * 1.0)
    radius = np.hypot(x, y)
    ring = np.maximum(np.abs(x), np.abs(y))
    theta = np.arctan2(y, x)
    pairs = -(-n_embd // 2)  # column pairs needed
    per = -(-pairs // 5) + 1  # pairs per family (five families, a little spare)
    span = 2 * per
    harmonics = np.arange(1, per + 1, dtype=np.float64)
    angle = np.empty((n_positions, 2 * per))
    angle[:, 0::2] = np.sin(theta[:, None] * harmonics)
    angle[:, 1::2] = np.cos(theta[:, None] * harmonics)
    # Order: the coordinates (which alone make rows distinct) first, then radius, ring, angle.
    families = [_sincos(x, per, span), _sincos(y, per, span), _sincos(radius, per, span),
                _sincos(ring, per, span), angle]
    # Each family's last pair holds its lowest frequency; move it first so that narrow tables still
    # get the injective (low-frequency) x and y columns.
    families = [np.concatenate([f[:, -2:], f[:, :-2]], axis=1) for f in families]
    return _interleave(families, n_embd)


def clock_table(n_positions: int, n_embd: int) -> np.ndarray:
    """12-fold clock-lattice features of positions 0..n_positions-1: [n_positions, n_embd]."""
    from cllm.lattice import clock_positions_vec

    t = np.arange(n_positions, dtype=np.int64)
    ring, hour, _, _ = clock_positions_vec(t) if n_positions else (t, t, None, None)
    ring, hour = ring.astype(np.float64), hour.astype(np.float64)
    k = np.arange(1, 7, dtype=np.float64)
    phase = 2 * math.pi * hour[:, None] * k / 12.0
    hours = np.empty((n_positions, 12))
    hours[:, 0::2] = np.cos(phase)
    hours[:, 1::2] = np.sin(phase)
    hours = hours[:, :11]  # sin(2π·6h/12) = sin(πh) = 0: dropped
    n_hour = min(11, max(2, n_embd // 2))
    n_ring = n_embd - n_hour
    ring_pairs = max(1, -(-n_ring // 2))
    ring_feats = _sincos(ring, ring_pairs, 2 * ring_pairs)
    # Lowest ring frequency first (it is the injective one), then the rest from high to low.
    ring_feats = np.concatenate([ring_feats[:, -2:], ring_feats[:, :-2]], axis=1)
    table = np.zeros((n_positions, n_embd))
    table[:, :n_hour] = hours[:, :n_hour]
    table[:, n_hour:] = ring_feats[:, :n_ring]
    return table


def _first_primes(count: int) -> np.ndarray:
    """The first count primes, int64 (count ≥ 0), via one sieve of ``cllm.lattice``."""
    from cllm.lattice import sieve

    if count == 0:
        return np.zeros(0, dtype=np.int64)
    m = max(count, 6)
    limit = int(m * (math.log(m) + math.log(math.log(m)))) + 3  # Rosser: p_m < m(ln m + ln ln m)
    return sieve(limit)[:count]


def prime_table(n_positions: int, n_embd: int) -> np.ndarray:
    """Phases of the (t+1)-th prime for positions t = 0..n_positions-1: [n_positions, n_embd]."""
    p = _first_primes(n_positions).astype(np.float64)
    pairs = -(-n_embd // 2)
    table = np.zeros((n_positions, 2 * pairs))
    if pairs >= 2:
        table[:, : 2 * (pairs - 1)] = _sincos(p, pairs - 1, n_embd)
        hour = 2 * math.pi * np.mod(p, 12.0) / 12.0
        table[:, -2], table[:, -1] = np.sin(hour), np.cos(hour)
    else:
        table[:] = _sincos(p / _BASE, 1, 2)  # one pair: the slowest phase, injective
    return table[:, :n_embd]


_BUILDERS = {"sinusoidal": sinusoidal_table, "ulam": ulam_table, "clock": clock_table, "prime": prime_table}


@functools.lru_cache(maxsize=64)
def _cached_position_table(kind: str, n_positions: int, n_embd: int) -> np.ndarray:
    table = _BUILDERS[kind](n_positions, n_embd)
    # Each row to unit RMS (for even n_embd the rows of every kind already share one norm), so the
    # scale of row t does not depend on how many positions were asked for.
    norms = np.sqrt(np.mean(table**2, axis=1, keepdims=True))
    table = table / np.where(norms > 0, norms, 1.0)
    table.flags.writeable = False
    return table


def position_table(kind: str, n_positions: int, n_embd: int) -> np.ndarray:
    """A fixed positional table of the given kind, [n_positions, n_embd], float64, unit RMS per entry."""
    if kind not in _BUILDERS:
        raise ValueError(f"no fixed positional table of kind {kind!r}")
    if n_positions < 0 or n_embd <= 0:
        raise ValueError(f"need n_positions >= 0 and n_embd > 0, got {n_positions}, {n_embd}")
    return _cached_position_table(kind, int(n_positions), int(n_embd)).copy()


# ----------------------------------------------------------------------------- token embeddings

_PROJECTION_SEED = 0xC0FFEE  # the crystalline init is a fixed function of (vocab_size, n_embd)
_SMALL_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def crystalline_features(vocab_size: int) -> np.ndarray:
    """Per-token crystalline features, [vocab_size, K] float64, each column standardised.

    Token t (n = t + 1) is described by its ``cllm.lattice.crystalline_table`` record:
    * prime: log p_n, the prime's clock hour p mod 12 as harmonics, multi-frequency phases of p;
    * factor signature of n: divisibility by 2, 3, 5, ..., 37, ω(n), Ω(n), log of the largest factor;
    * Ulam spiral: x, y, radius, ring, angle harmonics and multi-frequency phases of x and y;
    * Vogel (golden-angle) spiral: x, y;
    * clock lattice of t: ring, hour harmonics.
    Constant columns (e.g. divisibility by 37 in a tiny vocabulary) are dropped.
    """
    from cllm.lattice import crystalline_table

    rec = crystalline_table(vocab_size)
    f = lambda k: rec[k].astype(np.float64)  # noqa: E731
    n = f("token_id") + 1.0
    p = f("prime")
    ux, uy = f("ulam_x"), f("ulam_y")
    theta = np.arctan2(uy, ux)
    cols = [np.log(p), np.log(f("largest_factor")), f("omega"), f("big_omega"),
            ux, uy, np.hypot(ux, uy), np.maximum(np.abs(ux), np.abs(uy)),
            f("vogel_x"), f("vogel_y"), f("clock_ring")]
    for k in (1, 2, 3):
        cols += [np.sin(k * theta), np.cos(k * theta)]
    for k in range(1, 7):
        cols += [np.cos(2 * math.pi * k * f("clock_hour") / 12), np.sin(2 * math.pi * k * f("clock_hour") / 12)]
        cols += [np.cos(2 * math.pi * k * f("prime_hour") / 12), np.sin(2 * math.pi * k * f("prime_hour") / 12)]
    cols += [(np.mod(n, q) == 0).astype(np.float64) for q in _SMALL_PRIMES]
    cols += list(_sincos(p, 8, 16).T) + list(_sincos(ux, 4, 8).T) + list(_sincos(uy, 4, 8).T)
    feats = np.stack(cols, axis=1) if vocab_size else np.zeros((0, len(cols)))
    if vocab_size < 2:
        return feats
    std = feats.std(axis=0)
    keep = std > 1e-9
    return (feats[:, keep] - feats[:, keep].mean(axis=0)) / std[keep]


@functools.lru_cache(maxsize=16)
def _cached_token_init(vocab_size: int, n_embd: int) -> np.ndarray:
    feats = crystalline_features(vocab_size)  # [V, K]
    k = feats.shape[1]
    rng = np.random.default_rng(_PROJECTION_SEED)
    # A seeded semi-orthogonal projection [K, C]: orthonormal rows when K <= C (an isometry, so the
    # features' pairwise geometry is kept exactly), orthonormal columns when K > C.
    g = rng.standard_normal((max(k, n_embd), min(k, n_embd)))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))  # unique QR: the projection does not depend on LAPACK's sign choice
    proj = q.T if k <= n_embd else q  # [K, C]
    emb = feats @ proj
    norm = np.linalg.norm(emb)
    if norm > 0:
        emb = emb / norm
    emb.flags.writeable = False
    return emb


def token_embedding_init(vocab_size: int, n_embd: int, std: float = 0.02) -> np.ndarray:
    """The ``crystalline`` token-embedding init: float64 [vocab_size, n_embd].

    Token t's standardised crystalline features (``crystalline_features``: prime, factor
    signature, Ulam/Vogel spiral and clock coordinates) are mapped to n_embd dimensions by a fixed,
    seeded semi-orthogonal projection (orthonormal rows when there are at most n_embd features,
    so distances and angles between tokens are exactly those of their features), then scaled so
    the Frobenius norm is std·√(vocab_size·n_embd) -- the expected norm of the normal init
    N(0, std²) of the same shape. Only the geometry differs from the normal init.
    """
    if vocab_size <= 0 or n_embd <= 0:
        raise ValueError(f"need vocab_size > 0 and n_embd > 0, got {vocab_size}, {n_embd}")
    return _cached_token_init(int(vocab_size), int(n_embd)) * (std * math.sqrt(vocab_size * n_embd))
