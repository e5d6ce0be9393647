import torch

from cllm.config import ModelConfig
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
