"""``cllm crystal analyze --checkpoint DIR``: the trained token embeddings seen as a lattice.

Steps (all on the token-embedding matrix W = wte.weight, [V, C]; the first ``--max-tokens`` ids):

1. Integer lattice: B = round(W · s) with s = 2^bits / max|W| (``--bits``, default 10), so the
   largest entry is 2^bits; rows are the token vectors. Rounding error per entry ≤ ½ (relative
   ≤ 2^-(bits+1) of the largest entry).
2. LLL (``cllm.lattice.lll``, exact, δ = 99/100) of the rows. Orthogonality defect
   δ(B) = Π‖bᵢ‖ / √det(B·Bᵀ) before (the token rows themselves) and after (the reduced basis),
   computed from the exact integer Gram determinant and reported as log δ (natural log; 0 means
   an orthogonal basis). Needs independent rows (V ≤ C); otherwise only the reduced basis' defect.
3. Effective rank of W: exp(entropy of the normalised singular values) (Roy & Vetterli 2007),
   the participation ratio (Σσ²)²/Σσ⁴, and the number of singular values holding 99 % of Σσ².
4. Nearest-token queries, leave-one-out: for token i, the exact closest vector
   (``cllm.lattice.closest_vector``) to bᵢ in the lattice spanned by the other token rows,
   written as v = Σ cⱼ bⱼ. The CVP answer is "no neighbour" when v = 0 (bᵢ is closer to the
   origin than to any integer combination of the others), a single token j when c = eⱼ, else
   a combination whose dominant token is argmaxⱼ |cⱼ|·‖bⱼ‖. The cosine nearest neighbour is
   argmax_{j≠i} cos(Wᵢ, Wⱼ). Reported: the share of each kind of CVP answer and the agreement
   rate of the CVP token (positive coefficient) with the cosine neighbour. ``--queries`` (default
   32, a seeded sample; 0 = all): exact CVP is exponential in the worst case; measured on 80
   characters x 128 dims, ~0.1 s per query for normal-init models but ~11 s per query for a
   crystalline-init one, whose rows are further from orthogonal.
5. Prime-GCD similarity: token i ↦ n = i + 1; for every pair i < j, g = log gcd(nᵢ, nⱼ) (0 for
   coprime pairs) against cos(Wᵢ, Wⱼ); Spearman's ρ, with a permutation p-value that relabels
   the tokens (pairs share tokens, so the usual p-value would be too optimistic).
6. A PNG: each token at its Ulam-spiral point (token i at n = i + 1), coloured by the first
   principal component of its embedding, labelled with its text, with a line to its cosine
   nearest neighbour.

Writes ``report.json`` and ``ulam.png`` to ``--out`` (default: ``<checkpoint>/crystal-analysis``)
and prints the report (``--json``: the JSON instead).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from .errors import CLLMError


def _log_int(x: int) -> float:
    """Natural log of a positive Python int of any size."""
    if x <= 0:
        raise ValueError("log of a non-positive integer")
    shift = max(x.bit_length() - 1000, 0)
    return math.log(x >> shift) + shift * math.log(2)


def log_orthogonality_defect(rows: list[list[int]]) -> float | None:
    """log(Π‖bᵢ‖ / √det Gram) for integer rows, from the exact Gram determinant; None if dependent."""
    import flint

    if not rows:
        return 0.0
    B = flint.fmpz_mat(rows)
    det = int((B * B.transpose()).det())
    if det <= 0:
        return None
    log_norms = sum(0.5 * _log_int(sum(a * a for a in r)) for r in rows)
    return log_norms - 0.5 * _log_int(det)


def effective_rank(W: np.ndarray) -> dict:
    s = np.linalg.svd(W, compute_uv=False)
    s = s[s > 0]
    p = s / s.sum()
    energy = np.cumsum(s**2) / np.sum(s**2)
    return {"entropy_rank": float(np.exp(-(p * np.log(p)).sum())),
            "participation_ratio": float(np.sum(s**2) ** 2 / np.sum(s**4)),
            "rank_99": int(np.searchsorted(energy, 0.99) + 1), "max_rank": int(min(W.shape)),
            "singular_values_top5": [float(x) for x in s[:5]]}


def cosine_matrix(W: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    U = W / np.where(norms > 0, norms, 1.0)
    return U @ U.T


def _coefficients(rows: list[list[int]], v: list[int]) -> list[int]:
    """Integer c with c·rows = v (rows independent), exactly verified."""
    if not any(v):
        return [0] * len(rows)
    A = np.array(rows, dtype=np.float64)
    c = np.rint(np.linalg.lstsq(A.T, np.array(v, dtype=np.float64), rcond=None)[0]).astype(np.int64).tolist()
    if [sum(ci * r[k] for ci, r in zip(c, rows)) for k in range(len(v))] != list(v):
        import flint  # float solve was not exact enough: solve exactly over the rationals

        M = flint.fmpq_mat(flint.fmpz_mat(rows).transpose())
        sol = M.solve(flint.fmpq_mat(len(v), 1, v)) if M.nrows() == M.ncols() else None
        if sol is None:
            G = M.transpose() * M
            sol = G.solve(M.transpose() * flint.fmpq_mat(len(v), 1, v))
        c = [int(x) for x in sol.entries()]
    return c


def cvp_queries(B: list[list[int]], cos: np.ndarray, queries: list[int]) -> dict:
    """Leave-one-out exact CVP neighbours vs cosine nearest neighbours (see the module doc)."""
    from cllm.lattice import closest_vector

    norms = np.sqrt(np.array([sum(a * a for a in r) for r in B], dtype=np.float64))
    kinds = {"zero": 0, "single_token": 0, "combination": 0}
    agree = answered = 0
    details = []
    for i in queries:
        others = [j for j in range(len(B)) if j != i]
        rows = [B[j] for j in others]
        v = closest_vector(rows, B[i])
        c = _coefficients(rows, v)
        cos_nn = others[int(np.argmax(cos[i, others]))]
        nz = [k for k, x in enumerate(c) if x]
        if not nz:
            kinds["zero"] += 1
            cvp_tok, kind = None, "zero"
        else:
            k = max(nz, key=lambda k: abs(c[k]) * norms[others[k]])
            kind = "single_token" if len(nz) == 1 and abs(c[nz[0]]) == 1 else "combination"
            kinds[kind] += 1
            cvp_tok = others[k] if c[k] > 0 else None  # a negated token is not a neighbour
            answered += 1
            agree += int(cvp_tok == cos_nn)
        details.append({"token": i, "cvp": kind, "cvp_token": cvp_tok, "cosine_nn": cos_nn,
                        "cvp_terms": len(nz), "cvp_distance_ratio": float(
                            np.linalg.norm(np.array(v) - np.array(B[i])) / max(norms[i], 1e-300))})
    n = max(len(queries), 1)
    # Reference: the Euclidean nearest token (what CVP restricted to single tokens would be) vs cosine.
    W = np.array(B, dtype=np.float64)
    d2 = (W**2).sum(1)[:, None] + (W**2).sum(1)[None, :] - 2 * W @ W.T
    np.fill_diagonal(d2, np.inf)
    euclid_agree = float(np.mean([int(np.argmin(d2[i])) == d["cosine_nn"] for i, d in zip(queries, details)]))
    return {"queries": len(queries), "euclidean_nn_agreement": euclid_agree, "zero": kinds["zero"] / n, "single_token": kinds["single_token"] / n,
            "combination": kinds["combination"] / n,
            "agreement_when_answered": agree / answered if answered else None,
            "agreement_over_all_queries": agree / n, "answered": answered, "details": details}


def _rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def gcd_spearman(cos: np.ndarray, permutations: int, seed: int) -> dict:
    """Spearman ρ between log gcd(i+1, j+1) and cos(Wᵢ, Wⱼ) over pairs i < j, with a relabeling test."""
    V = cos.shape[0]
    iu = np.triu_indices(V, k=1)
    n = np.arange(1, V + 1)
    g = np.log(np.gcd(n[iu[0]], n[iu[1]]).astype(np.float64))
    if V < 3 or np.all(g == g[0]):
        return {"pairs": int(len(g)), "spearman": None, "note": "too few tokens for a gcd structure"}
    rg = _rank(g)

    def rho(c: np.ndarray) -> float:
        rc = _rank(c)
        return float(np.corrcoef(rg, rc)[0, 1])

    observed = rho(cos[iu])
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(permutations):
        perm = rng.permutation(V)
        null.append(rho(cos[np.ix_(perm, perm)][iu]))
    null = np.array(null)
    p = (1 + np.sum(np.abs(null) >= abs(observed))) / (1 + len(null)) if len(null) else None
    return {"pairs": int(len(g)), "coprime_pairs": int(np.sum(g == 0)), "spearman": observed,
            "permutation_p": None if p is None else float(p), "permutations": int(len(null)),
            "null_std": float(null.std()) if len(null) else None}


def token_labels(tokenizer, V: int) -> list[str]:
    labels = []
    for i in range(V):
        try:
            t = tokenizer.id_to_token(i)
        except Exception:  # noqa: BLE001 - any tokenizer without a readable token
            t = str(i)
        labels.append({"\n": "\\n", " ": "␣", "\t": "\\t"}.get(t, t))
    return labels


def plot_ulam(W: np.ndarray, cos: np.ndarray, labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cllm.lattice import ulam_coords_vec

    V = W.shape[0]
    x, y = ulam_coords_vec(np.arange(1, V + 1))
    Wc = W - W.mean(axis=0)
    pc1 = np.linalg.svd(Wc, full_matrices=False)[0][:, 0] if V > 1 else np.zeros(V)
    nn = np.argmax(cos - 2 * np.eye(V), axis=1)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.plot(x, y, color="0.85", lw=0.8, zorder=0)  # the spiral path, token order
    for i in range(V):
        ax.annotate("", xy=(x[nn[i]], y[nn[i]]), xytext=(x[i], y[i]),
                    arrowprops={"arrowstyle": "->", "color": "tab:red", "alpha": 0.35, "lw": 0.8}, zorder=1)
    sc = ax.scatter(x, y, c=pc1, cmap="coolwarm", s=260, zorder=2, edgecolors="k", linewidths=0.4)
    for i in range(V):
        ax.text(x[i], y[i], labels[i][:4], ha="center", va="center", fontsize=7, zorder=3)
    fig.colorbar(sc, ax=ax, shrink=0.7, label="first principal component of the embedding")
    ax.set_title(title + "\n(token i at Ulam point i + 1; arrows: cosine nearest neighbour)", fontsize=10)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def analyze(checkpoint: str, out: str | None = None, bits: int = 10, max_tokens: int = 256, queries: int = 32,
            permutations: int = 200, seed: int = 0, png: bool = True) -> dict:
    """Run the analysis (module doc) and return the report; writes report.json (and ulam.png) to out."""
    from cllm.lattice import lll

    from .checkpoint import load_model

    if not 1 <= bits <= 60:
        raise CLLMError(f"--bits must be in 1..60, got {bits}")
    if max_tokens < 2 or queries < 0 or permutations < 0:
        raise CLLMError("need --max-tokens >= 2, --queries >= 0 and --permutations >= 0")
    t0 = time.perf_counter()
    model, tokenizer, cfg = load_model(checkpoint)
    W = model.wte.weight.detach().double().cpu().numpy()
    V_all, C = W.shape
    V = min(V_all, max_tokens)
    W = W[:V]
    if not np.isfinite(W).all():
        raise CLLMError(f"the token embeddings in {checkpoint} are not finite")
    scale = 2.0**bits / max(np.abs(W).max(), 1e-300)
    B = np.rint(W * scale).astype(np.int64).tolist()
    t = time.perf_counter()
    red = lll(B)
    lll_s = time.perf_counter() - t
    before = log_orthogonality_defect(B) if red.rank == V else None
    unchanged = red.rank == V and sorted(map(tuple, map(lambda r: [abs(a) for a in r], red.basis))) == sorted(
        map(tuple, map(lambda r: [abs(a) for a in r], B)))
    after = log_orthogonality_defect(red.basis)
    cos = cosine_matrix(W)
    qs = list(range(V)) if not queries else sorted(np.random.default_rng(seed).choice(V, min(queries, V), replace=False).tolist())
    t = time.perf_counter()
    cvp = cvp_queries(B, cos, qs) if red.rank == V else {"note": "token rows are linearly dependent (V > C); CVP queries skipped"}
    cvp_s = time.perf_counter() - t
    labels = token_labels(tokenizer, V)
    cos_nn = np.argmax(cos - 2 * np.eye(V), axis=1)
    report = {
        "checkpoint": str(checkpoint), "vocab_size": V_all, "analysed_tokens": V, "n_embd": C,
        "pos_encoding": cfg.model.pos_encoding, "embedding_init": cfg.model.embedding_init,
        "integer_scale": {"bits": bits, "scale": scale, "max_abs_entry": int(np.abs(np.array(B)).max())},
        "lll": {"rank": red.rank, "seconds": round(lll_s, 3), "log_defect_before": before, "log_defect_after": after,
                "basis_unchanged": unchanged,
                "mean_row_norm_before": float(np.mean(np.linalg.norm(np.array(B, dtype=np.float64), axis=1))),
                "mean_row_norm_after": float(np.mean(np.linalg.norm(np.array(red.basis, dtype=np.float64), axis=1)))},
        "effective_rank": effective_rank(W),
        "cvp_vs_cosine": {**cvp, "seconds": round(cvp_s, 3)},
        "cosine": {"mean_offdiag": float((cos.sum() - np.trace(cos)) / max(V * (V - 1), 1)),
                   "nearest_neighbours": {labels[i]: labels[int(cos_nn[i])] for i in range(V)}},
        "prime_gcd_vs_cosine": gcd_spearman(cos, permutations, seed),
    }
    out_dir = Path(out) if out else Path(checkpoint) / "crystal-analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    if png:
        plot_ulam(W, cos, labels, out_dir / "ulam.png",
                  f"token embeddings of {Path(checkpoint).name} ({cfg.model.pos_encoding}, {cfg.model.embedding_init} init)")
        report["png"] = str(out_dir / "ulam.png")
    report["seconds"] = round(time.perf_counter() - t0, 2)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    report["report"] = str(out_dir / "report.json")
    return report


def _f(x, fmt=".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def format_report(r: dict) -> str:
    L, E, Q, G = r["lll"], r["effective_rank"], r["cvp_vs_cosine"], r["prime_gcd_vs_cosine"]
    lines = [
        f"checkpoint {r['checkpoint']}: {r['analysed_tokens']} of {r['vocab_size']} tokens x {r['n_embd']} dims "
        f"({r['pos_encoding']} positions, {r['embedding_init']} init)",
        f"integer lattice: W * {r['integer_scale']['scale']:.4g} rounded (largest entry {r['integer_scale']['max_abs_entry']})",
        f"LLL (exact, delta 99/100, {L['seconds']}s): rank {L['rank']}, log orthogonality defect "
        f"{_f(L['log_defect_before'])} -> {_f(L['log_defect_after'])}; mean row norm "
        f"{L['mean_row_norm_before']:.1f} -> {L['mean_row_norm_after']:.1f}"
        + (" (the token rows were already LLL-reduced: same vectors up to sign and order)" if L["basis_unchanged"] else ""),
        f"effective rank: {E['entropy_rank']:.1f} (entropy), {E['participation_ratio']:.1f} (participation ratio), "
        f"{E['rank_99']} singular values hold 99% of the energy (of {E['max_rank']})",
    ]
    if "queries" in Q:
        lines.append(
            f"nearest token, exact CVP (leave-one-out) vs cosine, {Q['queries']} queries in {Q['seconds']}s: CVP answer "
            f"0 for {Q['zero']:.0%}, a single token for {Q['single_token']:.0%}, a combination for {Q['combination']:.0%}; "
            f"agreement with the cosine neighbour {_f(Q['agreement_when_answered'], '.0%')} of answered queries "
            f"({Q['agreement_over_all_queries']:.0%} of all); Euclidean nearest token vs cosine: "
            f"{Q['euclidean_nn_agreement']:.0%} agree")
    else:
        lines.append(f"CVP queries: {Q['note']}")
    if G.get("spearman") is None:
        lines.append(f"prime-GCD similarity: {G.get('note')}")
    else:
        lines.append(f"prime-GCD similarity vs cosine over {G['pairs']:,} pairs ({G['coprime_pairs']:,} coprime): "
                     f"Spearman rho {G['spearman']:+.4f}, permutation p = {G['permutation_p']:.3f} "
                     f"({G['permutations']} token relabelings, null std {G['null_std']:.4f})")
    lines.append(f"mean off-diagonal cosine {r['cosine']['mean_offdiag']:+.4f}")
    if r.get("png"):
        lines.append(f"Ulam-spiral plot: {r['png']}")
    lines.append(f"report: {r['report']} ({r['seconds']}s)")
    return "\n".join(lines)
