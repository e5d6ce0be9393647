"""KV-cached generation: equal to recomputing the whole context, batched, past block_size, streamed."""

import pytest
import torch

from cllm.config import ModelConfig
from cllm.inference import (KVCache, StreamDecoder, apply_repetition_penalty, compiled_decode_step, decode_steps,
                            generate, generate_text, left_pad, sample_text)
from cllm.model import GPT
from cllm.tokenizers.byte import ByteTokenizer
from cllm.tokenizers.char import CharTokenizer

from conftest import SHORT_TEXT

POS_ENCODINGS = ["rope", "learned", "sinusoidal", "ulam", "clock", "prime", "none"]
VARIANTS = {
    "default": {},
    "no-bias rmsnorm swiglu qk-norm": dict(bias=False, norm="rmsnorm", mlp="swiglu", qk_norm=True),
    "relu2 softcap untied": dict(mlp="relu2", logit_softcap=5.0, tie_embeddings=False),
}


def make_model(vocab_size=13, block_size=16, seed=0, **options) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=block_size, vocab_size=vocab_size, **options)
    model = GPT(cfg).eval()
    with torch.no_grad():  # larger than the init's weights, so attention is far from uniform
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


def run(model, idx, n, **options):
    steps = list(decode_steps(model, idx, n, temperature=0.0, **options))
    return torch.stack([s.ids for s in steps], 1), torch.stack([s.logits for s in steps], 1)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_cached_logits_equal_uncached_at_every_position(pos_encoding, variant):
    model = make_model(pos_encoding=pos_encoding, **VARIANTS[variant])
    idx = torch.randint(0, 13, (2, 5), generator=torch.Generator().manual_seed(1))
    ids, logits = run(model, idx, 11)  # 5 + 11 = block_size: the cache never slides
    ref_ids, ref_logits = run(model, idx, 11, use_cache=False)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    assert torch.equal(ids, ref_ids)
    # and the logits are those of the plain (training) forward over each whole context
    seq = torch.cat([idx, ids], 1)
    torch.testing.assert_close(logits, model(seq[:, :-1])[0][:, 4:], atol=1e-5, rtol=0)


def test_the_cache_masks_when_queries_are_fewer_than_keys():
    """Feeding a prompt in three pieces (T = 4, 3, 1 against 4, 7, 8 keys) gives the one-pass logits."""
    model = make_model()
    idx = torch.randint(0, 13, (3, 8), generator=torch.Generator().manual_seed(2))
    cache = KVCache.for_model(model, 3)
    with torch.no_grad():
        pieces = [model(idx[:, a:b], kv_cache=cache)[0] for a, b in ((0, 4), (4, 7), (7, 8))]
        whole = model(idx)[0]
    torch.testing.assert_close(torch.cat(pieces, 1), whole, atol=1e-5, rtol=0)
    assert cache.pos == 8
    with pytest.raises(ValueError, match="overflow"):
        model(torch.cat([idx, idx[:, :1]], 1), kv_cache=cache)  # 8 + 9 > 16


def test_a_batch_of_three_prompts_equals_three_single_runs():
    model = make_model(pos_encoding="learned")
    prompts = [[5, 6, 7, 8, 9, 10], [4], [12, 11, 3]]
    idx, pad = left_pad(prompts)
    assert pad.tolist() == [0, 5, 3] and idx[1, :5].tolist() == [0] * 5
    ids, logits = run(model, idx, 9, pad=pad)
    for b, p in enumerate(prompts):
        one_ids, one_logits = run(model, torch.tensor([p]), 9)
        assert torch.equal(ids[b], one_ids[0])
        torch.testing.assert_close(logits[b], one_logits[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="equal length"):
        run(model, idx, 2, pad=pad, use_cache=False)


def test_sampled_rows_of_a_batch_equal_single_runs_and_are_seeded():
    tok = CharTokenizer.train([SHORT_TEXT])
    model = make_model(vocab_size=tok.vocab_size, block_size=32)
    prompts = ["To be", "Or", "And by opposing"]
    batch = generate_text(model, tok, prompts, 20, temperature=1.0, top_k=8, seed=[3, 4, 5])
    singles = [generate_text(model, tok, [p], 20, temperature=1.0, top_k=8, seed=s)[0] for p, s in zip(prompts, (3, 4, 5))]
    assert batch == singles and all(0 < len(t) <= 20 for t in batch)
    assert sample_text(model, tok, "To be", 30, seed=7) == sample_text(model, tok, "To be", 30, seed=7)
    assert sample_text(model, tok, "To be", 30, seed=7) != sample_text(model, tok, "To be", 30, seed=8)
    assert sample_text(model, tok, "To be", 30, seed=7).startswith("To be")


def window_reference(model, prompt, n, keep):
    """Greedy generation under the documented window rule, recomputing each context in full."""
    block, seq = model.cfg.block_size, list(prompt)
    start, ids, logits = max(0, len(seq) - block), [], []
    for _ in range(n):
        if len(seq) - start > block:
            start = len(seq) - keep
        out = model(torch.tensor([seq[start:]]))[0][0, -1]
        logits.append(out)
        ids.append(int(out.argmax()))
        seq.append(ids[-1])
    return torch.tensor(ids), torch.stack(logits)


@pytest.mark.parametrize("pos_encoding", ["rope", "learned", "prime"])
@pytest.mark.parametrize("prompt_len", [3, 20])
def test_generation_goes_on_past_block_size_with_a_sliding_window(pos_encoding, prompt_len):
    model = make_model(block_size=8, pos_encoding=pos_encoding)
    prompt = torch.randint(0, 13, (1, prompt_len), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for keep in (None, 5, 8):
            ids, logits = run(model, prompt, 30, window_keep=keep)
            ref_ids, ref_logits = window_reference(model, prompt[0].tolist(), 30, keep or 6)
            assert torch.equal(ids[0], ref_ids)
            torch.testing.assert_close(logits[0], ref_logits, atol=1e-5, rtol=0)
    # keeping block_size tokens is the exact sliding window: the uncached loop's tokens
    assert torch.equal(run(model, prompt, 30, window_keep=8)[0], run(model, prompt, 30, use_cache=False)[0])
    with pytest.raises(ValueError, match="window_keep"):
        run(model, prompt, 3, window_keep=9)


def test_per_row_eos_and_repetition_penalty():
    model = make_model()
    with torch.no_grad():
        model.lm_head.weight[3] = 0.0
        model.lm_head.weight[3, 0] = 50.0  # <eos> (id 3) wherever the final feature 0 is large
    idx, pad = left_pad([[5, 6, 7], [8, 9]])
    out = generate(model, idx, 12, 1.0, eos_id=3, generator=torch.Generator().manual_seed(0), pad=pad)
    for row in out[:, 3:].tolist():  # after a row's <eos>, only <eos>
        if 3 in row:
            assert set(row[row.index(3):]) == {3}

    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0]]
    model = make_model(seed=1)
    ids, logits = run(model, idx, 10, pad=pad, repetition_penalty=1.8)
    for b, prompt in enumerate([[5, 6, 7], [8, 9]]):  # each choice is the argmax of the penalised logits
        seen = torch.zeros(13, dtype=torch.bool)
        seen[prompt] = True  # the prompt's tokens, never the padding (id 0)
        for t in range(10):
            penalised = apply_repetition_penalty(logits[b, t][None], seen[None], 1.8)[0]
            assert ids[b, t] == penalised.argmax()
            seen[ids[b, t]] = True
    assert not torch.equal(ids, run(model, idx, 10, pad=pad)[0])


def test_stop_strings_end_a_row_before_the_stop_text():
    tok = CharTokenizer.train([SHORT_TEXT])
    model = make_model(vocab_size=tok.vocab_size, block_size=64, seed=4)
    full = generate_text(model, tok, ["To", "Or"], 40, temperature=0.0)
    stop = full[0][10:12]
    cut = generate_text(model, tok, ["To", "Or"], 40, temperature=0.0, stop=[stop, "never-there"])
    assert cut[0] == full[0][:full[0].index(stop)] and stop not in cut[0]
    assert cut[1] == (full[1][:full[1].index(stop)] if stop in full[1] else full[1])
    pieces = []
    assert generate_text(model, tok, ["To"], 40, temperature=0.0, stop=[stop], on_text=lambda b, t: pieces.append(t)) == cut[:1]
    assert "".join(pieces) == cut[0]


def test_stream_decoder_holds_back_incomplete_utf8_and_stop_prefixes():
    text = "naïve café — 日本語 😀 fin"
    tok = ByteTokenizer()
    dec, pieces = StreamDecoder(tok), []
    for i in tok.encode(text).tolist():
        pieces.append(dec.push([i]))
    pieces.append(dec.flush())
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    assert pieces[tok.encode("naïve café — 日").size - 1].endswith("日")  # shown once its last byte arrives
    # a stop string split over tokens: its beginning is held back, and the stop text never shown
    dec, pieces = StreamDecoder(tok, stop=["本語"]), []
    for i in tok.encode(text).tolist():
        pieces.append(dec.push([i]))
    pieces.append(dec.flush())
    assert "".join(pieces) == dec.text == "naïve café — 日" and dec.stopped
    # an invalid byte is shown as U+FFFD once it cannot begin a character any more
    dec = StreamDecoder(tok)
    assert dec.push([4 + 0xFF]) == "" and dec.push(tok.encode("a").tolist()) == "\ufffda"


class Scripted(torch.nn.Module):
    """A stand-in model whose k-th forward call puts all probability on token script[k]."""

    def __init__(self, script: list[int], vocab_size: int):
        super().__init__()
        self.cfg = ModelConfig(n_layer=1, n_head=1, n_embd=4, block_size=64, vocab_size=vocab_size)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # device and dtype for the cache
        self.script, self.calls = script, 0

    def forward(self, idx, targets=None, kv_cache=None):
        kv_cache.begin(idx.size(1))
        kv_cache.advance()
        logits = torch.full((idx.size(0), idx.size(1), self.cfg.vocab_size), -1e9)
        logits[:, -1, self.script[self.calls]] = 0.0
        self.calls += 1
        return logits, None


def test_streamed_generation_with_a_byte_tokenizer_is_utf8_safe():
    tok = ByteTokenizer()
    text = "日本語 😀 naïve — fin"
    pieces = {0: [], 1: []}
    model = Scripted(tok.encode(text).tolist() + [tok.eos_id], tok.vocab_size)
    texts = generate_text(model, tok, ["x", "longer"], 40, temperature=0.0, on_text=lambda b, t: pieces[b].append(t))
    assert texts == [text, text]
    for b in (0, 1):  # every piece is whole characters: no U+FFFD for a half-arrived one
        assert "".join(pieces[b]) == text and not any("\ufffd" in p for p in pieces[b])
    assert pieces[0][:3] == ["日", "本", "語"]
    model = Scripted(tok.encode(text).tolist() + [tok.eos_id], tok.vocab_size)
    assert generate_text(model, tok, ["x"], 40, temperature=0.0, stop=["ï"]) == ["日本語 😀 na"]


def test_streaming_with_a_bpe_tokenizer():
    from cllm.tokenizers.bpe import BPETokenizer

    text = "日本語のテキスト 😀😀 naïve " * 20
    tok = BPETokenizer.train([text], vocab_size=300)
    dec, pieces = StreamDecoder(tok), []
    ids = tok.encode("naïve 日本語 😀!").tolist()
    for i in ids:
        pieces.append(dec.push([i]))
    pieces.append(dec.flush())
    assert "".join(pieces) == "naïve 日本語 😀!" and not any("\ufffd" in p for p in pieces)


def eager_fixed_shape_step(model):
    """decode_steps' step_fn that runs the fixed-shape view eagerly (what the compiled step traces)."""
    def step(ids, cache):
        view = cache.fixed_step()
        logits = model(ids, kv_cache=view)[0]
        view.finish()
        return logits
    return step


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_the_fixed_shape_step_equals_the_growing_cache(pos_encoding, variant):
    """Attention over the whole cache with unfilled columns masked, position as a tensor: the same
    logits as the cache that grows, for left-padded rows and across window slides."""
    model = make_model(block_size=8, pos_encoding=pos_encoding, **VARIANTS[variant])
    idx, pad = left_pad([[5, 6, 7, 8], [4], [12, 11]])
    ids, logits = run(model, idx, 14, pad=pad)
    f_ids, f_logits = run(model, idx, 14, pad=pad, step_fn=eager_fixed_shape_step(model))
    assert torch.equal(ids, f_ids)
    torch.testing.assert_close(logits, f_logits, atol=1e-5, rtol=0)


def test_a_full_cache_has_no_fixed_shape_step():
    model = make_model(block_size=8)
    cache = KVCache.for_model(model, 1)
    with torch.no_grad():
        model(torch.zeros(1, 8, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="full"):
        cache.fixed_step()


@pytest.mark.parametrize("pos_encoding, variant", [("rope", "default"), ("learned", "no-bias rmsnorm swiglu qk-norm")])
def test_compiled_decode_step_matches_eager_with_one_graph(pos_encoding, variant):
    """One compiled graph serves every position and the steps after each window slide; left
    padding adds one more (its mask is built differently), reused by every padded step."""
    from torch._dynamo.utils import counters

    model = make_model(block_size=8, pos_encoding=pos_encoding, **VARIANTS[variant])
    step_fn = compiled_decode_step(model)
    torch._dynamo.reset()
    counters.clear()
    for prompts, graphs in (([[5, 6, 7], [4, 3, 2]], 1), ([[5, 6, 7], [4]], 2)):
        idx, pad = left_pad(prompts)
        ids, logits = run(model, idx, 14, pad=pad)
        c_ids, c_logits = run(model, idx, 14, pad=pad, step_fn=step_fn)
        assert torch.equal(ids, c_ids)
        torch.testing.assert_close(logits, c_logits, atol=1e-5, rtol=0)
        assert counters["stats"]["unique_graphs"] == graphs


def test_a_broken_compiler_leaves_the_decode_step_eager(monkeypatch):
    def broken(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("no working C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken)
    model = make_model()
    idx = torch.randint(0, 13, (1, 4), generator=torch.Generator().manual_seed(6))
    notes = []
    c_ids, c_logits = run(model, idx, 6, step_fn=compiled_decode_step(model, log=notes.append))
    ids, logits = run(model, idx, 6)
    assert torch.equal(ids, c_ids) and torch.equal(logits, c_logits)
    assert len(notes) == 1 and "running eagerly" in notes[0]
