"""cllm chat: the chat session (stop at end of turn, streaming, context trimming) and the CLI through a pipe."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import SHORT_TEXT, tiny_config

from cllm.config import ModelConfig
from cllm.errors import CLLMError
from cllm.finetune.run import finetune
from cllm.finetune.template import END, chat_tokenizer, parse
from cllm.inference.chat import ChatSession
from cllm.model import GPT
from cllm.tokenizers import CharTokenizer
from cllm.training import train


def quiet(*args, **kwargs):
    pass


class Scripted(nn.Module):
    """A GPT whose every next token is forced to follow ``script`` (then END forever): its real
    forward still runs (KV cache and all), the logits are overridden."""

    def __init__(self, gpt: GPT, script: list[int], end: int):
        super().__init__()
        self.gpt, self.script, self.end = gpt, script, end
        self.cfg = gpt.cfg
        self.emitted = 0

    def forward(self, idx, targets=None, kv_cache=None):
        logits, _ = self.gpt(idx, kv_cache=kv_cache)
        nxt = self.script[self.emitted] if self.emitted < len(self.script) else self.end
        self.emitted += 1
        logits = torch.full_like(logits, -1e9)
        logits[:, -1, nxt] = 0.0
        return logits, None


@pytest.fixture
def tok():
    return chat_tokenizer(CharTokenizer.train([SHORT_TEXT]))


def _model(tok, block_size=64):
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=block_size, vocab_size=tok.vocab_size)).eval()


def test_reply_streams_and_stops_at_the_end_of_turn_token(tok):
    end = tok.token_id(END)
    script = tok.encode("or not").tolist() + [end] + tok.encode("to be").tolist()
    model = Scripted(_model(tok), script, end)
    session = ChatSession(model, tok, system="be brief.", temperature=0)
    pieces = []
    assert session.reply("To be", on_text=pieces.append) == "or not"
    assert "".join(pieces) == "or not" and model.emitted == len("or not") + 1  # nothing sampled after END
    assert session.history == [{"role": "user", "content": "To be"}, {"role": "assistant", "content": "or not"}]
    ids = session.prompt_ids()
    assert parse(ids, tok)[0] == {"role": "system", "content": "be brief."}


def test_oldest_turns_are_dropped_when_the_context_fills(tok):
    end = tok.token_id(END)
    model = Scripted(_model(tok, block_size=64), [], end)
    session = ChatSession(model, tok, system="be brief.", max_new_tokens=16, temperature=0)
    words = ["fortune", "arrows", "slings", "troubles", "question", "nobler", "mind", "sea"]
    for w in words:
        model.script, model.emitted = tok.encode(f"the {w}").tolist(), 0
        assert session.reply(f"To be {w}") == f"the {w}"
    assert session.dropped > 0 and session.history[0]["role"] == "user"
    assert session.history[-1] == {"role": "assistant", "content": "the sea"}
    prompt = session.prompt_ids()
    assert len(prompt) <= 64 - 16
    assert parse(prompt, tok)[0]["role"] == "system"  # the system message is kept
    session.clear()
    assert session.history == []
    with pytest.raises(CLLMError, match="too long"):
        session.reply("To be or not to be " * 5)
    assert session.history == []


def test_a_model_without_chat_tokens_is_refused():
    plain = CharTokenizer.train([SHORT_TEXT])
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=plain.vocab_size))
    with pytest.raises(CLLMError, match="not a chat model"):
        ChatSession(model, plain)


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat")
    corpus = tmp / "corpus.txt"
    corpus.write_text(SHORT_TEXT * 40, encoding="utf-8")
    torch.set_num_threads(1)
    train(tiny_config(tmp / "base", data=str(corpus), max_steps=10, block_size=64), log=quiet)
    chats = tmp / "chats.jsonl"
    chats.write_text('{"prompt": "To be", "response": "or not to be"}\n' * 20, encoding="utf-8")
    finetune(tiny_config(tmp / "chat", data=str(chats), init_from=str(tmp / "base"), block_size=64, max_steps=5,
                         warmup_steps=0), log=quiet)
    return tmp


def _chat(args, stdin=""):
    return subprocess.run([sys.executable, "-m", "cllm", "chat", *args], input=stdin, capture_output=True, text=True,
                          timeout=120)


def test_chat_through_a_pipe_answers_each_line_and_exits_cleanly(chat_run):
    r = _chat(["--checkpoint", str(chat_run / "chat"), "--max-new-tokens", "12", "--temperature", "0"],
              "To be\n/clear\n\nWhether\n/quit\nnever read\n")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2  # one reply per message; /clear, the blank line and /quit none
    assert "conversation cleared" in r.stderr and "Traceback" not in r.stderr
    one = _chat(["--checkpoint", str(chat_run / "chat"), "--max-new-tokens", "12", "--temperature", "0", "-p", "To be"])
    assert one.returncode == 0 and one.stdout == r.stdout.splitlines()[0] + "\n"  # the same greedy first reply
    eof = _chat(["--checkpoint", str(chat_run / "chat"), "--max-new-tokens", "4"], "To be\n")  # no /quit: EOF ends it
    assert eof.returncode == 0 and len(eof.stdout.splitlines()) == 1
    base = _chat(["--checkpoint", str(chat_run / "base"), "-p", "To be"])
    assert base.returncode == 2 and base.stderr.count("\n") == 1 and "not a chat model" in base.stderr
