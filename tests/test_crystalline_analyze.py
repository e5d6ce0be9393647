"""`cllm crystal analyze`: lattice view of a trained token-embedding matrix."""

import argparse
import json
import math

import numpy as np
import pytest

from cllm.crystal_analyze import (cvp_queries, cosine_matrix, effective_rank, gcd_spearman,
                                  log_orthogonality_defect)
from cllm.cli.crystal import register
from cllm.errors import CLLMError
from cllm.training import train

from conftest import tiny_config


def run_cli(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    register(sub)
    args = p.parse_args(argv)
    return args.func(args)


def test_orthogonality_defect_is_exact_on_small_bases():
    assert log_orthogonality_defect([[3, 0], [0, 5]]) == pytest.approx(0.0, abs=1e-12)
    assert log_orthogonality_defect([[1, 0], [1, 1]]) == pytest.approx(0.5 * math.log(2))
    assert log_orthogonality_defect([[1, 2], [2, 4]]) is None  # dependent rows
    big = [[10**40, 1], [1, 10**40]]  # exact integer determinant: no float overflow
    assert log_orthogonality_defect(big) == pytest.approx(0.0, abs=1e-12)


def test_cvp_queries_classify_answers():
    B = [[10, 0, 0, 0], [0, 10, 0, 0], [10, 10, 1, 0], [11, 1, 0, 1]]
    cos = cosine_matrix(np.array(B, dtype=float))
    out = cvp_queries(B, cos, [2, 3])
    by_token = {d["token"]: d for d in out["details"]}
    assert by_token[2]["cvp"] == "combination" and by_token[2]["cvp_terms"] == 2  # closest: b0 + b1
    assert by_token[3]["cvp"] == "single_token" and by_token[3]["cvp_token"] == 0  # closest: b0
    assert by_token[3]["cosine_nn"] == 0 and out["agreement_when_answered"] > 0
    orth = [[5, 0, 0], [0, 5, 0], [0, 0, 5]]  # nothing is closer than the origin
    assert cvp_queries(orth, cosine_matrix(np.eye(3)), [0, 1, 2])["zero"] == 1.0


def test_effective_rank_and_gcd_spearman():
    er = effective_rank(np.diag([1.0, 1.0, 1.0, 0.0]))
    assert er["entropy_rank"] == pytest.approx(3.0) and er["rank_99"] == 3
    V = 40
    n = np.arange(1, V + 1)
    g = np.log(np.gcd(n[:, None], n[None, :]).astype(float))
    cos = g / g.max() + 1e-6 * np.random.default_rng(0).standard_normal((V, V))
    cos = (cos + cos.T) / 2
    r = gcd_spearman(cos, permutations=50, seed=0)
    assert r["spearman"] > 0.5 and r["permutation_p"] <= 1 / 50
    noise = np.random.default_rng(1).standard_normal((V, V))
    assert abs(gcd_spearman((noise + noise.T) / 2, 50, 0)["spearman"]) < 0.1


def test_analyze_command_on_a_trained_checkpoint(tmp_path, corpus_file, capsys):
    cfg = tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=20, eval_interval=20, sample_tokens=0)
    train(cfg, log=lambda *a: None)
    capsys.readouterr()
    out = tmp_path / "analysis"
    assert run_cli(["crystal", "analyze", "--checkpoint", str(tmp_path / "run"), "--out", str(out),
                    "--queries", "8", "--permutations", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    V = report["vocab_size"]
    assert report["analysed_tokens"] == V and report["n_embd"] == 32
    L = report["lll"]
    assert L["rank"] == min(V, 32)
    assert L["log_defect_after"] is not None and L["log_defect_after"] >= 0
    if L["log_defect_before"] is not None:
        assert L["log_defect_after"] <= L["log_defect_before"] + 1e-9  # LLL never makes it worse here
    assert 1 <= report["effective_rank"]["entropy_rank"] <= min(V, 32)
    assert -1 <= report["prime_gcd_vs_cosine"]["spearman"] <= 1
    assert (out / "ulam.png").stat().st_size > 1000 and json.loads((out / "report.json").read_text())["lll"] == L
    # the text report names every part
    assert run_cli(["crystal", "analyze", "--checkpoint", str(tmp_path / "run"), "--out", str(out),
                    "--queries", "4", "--permutations", "5", "--no-png"]) == 0
    text = capsys.readouterr().out
    for part in ("LLL", "effective rank", "CVP", "Spearman"):
        assert part in text


def test_analyze_bad_input_raises_cllm_error(tmp_path):
    with pytest.raises(CLLMError):
        run_cli(["crystal", "analyze", "--checkpoint", str(tmp_path / "missing")])
    with pytest.raises(CLLMError):
        run_cli(["crystal", "analyze", "--checkpoint", str(tmp_path), "--bits", "0"])
