"""`cllm train --init-from`: a run starts from a cllm checkpoint or an exported HF directory."""

import subprocess
import sys

import torch

from cllm.checkpoint import load_model
from cllm.training import train

from conftest import tiny_config


def _weights(run):
    model, tokenizer, cfg = load_model(run)
    return {k: v.clone() for k, v in model.state_dict().items()}, tokenizer, cfg


def _start_of(tmp_path, corpus_file, init_from, name, **overrides):
    """A one-step run from ``init_from`` at a negligible learning rate: its weights are the start."""
    cfg = tiny_config(tmp_path / name, data=str(corpus_file), max_steps=1, lr=1e-12, min_lr=0.0, warmup_steps=0,
                      weight_decay=0.0, init_from=str(init_from), **overrides)
    train(cfg, log=lambda *a: None)
    return _weights(tmp_path / name)


def test_init_from_a_cllm_run_takes_its_weights_model_and_tokenizer(tmp_path, corpus_file):
    train(tiny_config(tmp_path / "base", data=str(corpus_file), max_steps=5), log=lambda *a: None)
    base, base_tok, base_cfg = _weights(tmp_path / "base")
    # the run asks for another shape: the pretrained one wins, but the run's dropout is kept
    start, tok, cfg = _start_of(tmp_path, corpus_file, tmp_path / "base", "tuned", n_layer=3, dropout=0.1)
    assert cfg.model.n_layer == base_cfg.model.n_layer and cfg.model.dropout == 0.1
    assert tok.fingerprint() == base_tok.fingerprint()
    assert base.keys() == start.keys()
    for name in base:
        torch.testing.assert_close(start[name], base[name], rtol=0, atol=1e-6)


def test_init_from_encodes_new_text_with_the_pretrained_tokenizer(tmp_path, corpus_file):
    import pytest

    from cllm.errors import CLLMError

    train(tiny_config(tmp_path / "base", data=str(corpus_file), max_steps=2), log=lambda *a: None)
    # fewer distinct characters than the first corpus: a tokenizer trained on it would differ
    subset = tmp_path / "subset.txt"
    subset.write_text("To be, or not to be\n" * 300, encoding="utf-8")
    _, tok, _ = _start_of(tmp_path, subset, tmp_path / "base", "tuned")
    assert tok.fingerprint() == load_model(tmp_path / "base")[1].fingerprint()
    # a character the pretrained tokenizer cannot encode is named, not silently retrained around
    other = tmp_path / "other.txt"
    other.write_text("ZZZ is new here\n" * 300, encoding="utf-8")
    with pytest.raises(CLLMError, match="'Z'"):
        _start_of(tmp_path, other, tmp_path / "base", "tuned2")


def test_init_from_an_exported_hf_directory(tmp_path, corpus_file):
    from cllm.interop import export_hf

    train(tiny_config(tmp_path / "base", data=str(corpus_file), max_steps=3), log=lambda *a: None)
    model, tokenizer, _ = load_model(tmp_path / "base")
    export_hf(model, tokenizer, tmp_path / "hf")
    base, _, _ = _weights(tmp_path / "base")
    start, _, _ = _start_of(tmp_path, corpus_file, tmp_path / "hf", "tuned")
    for name in base:
        torch.testing.assert_close(start[name], base[name], rtol=0, atol=1e-6)


def test_init_from_nothing_is_a_one_line_error(tmp_path, corpus_file):
    r = subprocess.run([sys.executable, "-m", "cllm", "train", "--preset", "tiny", "--no-progress", "--data",
                        str(corpus_file), "--out", str(tmp_path / "run"), "--init-from", str(tmp_path / "nowhere")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "nowhere" in r.stderr, r.stderr
