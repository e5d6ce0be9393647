import json

import numpy as np
import pytest

from cllm.config import DataConfig
from cllm.data import Batches, find_text_files, load_prepared, prepare, read_text
from cllm.errors import CLLMError
from cllm.tokenizers import EOS_ID, load_tokenizer, save_tokenizer, tokenizer_from_json
from cllm.tokenizers.char import CharTokenizer


def test_char_tokenizer_round_trip_and_reload(tmp_path):
    text = "Hello, wörld! ünïcödé ✓ 🎭\nnew line"
    tok = CharTokenizer.train([text])
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and tok.decode(ids) == text
    save_tokenizer(tok, tmp_path / "tok.json")
    again = load_tokenizer(tmp_path / "tok.json")
    assert again.fingerprint() == tok.fingerprint() and np.array_equal(again.encode(text), ids)
    with pytest.raises(CLLMError, match="not in the tokenizer's vocabulary"):
        tok.encode("xyz€")


def test_tokenizer_json_must_be_valid():
    with pytest.raises(CLLMError):
        tokenizer_from_json("{not json")
    with pytest.raises(CLLMError):
        tokenizer_from_json('{"kind": "nope"}')


def test_prepare_writes_memmaps_and_is_cached(tmp_path, corpus_file):
    cfg = DataConfig(data=str(corpus_file))
    first = prepare(cfg, tmp_path / "d")
    text = corpus_file.read_text()
    n_train = int(len(text) * 0.9)
    assert first.meta["dtype"] == "uint16"
    assert first.meta["train_tokens"] == n_train and first.meta["val_tokens"] == len(text) - n_train
    assert first.tokenizer.decode(first.tokens("train")) == text[:n_train]
    assert first.tokenizer.decode(first.tokens("val")) == text[n_train:]
    mtime = (tmp_path / "d" / "train.bin").stat().st_mtime_ns
    again = prepare(cfg, tmp_path / "d")
    assert (tmp_path / "d" / "train.bin").stat().st_mtime_ns == mtime  # reused, not rewritten
    assert again.fingerprint == first.fingerprint
    corpus_file.write_text(text + "More text.\n")
    changed = prepare(cfg, tmp_path / "d")
    assert changed.fingerprint != first.fingerprint
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_directory_corpus_skips_binary_and_hidden_files_and_separates_documents(tmp_path, capsys):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("first document " * 20)
    (root / "sub" / "b.md").write_text("second document " * 20)
    (root / "image.bin").write_bytes(b"\x89PNG\0\0\x01binary")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main")
    files = find_text_files(root)
    assert [p.name for p in files] == ["a.txt", "b.md"]
    assert "skipping binary file" in capsys.readouterr().err
    prepared = prepare(DataConfig(data=str(root)), tmp_path / "d")
    # Two documents: split by document, one in each split, so no <eos> is needed inside either.
    assert prepared.meta["split"]["by"] == "document" and len(prepared.meta["split"]["val_documents"]) == 1
    texts = {prepared.tokenizer.decode(prepared.tokens(s)) for s in ("train", "val")}
    assert texts == {"first document " * 20, "second document " * 20}
    assert not any((prepared.tokens(s) == EOS_ID).any() for s in ("train", "val"))


def test_split_fraction_is_configurable(tmp_path, corpus_file):
    p = prepare(DataConfig(data=str(corpus_file), val_fraction=0.25), tmp_path / "d")
    total = p.meta["train_tokens"] + p.meta["val_tokens"]
    assert p.meta["train_tokens"] == int(total * 0.75)


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"abc", "fewer than block_size")])
def test_prepare_rejects_empty_or_short_corpus(tmp_path, content, message):
    path = tmp_path / "c.txt"
    path.write_bytes(content)
    with pytest.raises(CLLMError, match=message):
        prepare(DataConfig(data=str(path)), tmp_path / "d", min_tokens=65)
    assert not (tmp_path / "d").exists()


def test_invalid_utf8_names_file_and_offset_and_can_be_replaced(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good text " * 10 + b"\xff\xfe more")
    with pytest.raises(CLLMError, match=r"bad.txt: invalid UTF-8 at byte offset 100 "):
        read_text(path)
    assert "\ufffd" in read_text(path, errors="replace")


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(CLLMError, match="not found"):
        find_text_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CLLMError, match="no text files"):
        find_text_files(tmp_path / "empty")


def test_truncated_prepared_data_is_detected(tmp_path, corpus_file):
    prepare(DataConfig(data=str(corpus_file)), tmp_path / "d")
    train_bin = tmp_path / "d" / "train.bin"
    train_bin.write_bytes(train_bin.read_bytes()[:-2])
    with pytest.raises(CLLMError, match="truncated"):
        load_prepared(tmp_path / "d")


def test_batches_shapes_targets_and_resumable_state():
    tokens = np.arange(1000, dtype=np.uint16)
    b = Batches(tokens, batch_size=4, block_size=16, seed=3)
    x, y = b.get()
    assert x.shape == y.shape == (4, 16) and x.dtype.is_floating_point is False
    assert (y - x == 1).all()  # y is x shifted by one position
    state = json.loads(json.dumps(b.state()))
    nxt = b.get()[0]
    c = Batches(tokens, batch_size=4, block_size=16, seed=99)
    c.set_state(state)
    assert (c.get()[0] == nxt).all()
