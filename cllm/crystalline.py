"""Where lattice geometry meets the model: fixed positional tables and token-embedding inits.

Every table here is a deterministic function of its shape, built with numpy (and ``cllm.lattice``
for the crystalline kinds), so a checkpoint needs to store none of them.
"""

from __future__ import annotations

import numpy as np

# Positional encodings that are a fixed [n_positions, n_embd] table added to the token embeddings.
FIXED_POSITION_TABLES = ("sinusoidal",)
# Token-embedding initialisations besides the plain normal one.
TOKEN_EMBEDDING_INITS: tuple[str, ...] = ()


def sinusoidal_table(n_positions: int, n_embd: int) -> np.ndarray:
    """The Transformer's sin/cos table: [n_positions, n_embd], column pairs at geometric frequencies."""
    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    freqs = 1.0 / 10000.0 ** (np.arange(0, n_embd, 2, dtype=np.float64) / n_embd)
    table = np.zeros((n_positions, n_embd))
    table[:, 0::2] = np.sin(pos * freqs)
    table[:, 1::2] = np.cos(pos * freqs)[:, : n_embd // 2]
    return table


def position_table(kind: str, n_positions: int, n_embd: int) -> np.ndarray:
    """A fixed positional table of the given kind, [n_positions, n_embd], float64, unit RMS per entry."""
    builders = {"sinusoidal": sinusoidal_table}
    if kind not in builders:
        raise ValueError(f"no fixed positional table of kind {kind!r}")
    table = builders[kind](n_positions, n_embd)
    return table / np.sqrt(np.mean(table**2))
