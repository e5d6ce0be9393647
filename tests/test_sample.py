import torch

from cllm.config import ModelConfig
from cllm.model import GPT
from cllm.sample import filter_logits, generate


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = filter_logits(logits, top_k=2).isfinite()
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = filter_logits(probs.log(), top_p=0.75).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.75, 0.5 + 0.3 >= 0.75
    assert filter_logits(probs.log(), top_p=0.1).isfinite().tolist() == [[True, False, False, False]]


def test_generation_is_seeded_and_stops_at_eos():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=6)).eval()
    start = torch.zeros(1, 1, dtype=torch.long)
    run = lambda seed: generate(model, start, 20, 1.0, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1), run(1)) and run(1).shape == (1, 21)  # longer than block_size: cropped context
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[3] = 10.0  # make <eos> (id 3) near-certain
    out = generate(model, start, 20, 1.0, eos_id=3, generator=torch.Generator().manual_seed(0))
    assert out.shape[1] < 21 and out[0, -1].item() == 3
