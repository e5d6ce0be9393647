"""Crystalline options: fixed positional tables, the crystalline token init, and models using them."""

import numpy as np
import pytest
import torch

from cllm import crystalline
from cllm.config import ModelConfig
from cllm.crystalline import (FIXED_POSITION_TABLES, TOKEN_EMBEDDING_INITS, crystalline_features,
                              position_table, token_embedding_init)
from cllm.model import GPT
from cllm.checkpoint import load_model
from cllm.inference import sample_text
from cllm.training import train

from conftest import tiny_config

KINDS = FIXED_POSITION_TABLES  # sinusoidal, ulam, clock, prime


def min_row_distance(table: np.ndarray) -> float:
    sq = (table**2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * table @ table.T
    np.fill_diagonal(d2, np.inf)
    return float(np.sqrt(max(d2.min(), 0.0)))


def test_crystalline_kinds_are_valid_config_values():
    assert {"ulam", "clock", "prime"} <= set(FIXED_POSITION_TABLES) and "crystalline" in TOKEN_EMBEDDING_INITS
    for kind in ("ulam", "clock", "prime"):
        tiny_config("unused", pos_encoding=kind)
    tiny_config("unused", embedding_init="crystalline")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_embd", [8, 32, 33, 128])
def test_position_table_shape_finite_unit_rms_and_distinct_rows(kind, n_embd):
    table = position_table(kind, 1024, n_embd)
    assert table.shape == (1024, n_embd) and table.dtype == np.float64
    assert np.isfinite(table).all()
    np.testing.assert_allclose(np.sqrt((table**2).mean(axis=1)), 1.0, rtol=1e-12)  # each row unit RMS
    assert min_row_distance(table) > 1e-3  # distinct positions, distinct rows


@pytest.mark.parametrize("kind", KINDS)
def test_position_table_is_deterministic_cached_and_extends_to_any_length(kind):
    a = position_table(kind, 300, 48)
    crystalline._cached_position_table.cache_clear()
    b = position_table(kind, 300, 48)
    assert np.array_equal(a, b)  # rebuilt from scratch: bit-identical
    a[0, 0] = 123.0  # callers get a copy; the cached table stays read-only and intact
    assert position_table(kind, 300, 48)[0, 0] != 123.0
    assert not crystalline._cached_position_table(kind, 300, 48).flags.writeable
    # A pure function of the position: a longer table starts with the shorter one.
    np.testing.assert_array_equal(position_table(kind, 5000, 48)[:300], b)


def test_clock_and_ulam_tables_carry_their_lattice_structure():
    clock = position_table("clock", 48, 32)
    # hour harmonics (the first 11 columns) repeat every 12 positions; the ring columns tell rings apart
    np.testing.assert_allclose(clock[:12, :11], clock[12:24, :11], atol=1e-12)
    assert not np.allclose(clock[:12, 11:], clock[12:24, 11:])
    from cllm.lattice import nth_prime, ulam_coords

    # ulam: column 0 is sin(x * lowest frequency), so its sign is the sign of the spiral's x coordinate
    ulam = position_table("ulam", 200, 64)
    xs = np.array([ulam_coords(t + 1)[0] for t in range(200)])
    assert np.array_equal(np.sign(ulam[:, 0]), np.sign(xs))
    # prime: the first column pair is sin/cos of the prime itself (frequency 1)
    raw = crystalline.prime_table(10, 16)
    np.testing.assert_allclose(raw[:, 0], np.sin([nth_prime(t + 1) for t in range(10)]))


@pytest.mark.parametrize("vocab,n_embd", [(69, 128), (69, 32), (300, 64), (4, 8)])
def test_crystalline_token_init_shape_norm_and_determinism(vocab, n_embd):
    e = token_embedding_init(vocab, n_embd, std=0.02)
    assert e.shape == (vocab, n_embd) and np.isfinite(e).all()
    np.testing.assert_allclose(np.linalg.norm(e), 0.02 * np.sqrt(vocab * n_embd), rtol=1e-12)
    assert np.array_equal(e, token_embedding_init(vocab, n_embd, std=0.02))
    assert min_row_distance(e) > 0  # every token distinct
    assert np.linalg.matrix_rank(e) == min(vocab, n_embd, crystalline_features(vocab).shape[1])


def test_crystalline_init_keeps_feature_geometry_when_the_projection_is_an_isometry():
    feats = crystalline_features(69)
    assert feats.shape[1] <= 128
    e = token_embedding_init(69, 128, std=0.02)
    g_e, g_f = e @ e.T, feats @ feats.T
    np.testing.assert_allclose(g_e / np.trace(g_e), g_f / np.trace(g_f), atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_model_with_fixed_table_gets_gradients_and_is_causal(kind):
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=11, pos_encoding=kind)).double()
    torch.testing.assert_close(model.pos_table.double(), 0.02 * torch.from_numpy(position_table(kind, 16, 16)),
                               rtol=1e-6, atol=1e-9)
    assert "pos_table" not in model.state_dict()  # rebuilt from its definition, never stored
    x = torch.randint(0, 11, (2, 12))
    _, loss = model(x, x)
    loss.backward()
    x2 = x.clone()
    x2[:, 6:] = (x2[:, 6:] + 1) % 11
    torch.testing.assert_close(model(x)[0][:, :6], model(x2)[0][:, :6])


def test_model_with_crystalline_init_copies_the_table_into_wte():
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11, embedding_init="crystalline")
    model = GPT(cfg)
    expected = torch.from_numpy(token_embedding_init(11, 16, std=0.02)).float()
    torch.testing.assert_close(model.wte.weight.detach(), expected)
    assert model.lm_head.weight is model.wte.weight


OPTIONS = [{"pos_encoding": k} for k in ("ulam", "clock", "prime")] + [{"embedding_init": "crystalline"}]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_each_option_trains_and_its_checkpoint_reloads_and_samples_identically(options, tmp_path, corpus_file):
    cfg = tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=50, eval_interval=50,
                      save_interval=50, sample_tokens=0, **options)
    result = train(cfg, log=lambda *a: None)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < first - 0.5, (first, last)  # loss decreases over 50 steps
    model, tokenizer, loaded_cfg = load_model(str(tmp_path / "run"))
    for k, v in options.items():
        assert getattr(loaded_cfg.model, k) == v
    # the same weights in a fresh model (the in-memory path) and the reloaded one sample the same text
    fresh = GPT(loaded_cfg.model)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    a = sample_text(fresh, tokenizer, "To", 60, 0.8, 0, 1.0, seed=7)
    b = sample_text(model, tokenizer, "To", 60, 0.8, 0, 1.0, seed=7)
    c, _, _ = load_model(str(tmp_path / "run"))
    assert a == b == sample_text(c, tokenizer, "To", 60, 0.8, 0, 1.0, seed=7)
    assert len(a) > 2
