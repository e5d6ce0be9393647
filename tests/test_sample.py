import torch

from cllm.config import ModelConfig
from cllm.model import GPT
from cllm.inference import filter_logits, generate


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


# ---- the `cllm sample` command ----

import io
import json
import sys

import pytest

from cllm.checkpoint import save_checkpoint
from cllm.cli import main
from cllm.config import Config
from cllm.tokenizers.char import CharTokenizer

from conftest import SHORT_TEXT


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained char-level model saved as a checkpoint (block_size 32)."""
    tok = CharTokenizer.train([SHORT_TEXT])
    cfg = Config()
    cfg.model = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=32, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", model, tok, {"config": cfg.to_dict(), "step": 0})


def sample(capsys, checkpoint, *flags, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["sample", "--checkpoint", str(checkpoint), "--max-new-tokens", "25", *map(str, flags)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


@pytest.mark.parametrize("flags, message", [
    (["--top-p", "2"], "--top-p must be in (0, 1], got 2"),
    (["--top-p", "0"], "--top-p must be in (0, 1], got 0"),
    (["--temperature", "-0.5"], "--temperature must be >= 0, got -0.5"),
    (["--top-k", "-1"], "--top-k must be >= 0, got -1"),
    (["--max-new-tokens", "-3"], "--max-new-tokens must be >= 0, got -3"),
    (["--num-samples", "0"], "--num-samples must be >= 1, got 0"),
    (["--repetition-penalty", "0"], "--repetition-penalty must be > 0, got 0"),
    (["--stop", ""], "--stop must not be empty"),
    (["--window-keep", "0"], "--window-keep must be >= 1, got 0"),
    (["--window-keep", "33"], "--window-keep must be at most the model's block_size 32, got 33"),
])
def test_bad_sample_flags_are_one_line_errors(capsys, checkpoint, flags, message):
    assert main(["sample", "--checkpoint", str(checkpoint), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cllm: error: ") and err.count("\n") == 1 and message in err, err


def test_num_samples_are_one_batch_equal_to_single_runs(capsys, checkpoint):
    batch = sample(capsys, checkpoint, "--prompt", "To be", "--num-samples", "3", "--seed", "5")
    singles = [sample(capsys, checkpoint, "--prompt", "To be", "--seed", s) for s in (5, 6, 7)]
    assert batch == ("-" * 40 + "\n").join(singles)
    assert len(set(singles)) == 3 and all(s.startswith("To be") for s in singles)
    # past block_size (32): the sliding window, no error
    long = sample(capsys, checkpoint, "--prompt", "To be", "--max-new-tokens", "100", "--json")
    assert len(json.loads(long)["text"]) > 60


def test_prompts_from_stdin_one_generation_per_line(capsys, checkpoint, monkeypatch):
    lines = ["To be", "Or to take arms", "", "And"]
    out = sample(capsys, checkpoint, "--prompt", "-", "--json", "--num-samples", "2", "--batch-size", "3",
                 stdin="\n".join(lines) + "\n", monkeypatch=monkeypatch)
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["prompt"], r["sample"]) for r in records] == [(p, i) for p in lines for i in (0, 1)]
    for r in records:  # each equals that prompt run alone with its seed
        alone = json.loads(sample(capsys, checkpoint, "--prompt", r["prompt"], "--seed", r["sample"], "--json"))
        assert alone["text"] == r["text"]


def test_stop_strings_stream_and_cache_flags(capsys, checkpoint, monkeypatch):
    full = sample(capsys, checkpoint, "--prompt", "To", "--temperature", "0")
    assert full == sample(capsys, checkpoint, "--prompt", "To", "--temperature", "0", "--no-cache")
    stop = full[8:10]
    cut = sample(capsys, checkpoint, "--prompt", "To", "--temperature", "0", "--stop", stop, "--stop", "zzz")
    assert cut == full[:full.index(stop, 2)] + "\n"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal: streamed, same text
    assert sample(capsys, checkpoint, "--prompt", "To", "--temperature", "0", "--num-samples", "2") == \
        sample(capsys, checkpoint, "--prompt", "To", "--temperature", "0", "--num-samples", "2", "--no-stream")


def test_compiled_sampling_gives_the_same_text(capsys, checkpoint, monkeypatch):
    """--compile: prompts of different lengths in one batch, past block_size, the same samples."""
    flags = ["--prompt", "-", "--json", "--max-new-tokens", "60"]
    lines = "To be\nOr to take arms against\n"
    eager = sample(capsys, checkpoint, *flags, stdin=lines, monkeypatch=monkeypatch)
    compiled = sample(capsys, checkpoint, *flags, "--compile", stdin=lines, monkeypatch=monkeypatch)
    assert compiled == eager and len(eager.splitlines()) == 2
