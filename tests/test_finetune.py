"""Fine-tuning: chat template, response-only loss, LoRA, the finetune run (resume), bad data."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import SHORT_TEXT, tiny_config

from cllm.checkpoint import load_model
from cllm.config import ModelConfig
from cllm.errors import CLLMError
from cllm.finetune.conversations import (IGNORE, ConversationBatches, pack_row, read_conversations,
                                         split_conversations, to_xy)
from cllm.finetune.lora import adapter_state, apply_lora, lora_modules, merged_state
from cllm.finetune.run import ADAPTERS, LoraSpec, finetune
from cllm.finetune.template import ASSISTANT, CHAT_TOKENS, END, USER, chat_tokenizer, grow_vocab, parse, render
from cllm.model import GPT
from cllm.tokenizers import ByteTokenizer, CharTokenizer, tokenizer_from_json
from cllm.training import train

CONV = [{"role": "system", "content": "be brief."}, {"role": "user", "content": "To be"},
        {"role": "assistant", "content": "or not to be"}, {"role": "user", "content": "Whether"},
        {"role": "assistant", "content": "tis nobler"}]


def quiet(*args, **kwargs):
    pass


@pytest.fixture
def char_chat():
    return chat_tokenizer(CharTokenizer.train([SHORT_TEXT]))


# ---- template and tokenizer ----

@pytest.mark.parametrize("base", [CharTokenizer.train([SHORT_TEXT]), ByteTokenizer()], ids=["char", "byte"])
def test_template_tokens_are_appended_and_render_parse_round_trip(base):
    tok = chat_tokenizer(base)
    assert tok.vocab_size == base.vocab_size + len(CHAT_TOKENS)
    assert [tok.token_id(t) for t in CHAT_TOKENS] == list(range(base.vocab_size, base.vocab_size + 4))
    assert np.array_equal(tok.encode(SHORT_TEXT), base.encode(SHORT_TEXT))  # every existing id unchanged
    literal = tok.encode_with_unk("<|user|>")  # text never makes a reserved id
    assert np.array_equal(literal, base.encode_with_unk("<|user|>")) and literal.max() < base.vocab_size
    again = tokenizer_from_json(tok.to_json())
    assert again.to_json() == tok.to_json() and again.vocab_size == tok.vocab_size
    assert tokenizer_from_json(base.to_json()).fingerprint() == base.fingerprint()
    ids, mask = render(CONV, tok)
    assert parse(ids, tok) == CONV
    assert tok.decode(ids) == "".join(m["content"] for m in CONV)  # reserved ids decode to nothing
    # the mask: exactly the assistant texts and their closing <|end|>
    learned = ids[mask]
    end = tok.token_id(END)
    assert tok.decode(learned) == "or not to betis nobler" and list(learned).count(end) == 2
    assert ids[0] == tok.bos_id and not mask[0]
    assert not mask[ids == tok.token_id(ASSISTANT)].any() and not mask[ids == tok.token_id(USER)].any()


def test_grow_vocab_keeps_every_existing_row():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=20, tie_embeddings=False))
    grown = grow_vocab(model, 24, seed=1)
    assert grown.cfg.vocab_size == 24
    for name in ("wte.weight", "lm_head.weight"):
        old, new = model.state_dict()[name], grown.state_dict()[name]
        assert torch.equal(new[:20], old) and new.shape == (24, 16)
        assert not torch.allclose(new[20], new[21])  # distinct new rows
    x = torch.randint(0, 20, (2, 8))
    assert torch.allclose(model(x)[0], grown(x)[0][..., :20], atol=1e-6)


# ---- response-only loss ----

def test_loss_ignores_every_target_outside_assistant_turns(char_chat):
    torch.manual_seed(0)
    ids, mask = render(CONV, char_chat)
    length = len(ids) + 3
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=length - 1, vocab_size=char_chat.vocab_size))
    x, y = to_xy([pack_row([_conv(ids, mask)], length)], "cpu")
    learned = mask[1:].tolist() + [False] * (length - len(ids))
    assert ((y[0] != IGNORE).tolist() == learned)
    loss = model(x, y)[1]
    # targets at user/system/template positions changed to anything: the same loss
    full = torch.from_numpy(pack_row([_conv(ids, mask)], length)[0][1:])[None]
    scrambled = full.clone()
    off = ~torch.tensor(learned)[None]
    scrambled[off] = torch.randint(0, char_chat.vocab_size, (int(off.sum()),))
    assert not torch.equal(scrambled, full)
    for targets in (full, scrambled):
        assert torch.equal(model(x, targets.masked_fill(off, IGNORE))[1], loss)
    # and it is the mean over assistant tokens only, unlike the loss on every target
    logits = model(x)[0][0]
    manual = F.cross_entropy(logits[torch.tensor(learned)], full[0][torch.tensor(learned)])
    assert torch.allclose(loss, manual) and not torch.allclose(loss, F.cross_entropy(logits, full[0]))


def _conv(ids, mask):
    from cllm.finetune.conversations import Conversation

    return Conversation(ids, mask, 1)


def _write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def test_batches_pack_whole_conversations_and_resume_exactly(tmp_path, char_chat):
    records = [{"prompt": "To be" * (i % 3 + 1), "response": "or not" + " to be" * (i % 4)} for i in range(30)]
    data = read_conversations(_write(tmp_path / "c.jsonl", records), char_chat, block_size=96)
    train_set, val_set = split_conversations(data, 0.2, seed=1)
    assert len(train_set.conversations) == 24 and len(val_set.conversations) == 6
    assert {c.line for c in train_set.conversations}.isdisjoint(c.line for c in val_set.conversations)
    batches = ConversationBatches(train_set, 4, 96, seed=3, device="cpu")
    x, y = batches.get()
    assert x.shape == y.shape == (4, 96)
    end = char_chat.token_id(END)
    assert int((y == end).sum()) > 4  # rows hold several conversations
    for _ in range(5):
        batches.get()
    state = batches.state()
    after = [batches.get() for _ in range(3)]
    again = ConversationBatches(train_set, 4, 96, seed=3, device="cpu")
    again.set_state(json.loads(json.dumps(state)))
    for (xa, ya), (xb, yb) in zip(after, (again.get() for _ in range(3))):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ---- bad data ----

@pytest.mark.parametrize("line, reason", [
    ("{not json", "not JSON"),
    ({"text": "hello"}, "no messages"),
    ({"messages": []}, "no messages"),
    ({"messages": [{"role": "user", "content": "To be"}, {"role": "wizard", "content": "or"}]}, "unknown role 'wizard'"),
    ({"messages": [{"role": "user", "content": "To be"}, {"role": "assistant", "content": "  "}]},
     "empty assistant turn"),
    ({"prompt": "To be", "response": ""}, "empty assistant turn"),
    ({"prompt": "To be " * 20, "response": "or not to be"}, "longer than the context"),
])
def test_bad_lines_stop_with_the_line_number_or_are_skipped_and_counted(tmp_path, char_chat, line, reason):
    good = {"prompt": "To be", "response": "or not"}
    path = _write(tmp_path / "c.jsonl", [good, good, line, good])
    with pytest.raises(CLLMError, match=f"c.jsonl:3: .*{reason}"):
        read_conversations(path, char_chat, block_size=64)
    data = read_conversations(path, char_chat, block_size=64, skip_bad_lines=True)
    assert len(data.conversations) == 3 and [n for n, _ in data.skipped] == [3]


# ---- LoRA ----

def test_lora_merged_equals_unmerged_and_only_adapters_have_gradients():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=30, mlp="swiglu")
    model = GPT(cfg)
    x = torch.randint(0, 30, (3, 12))
    before = model(x)[0]
    wrapped = apply_lora(model, rank=4, alpha=8.0)
    assert len(wrapped) == 4 * cfg.n_layer
    assert torch.equal(model(x)[0], before)  # B starts at zero: the base model exactly
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_b.normal_(0, 0.1)
    model(x, x)[1].backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable and with_grad and all(".lora_" in n for n in with_grad)
    assert len(adapter_state(model)) == 2 * len(wrapped)
    plain = GPT(cfg)
    plain.load_state_dict(merged_state(model))  # strict: exactly the plain model's keys
    with torch.no_grad():
        assert torch.allclose(plain(x)[0], model(x)[0], atol=1e-5)
        assert not torch.allclose(plain(x)[0], before, atol=1e-3)


# ---- the run ----

@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    corpus = tmp / "corpus.txt"
    corpus.write_text(SHORT_TEXT * 40, encoding="utf-8")
    torch.set_num_threads(1)
    train(tiny_config(tmp / "run", data=str(corpus), max_steps=20, block_size=64), log=quiet)
    lines = SHORT_TEXT.splitlines()
    records = [{"prompt": lines[i % 5][:12], "response": lines[(i + 1) % 5][:20]} for i in range(40)]
    records += [{"messages": [{"role": "system", "content": "be brief."}, {"role": "user", "content": "To be"},
                              {"role": "assistant", "content": "or not to be"}]}] * 5
    chats = _write(tmp / "chats.jsonl", records)
    return tmp / "run", chats


def _ft_config(out, base_run, **overrides):
    base, chats = base_run
    common = dict(data=str(chats), init_from=str(base), block_size=64, max_steps=8, log_interval=1, eval_interval=4,
                  save_interval=1000, warmup_steps=2, lr=3e-3, min_lr=3e-4)
    return tiny_config(out, **{**common, **overrides})


def _interrupt_at(k):
    def hook(step, loss):
        if step == k:
            signal.raise_signal(signal.SIGINT)
    return hook


@pytest.mark.parametrize("lora", [None, LoraSpec(4, 8.0)], ids=["full", "lora"])
def test_finetune_resumes_exactly_and_loads_as_a_plain_checkpoint(tmp_path, base_run, lora):
    straight = finetune(_ft_config(tmp_path / "a", base_run, dropout=0.1), lora=lora, log=quiet)
    first = finetune(_ft_config(tmp_path / "b", base_run, dropout=0.1), lora=lora, log=quiet,
                     on_step=_interrupt_at(3))
    assert first.interrupted and first.step == 3
    second = finetune(_ft_config(tmp_path / "b", base_run, dropout=0.1), lora=lora, resume=True, log=quiet)
    assert first.losses + second.losses == straight.losses
    assert straight.losses[-1] < straight.losses[0]

    model_a, tok_a, cfg_a = load_model(tmp_path / "a")
    model_b, _, _ = load_model(tmp_path / "b")
    for (name, pa), (_, pb) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(pa, pb), name
    base_model, base_tok, _ = load_model(base_run[0])
    assert cfg_a.model.vocab_size == base_model.cfg.vocab_size + 4 == tok_a.vocab_size
    assert np.array_equal(tok_a.encode(SHORT_TEXT), base_tok.encode(SHORT_TEXT))
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    assert (tmp_path / "a" / "ckpt" / ADAPTERS).is_file() == (lora is not None)
    if lora:  # frozen base: every non-adapter weight is the base's (the embedding grown by the new rows)
        base_state = base_model.state_dict()
        changed = [n for n, t in model_a.state_dict().items() if not torch.equal(t[:len(base_state[n])], base_state[n])]
        assert changed and all(n.startswith("blocks.") and n.endswith("weight") for n in changed)


def test_finetune_cli_reports_a_bad_line_in_one_line(tmp_path, base_run):
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "To be", "response": "or"}, {"messages": [{"role": "bot"}]}])
    r = subprocess.run([sys.executable, "-m", "cllm", "finetune", "--checkpoint", str(base_run[0]), "--data", str(bad),
                        "--out", str(tmp_path / "o"), "--no-progress", "--no-compile"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "bad.jsonl:2: message 1 is not an object with role and content" in r.stderr
