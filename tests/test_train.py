import json
import math
import os
import signal

import numpy as np
import pytest
import torch

from cllm import checkpoint as checkpoint_module
from cllm.checkpoint import load_checkpoint
from cllm.config import Config, ModelConfig, TrainConfig
from cllm.errors import CLLMError
from cllm.model import GPT
from cllm.checkpoint import load_model
from cllm.tokenizers.char import CharTokenizer
from cllm.runtime import deterministic_cpu_kernels
from cllm.training import lr_at, make_optimizer, train

from conftest import SHORT_TEXT, tiny_config


def test_tiny_model_overfits_a_200_character_text():
    text = SHORT_TEXT[:200]
    tok = CharTokenizer.train([text])
    ids = torch.as_tensor(tok.encode(text))
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=tok.vocab_size)
    model = GPT(cfg.model)
    opt = make_optimizer(model, TrainConfig(lr=3e-3, weight_decay=0.0))
    starts = torch.arange(0, len(ids) - 33)
    x = torch.stack([ids[s:s + 32] for s in starts])
    y = torch.stack([ids[s + 1:s + 33] for s in starts])
    for _ in range(300):
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert loss.item() < 0.1


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "wsd"])
def test_lr_schedules(schedule):
    t = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100, schedule=schedule, decay_fraction=0.2)
    lrs = [lr_at(s, t) for s in range(100)]
    assert lrs[0] < lrs[9] <= 1e-3 + 1e-12  # warmup rises
    assert max(lrs) <= 1e-3 + 1e-12 and min(lrs[10:]) >= 1e-4 - 1e-12
    if schedule == "constant":
        assert lrs[50] == lrs[99] == 1e-3
    elif schedule == "wsd":
        assert lrs[50] == lrs[79] == 1e-3 and lrs[99] < 2e-4
    else:
        assert lrs[99] < 1.2e-4 and lrs[50] < 1e-3


def test_weight_decay_only_on_matrices():
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=10))
    decay, no_decay = make_optimizer(model, TrainConfig()).param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] > 0
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_training_lowers_loss_and_writes_outputs(tmp_path, corpus_file):
    cfg = tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=60, eval_interval=30)
    result = train(cfg, log=lambda *a: None)
    assert result.step == 60 and not result.interrupted
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:5]) - 0.5
    out = tmp_path / "run"
    for name in ("ckpt/model.safetensors", "ckpt/optimizer.pt", "ckpt/trainer_state.json", "ckpt/tokenizer.json",
                 "best/model.safetensors", "metrics.jsonl", "loss.png", "data/train.bin", "data/meta.json"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "val_loss", "lr", "tokens_per_sec", "elapsed"} <= set(records[0])
    assert [r["step"] for r in records if r["val_loss"] is not None] == [30, 60]
    assert load_checkpoint(out).state["step"] == 60


def _interrupt_at(k):
    def hook(step, loss):
        if step == k:
            signal.raise_signal(signal.SIGINT)
    return hook


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, corpus_file):
    common = dict(data=str(corpus_file), max_steps=30, log_interval=1, eval_interval=10, save_interval=1000,
                  dropout=0.1)
    straight = train(tiny_config(tmp_path / "a", **common), log=lambda *a: None)

    first = train(tiny_config(tmp_path / "b", **common), log=lambda *a: None, on_step=_interrupt_at(13))
    assert first.interrupted and first.step == 13
    second = train(tiny_config(tmp_path / "b", **common), resume=True, log=lambda *a: None)
    assert second.step == 30
    assert first.losses + second.losses == straight.losses

    model_a, _, _ = load_model(str(tmp_path / "a"))
    model_b, _, _ = load_model(str(tmp_path / "b"))
    for (name, pa), (_, pb) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(pa, pb), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))


def test_default_fast_path_with_dropout_resumes_exactly(tmp_path, corpus_file):
    # Compiled bf16, as `cllm train` runs: the hashed dropout keys are drawn inside the compiled graph.
    # Two threads: compiled CPU kernels must also be deterministic (see deterministic_cpu_kernels).
    common = dict(data=str(corpus_file), max_steps=8, log_interval=1, save_interval=1000, dropout=0.2,
                  compile=True, dtype="bfloat16", threads=2)
    straight = train(tiny_config(tmp_path / "a", **common), log=lambda *a: None)
    first = train(tiny_config(tmp_path / "b", **common), log=lambda *a: None, on_step=_interrupt_at(3))
    second = train(tiny_config(tmp_path / "b", **common), resume=True, log=lambda *a: None)
    assert first.losses + second.losses == straight.losses


def test_compiled_cpu_gradients_repeat_bit_for_bit_with_two_threads():
    # Without deterministic kernels Inductor sums the embedding gradient with atomic adds.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=80))
    x = torch.randint(0, 80, (12, 64))
    with deterministic_cpu_kernels(torch.device("cpu")):
        compiled = torch.compile(model)
        grads = []
        for _ in range(4):
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                compiled(x, x)[1].backward()
            grads.append(model.wte.weight.grad.clone())
    torch.set_num_threads(threads)
    assert all(torch.equal(g, grads[0]) for g in grads)
    assert not torch.are_deterministic_algorithms_enabled()  # restored afterwards


def test_deterministic_mode_leaves_new_tensors_unfilled_and_restores_the_setting():
    # use_deterministic_algorithms would NaN-fill every new tensor: pure cost for training (2-3 % per eager step)
    before = torch.utils.deterministic.fill_uninitialized_memory
    with deterministic_cpu_kernels(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.utils.deterministic.fill_uninitialized_memory
    assert torch.utils.deterministic.fill_uninitialized_memory == before


def test_resume_rejects_contradicting_config(tmp_path, corpus_file):
    train(tiny_config(tmp_path / "r", data=str(corpus_file), max_steps=5), log=lambda *a: None)
    with pytest.raises(CLLMError, match="n_embd"):
        train(tiny_config(tmp_path / "r", data=str(corpus_file), max_steps=10, n_embd=64), resume=True)
    # run length may change
    assert train(tiny_config(tmp_path / "r", data=str(corpus_file), max_steps=8), resume=True, log=lambda *a: None).step == 8


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(CLLMError, match="does not exist"):
        train(tiny_config(tmp_path / "nothing"), resume=True)


def test_crash_during_checkpoint_save_keeps_previous_checkpoint(tmp_path, corpus_file, monkeypatch):
    cfg = tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=5)
    train(cfg, log=lambda *a: None)
    before = load_checkpoint(tmp_path / "run")
    assert before.state["step"] == 5

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while writing the optimizer state")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=10), resume=True, log=lambda *a: None)
    after = load_checkpoint(tmp_path / "run")
    assert after.state["step"] == 5 and after.state["files"] == before.state["files"]
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp-" in p.name]


def test_crash_between_renames_falls_back_to_previous_checkpoint(tmp_path, corpus_file, monkeypatch):
    train(tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=5), log=lambda *a: None)
    real_replace = os.replace
    calls = []

    def replace_then_crash(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the previous checkpoint was moved aside; the new one is not yet in place
            raise OSError("simulated power loss")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace_then_crash)
    with pytest.raises(OSError):
        train(tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=10), resume=True, log=lambda *a: None)
    monkeypatch.setattr(checkpoint_module.os, "replace", real_replace)
    assert load_checkpoint(tmp_path / "run").state["step"] == 5


def test_corrupt_checkpoint_is_detected(tmp_path, corpus_file):
    train(tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=3), log=lambda *a: None)
    weights = tmp_path / "run" / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CLLMError, match="hash mismatch"):
        load_checkpoint(tmp_path / "run")
    weights.write_bytes(bytes(data[:-100]))
    with pytest.raises(CLLMError, match="truncated"):
        load_checkpoint(tmp_path / "run")


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path, corpus_file):
    # 2 x 4 accumulated == 1 x 8 when the same 8 sequences are seen: compare the first step's loss
    # and the resulting weights through the public train() path.
    a = train(tiny_config(tmp_path / "a", data=str(corpus_file), max_steps=1, batch_size=8), log=lambda *a: None)
    b = train(tiny_config(tmp_path / "b", data=str(corpus_file), max_steps=1, batch_size=4, grad_accum=2),
              log=lambda *a: None)
    assert math.isclose(a.losses[0], b.losses[0], rel_tol=1e-5)


def test_full_split_evaluation_scores_every_token(tmp_path, corpus_file):
    from cllm.evaluate import score_ids
    from cllm.training import validation_loss

    cfg = tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=3, eval_batches=0)
    result = train(cfg, log=lambda *a: None)
    model, _, _ = load_model(str(tmp_path / "run"))
    from cllm.data import load_prepared

    (val,) = load_prepared(tmp_path / "run" / "data").shards("val")
    total, n = score_ids(model, val, batch_size=3)
    assert n == len(val) - 1
    # the same sum, one window at a time with a plain loop
    ids = torch.as_tensor(val.astype(np.int64))
    block, manual = model.cfg.block_size, 0.0
    for s in range(0, len(ids) - 1, block):
        x, y = ids[s:s + block][None], ids[s + 1:s + block + 1]
        manual += torch.nn.functional.cross_entropy(model(x[:, :len(y)])[0][0], y, reduction="sum").item()
    assert math.isclose(total, manual, rel_tol=1e-5)
    assert math.isclose(result.val_loss, validation_loss(model, val, cfg, torch.device("cpu"), 0, "float32"), rel_tol=1e-5)


def test_muon_trains_and_resumes_exactly(tmp_path, corpus_file):
    common = dict(data=str(corpus_file), max_steps=16, log_interval=1, optimizer="muon", muon_lr=0.02)
    straight = train(tiny_config(tmp_path / "a", **common), log=lambda *a: None)
    assert np.mean(straight.losses[-4:]) < straight.losses[0] - 0.5
    first = train(tiny_config(tmp_path / "b", **common), log=lambda *a: None, on_step=_interrupt_at(7))
    second = train(tiny_config(tmp_path / "b", **common), resume=True, log=lambda *a: None)
    assert first.losses + second.losses == straight.losses


def test_newton_schulz_orthogonalises():
    from cllm.training.optim import newton_schulz

    g = torch.randn(32, 64)
    x = newton_schulz(g, steps=10)
    singular = torch.linalg.svdvals(x)
    assert singular.min() > 0.5 and singular.max() < 1.3
    assert newton_schulz(torch.randn(64, 32)).shape == (64, 32)


def test_activation_checkpointing_gives_the_same_losses(tmp_path, corpus_file):
    common = dict(data=str(corpus_file), max_steps=5, log_interval=1, dropout=0.1)
    plain = train(tiny_config(tmp_path / "a", **common), log=lambda *a: None)
    ckpt = train(tiny_config(tmp_path / "b", activation_checkpointing=True, **common), log=lambda *a: None)
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(plain.losses, ckpt.losses))


@pytest.mark.parametrize("scope", ["blocks", "model"])
def test_compiled_training_matches_eager(tmp_path, corpus_file, scope):
    common = dict(data=str(corpus_file), max_steps=3, log_interval=1)
    eager = train(tiny_config(tmp_path / "a", **common), log=lambda *a: None)
    compiled = train(tiny_config(tmp_path / "b", compile=True, compile_scope=scope, **common), log=lambda *a: None)
    assert all(math.isclose(a, b, rel_tol=1e-3) for a, b in zip(eager.losses, compiled.losses))


def test_block_compilation_compiles_one_graph_for_every_layer():
    """Regional compilation: n_layer blocks share one compiled graph, and the model stays eager
    outside the trainer's forward (validation and sampling compile nothing)."""
    from torch._dynamo.utils import counters

    from cllm.runtime import compile_model

    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=3, n_head=2, n_embd=16, block_size=8, vocab_size=11))
    forward = compile_model(model, True, scope="blocks")
    torch._dynamo.reset()
    counters.clear()
    x = torch.randint(0, 11, (2, 8))
    _, loss = forward(x, x)
    loss.backward()
    assert counters["stats"]["unique_graphs"] == 1
    assert all(block._compiled_call_impl is None for block in model.blocks)
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    _, eager_loss = model(x, x)
    eager_loss.backward()
    assert counters["stats"]["unique_graphs"] == 1  # the eager call compiled nothing
    assert torch.allclose(loss, eager_loss, atol=1e-5)
    assert all(torch.allclose(g, p.grad, atol=1e-5) for g, p in zip(grads, model.parameters()))


def test_compiling_trusts_the_cpus_reported_vector_isa_unless_the_environment_says(monkeypatch):
    """The probe programs Inductor would build and load to prove each ISA cost seconds of a cold
    first compile; cllm skips them, but an explicit TORCHINDUCTOR_VEC_ISA_OK is left alone."""
    import torch._inductor.config as inductor_config

    from cllm.runtime import torch_compile

    model = torch.nn.Linear(2, 2)
    monkeypatch.setattr(inductor_config.cpp, "vec_isa_ok", None)
    monkeypatch.setenv("TORCHINDUCTOR_VEC_ISA_OK", "0")
    torch_compile(model)
    assert inductor_config.cpp.vec_isa_ok is None
    monkeypatch.delenv("TORCHINDUCTOR_VEC_ISA_OK")
    compiled = torch_compile(model)
    assert inductor_config.cpp.vec_isa_ok is True
    x = torch.randn(3, 2)
    assert torch.allclose(compiled(x), model(x), atol=1e-6)


@pytest.mark.parametrize("scope", ["model", "blocks"])
def test_broken_compiler_falls_back_to_eager(tmp_path, corpus_file, monkeypatch, capsys, scope):
    def broken_compile(model, **kwargs):
        def forward(*args):
            raise RuntimeError("no working C++ compiler")
        return forward

    monkeypatch.setattr(torch, "compile", broken_compile)
    common = dict(data=str(corpus_file), max_steps=4, log_interval=1)
    eager = train(tiny_config(tmp_path / "a", **common), log=lambda *a: None)
    fallback = train(tiny_config(tmp_path / "b", compile=True, compile_scope=scope, **common), log=lambda *a: None)
    assert fallback.losses == eager.losses
    assert "torch.compile failed" in capsys.readouterr().out
