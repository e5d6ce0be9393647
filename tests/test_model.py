import math

import pytest
import torch
import torch.nn.functional as F

from cllm.config import ModelConfig
from cllm.kernels import causal_attention, dropout, hashed_keep
from cllm.model import GPT


def tiny_model(dtype=torch.float32, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=8, block_size=8, vocab_size=11, dropout=0.0, **kw)
    return GPT(cfg).to(dtype)


def test_gradients_match_finite_differences_for_every_parameter():
    model = tiny_model(torch.float64)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 11, (3, 8), generator=gen)
    y = torch.randint(0, 11, (3, 8), generator=gen)
    model.zero_grad()
    model(x, y)[1].backward()
    eps = 1e-6
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} received no gradient"
        flat, grad = p.data.view(-1), p.grad.view(-1)
        for i in torch.randint(0, flat.numel(), (4,), generator=gen).tolist():
            orig = flat[i].item()
            with torch.no_grad():
                flat[i] = orig + eps
                plus = model(x, y)[1].item()
                flat[i] = orig - eps
                minus = model(x, y)[1].item()
                flat[i] = orig
            numeric = (plus - minus) / (2 * eps)
            assert abs(numeric - grad[i].item()) <= 1e-6 + 1e-4 * abs(numeric), (name, i, numeric, grad[i].item())


def test_untied_head_and_no_bias_also_get_gradients():
    model = tiny_model(tie_embeddings=False, bias=False)
    x = torch.randint(0, 11, (2, 8))
    model(x, x)[1].backward()
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" in names and not any(n.endswith(".bias") for n in names)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_batched_forward_equals_per_sequence_forward():
    model = tiny_model().eval()
    x = torch.randint(0, 11, (5, 8))
    batched, _ = model(x)
    for b in range(5):
        single, _ = model(x[b:b + 1])
        torch.testing.assert_close(batched[b:b + 1], single, atol=1e-5, rtol=1e-5)


def test_attention_is_causal():
    model = tiny_model().eval()
    x = torch.randint(0, 11, (1, 8))
    x2 = x.clone()
    x2[0, 5:] = (x2[0, 5:] + 1) % 11
    a, _ = model(x)
    b, _ = model(x2)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_tied_embeddings_share_storage_and_residual_init_is_scaled():
    model = tiny_model()
    assert model.lm_head.weight is model.wte.weight
    std = model.blocks[0].attn.c_proj.weight.std().item()
    assert std < 0.02 / (2 * 2) ** 0.5 * 1.6


OPTIONS = [
    {"pos_encoding": "rope"}, {"pos_encoding": "none"}, {"pos_encoding": "sinusoidal"},
    {"norm": "rmsnorm"}, {"qk_norm": True}, {"mlp": "relu2"}, {"mlp": "swiglu"},
    {"logit_softcap": 15.0}, {"tie_embeddings": False, "bias": False},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_each_architecture_option_is_causal_batch_consistent_and_gets_gradients(options):
    model = tiny_model(torch.float64, **options)
    x = torch.randint(0, 11, (3, 8))
    logits, loss = model(x, x)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        for b in range(3):
            torch.testing.assert_close(model(x[b:b + 1])[0], model(x)[0][b:b + 1])
        x2 = x.clone()
        x2[:, 5:] = (x2[:, 5:] + 1) % 11
        torch.testing.assert_close(model(x)[0][:, :5], model(x2)[0][:, :5])
    if options.get("logit_softcap"):
        assert logits.abs().max() < options["logit_softcap"]


def test_rope_makes_attention_depend_on_relative_position_only():
    from cllm.model import apply_rotary, rotary_tables

    cos, sin = rotary_tables(16, 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def score(i, j):
        qi = apply_rotary(q, cos[i:i + 1], sin[i:i + 1])
        kj = apply_rotary(k, cos[j:j + 1], sin[j:j + 1])
        return (qi * kj).sum().item()
    assert abs(score(3, 1) - score(10, 8)) < 1e-5 and abs(score(3, 1) - score(3, 2)) > 1e-6


def test_zero_init_projections_start_blocks_as_identity():
    model = tiny_model(zero_init_proj=True)
    assert all(b.attn.c_proj.weight.abs().sum() == 0 and b.mlp.c_proj.weight.abs().sum() == 0 for b in model.blocks)


def test_swiglu_keeps_parameter_count_close_to_gelu():
    gelu = GPT(ModelConfig(n_layer=1, n_head=4, n_embd=96, block_size=8, vocab_size=11))
    swiglu = GPT(ModelConfig(n_layer=1, n_head=4, n_embd=96, block_size=8, vocab_size=11, mlp="swiglu"))
    assert abs(swiglu.num_params() / gelu.num_params() - 1) < 0.1


# --- the compiled-CPU fast path: hashed dropout and written-out attention -------------------------

def test_hashed_mask_is_identical_eager_and_compiled():
    # The hash relies on wrapping int32 multiplies; a miscompiled Inductor kernel would show here.
    key = torch.tensor([-123456789], dtype=torch.int32)
    shape = torch.Size([3, 5, 67, 67])  # odd sizes reach the compiled kernel's scalar tail too
    compiled = torch.compile(hashed_keep, fullgraph=True)
    assert torch.equal(compiled(shape, 0.2, key), hashed_keep(shape, 0.2, key))


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_hashed_mask_keeps_one_minus_p_and_looks_independent(p):
    n = 1 << 20
    masks = [hashed_keep(torch.Size([n]), p, torch.tensor([k], dtype=torch.int32)).float()
             for k in (0, 1, 2**30 + 7)]
    sigma = math.sqrt(p * (1 - p) / n)
    for m in masks:
        assert abs(m.mean().item() - (1 - p)) < 5 * sigma
        neighbours = torch.corrcoef(torch.stack([m[:-1], m[1:]]))[0, 1].item()
        assert abs(neighbours) < 5 / math.sqrt(n)
    # Keys that differ in one bit must give unrelated masks, not shifted or flipped copies.
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert abs(torch.corrcoef(torch.stack([masks[a], masks[b]]))[0, 1].item()) < 5 / math.sqrt(n)
        assert abs(torch.corrcoef(torch.stack([masks[a][:-1], masks[b][1:]]))[0, 1].item()) < 5 / math.sqrt(n)


def test_compiled_cpu_dropout_is_hashed_scaled_and_fresh_each_call():
    f = torch.compile(lambda x: dropout(x, 0.25, True), fullgraph=True)
    x = torch.ones(4096)
    torch.manual_seed(0)
    a, b = f(x), f(x)
    assert set(a.unique().tolist()) == {0.0, torch.tensor(1 / 0.75).item()}
    assert not torch.equal(a, b)
    torch.manual_seed(0)
    assert torch.equal(f(x), a)  # the key comes from torch's generator: seeded runs repeat
    assert torch.equal(dropout(x, 0.25, False), x)


def test_dropout_takes_the_hashed_path_only_when_compiled_for_cpu(monkeypatch):
    x = torch.randn(64, 64)
    torch.manual_seed(1)
    standard = dropout(x, 0.5, True)
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.5, True), standard)  # eager: plain F.dropout
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.manual_seed(1)
    key = torch.randint(-(2**31), 2**31 - 1, (1,), dtype=torch.int32)
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.5, True), x * (hashed_keep(x.shape, 0.5, key) * 2.0))


@pytest.mark.parametrize("T", [1, 5, 16])
def test_eager_cpu_attention_matches_sdpa(T):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, T, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    got = causal_attention(q, k, v, 0.0)
    assert got.dtype == torch.float64 and torch.allclose(got, expected, atol=1e-12)
    for g, e in zip(torch.autograd.grad(got.square().sum(), (q, k, v)), grads):
        assert torch.allclose(g, e, atol=1e-12)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the model runs: bf16 q, k, v; float32 scores
        low = causal_attention(*(t.detach().bfloat16() for t in (q, k, v)), 0.0)
    assert low.dtype == torch.bfloat16 and torch.allclose(low.double(), expected, atol=0.05)


def test_eager_cpu_attention_dropout_keeps_each_weight_with_probability_1_minus_p():
    torch.manual_seed(0)
    q = k = torch.zeros(1, 1, 64, 4)  # uniform weights 1/(i+1) on row i
    v = torch.ones(1, 1, 64, 4)
    out = torch.stack([causal_attention(q, k, v, 0.5) for _ in range(400)])
    # each row's output is the kept share of its weights, rescaled by 2: mean 1 over draws
    assert abs(out.mean().item() - 1.0) < 0.02 and out.std().item() > 0.1
    assert torch.allclose(causal_attention(q, k, v, 0.0), torch.ones(1, 1, 64, 4))


@pytest.mark.parametrize("T", [5, 16])
def test_compiled_cpu_attention_matches_sdpa(T):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, T, 8, requires_grad=True) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    got = torch.compile(causal_attention, fullgraph=True)(q, k, v, 0.0)
    assert torch.allclose(got, expected, atol=1e-5)
    for g, e in zip(torch.autograd.grad(got.square().sum(), (q, k, v)), grads):
        assert torch.allclose(g, e, atol=1e-4)
