"""The data pipeline at scale: JSONL, globs, several inputs, shards, streaming, parallel encoding, the
document split, caching, and every bad input (one-line CLLMError, exit 2, nothing half-written)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cllm.data.pipeline as prep
import cllm.data.sources as sources
from cllm.cli import main
from cllm.config import Config, DataConfig
from cllm.data import Batches, iter_documents, load_prepared, prepare
from cllm.data.shards import HEADER
from cllm.errors import CLLMError
from cllm.tokenizers import EOS_ID, tokenizer_class

from conftest import SHORT_TEXT

LINES = [line for line in SHORT_TEXT.splitlines() if line]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def all_tokens(p):
    return [p.tokenizer.decode(p.tokens(s)) for s in ("train", "val")]


def expect_cli_error(capsys, argv, message):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("cllm: error:") and err.strip().count("\n") == 0, err
    assert message in err, err


# ---- inputs ----

def test_jsonl_documents_split_by_document_and_recorded(tmp_path):
    docs = [f"{i}: {LINES[i % len(LINES)]} " * 5 for i in range(20)]
    path = write_jsonl(tmp_path / "c.jsonl", [{"body": d, "id": i} for i, d in enumerate(docs)])
    p = prepare(DataConfig(data=str(path), text_field="body", val_fraction=0.2, split_seed=7), tmp_path / "d")
    split = p.meta["split"]
    assert split["by"] == "document" and split["documents"] == 20 and split["seed"] == 7
    val = split["val_documents"]
    assert len(val) == 4 and val == sorted(val)
    # Each split is its documents in order, joined by <eos>; no document is cut.
    train_text, val_text = all_tokens(p)
    eos = p.tokenizer.decode([EOS_ID])  # decodes to nothing; split on the ids instead
    assert eos == ""
    for split_name, chosen in (("train", [i for i in range(20) if i not in val]), ("val", val)):
        ids = np.asarray(p.tokens(split_name))
        pieces = np.split(ids, np.flatnonzero(ids == EOS_ID))
        got = [p.tokenizer.decode(piece[piece != EOS_ID]) for piece in pieces]
        assert got == [docs[i] for i in chosen]
    # The same seed gives the same split; another seed another one.
    again = prepare(DataConfig(data=str(path), text_field="body", val_fraction=0.2, split_seed=7), tmp_path / "e")
    other = prepare(DataConfig(data=str(path), text_field="body", val_fraction=0.2, split_seed=8), tmp_path / "f")
    assert again.meta["split"]["val_documents"] == val and other.meta["split"]["val_documents"] != val
    assert again.fingerprint == p.fingerprint and other.fingerprint != p.fingerprint


def test_several_inputs_globs_and_jsonl_in_directories(tmp_path):
    root = tmp_path / "code"
    (root / "src").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "src" / "a.py").write_text("def a():\n    return 1\n" * 10)
    (root / "src" / "b.md").write_text("# notes\n" * 10)
    (root / "tests" / "t.py").write_text("def test():\n    pass\n" * 10)
    extra = write_jsonl(tmp_path / "x.jsonl", [{"text": "json doc " * 10}])
    srcs = sources.resolve_sources(f"{root}{os.pathsep}{extra}", include="*.py", exclude="tests/*")
    assert [s.path.name for s in srcs] == ["a.py", "x.jsonl"] and [s.jsonl for s in srcs] == [False, True]
    assert list(iter_documents([str(root)], include="*.md")) == ["# notes\n" * 10]
    with pytest.raises(CLLMError, match="excluded by --include/--exclude"):
        sources.find_text_files(root, include="*.rs")
    # Through the CLI: --data twice, --include / --exclude, JSONL inside a directory.
    (root / "data.jsonl").write_text(json.dumps({"text": "from the jsonl " * 10}) + "\n")
    out = tmp_path / "d"
    assert main(["prepare", "--data", str(root), "--data", str(extra), "--include", "*.py,*.jsonl",
                 "--exclude", "tests/*", "--out", str(out), "--no-progress"]) == 0
    meta = load_prepared(out).meta
    assert [os.path.basename(s["path"]) for s in meta["sources"]] == ["data.jsonl", "a.py", "x.jsonl"]
    assert [s["format"] for s in meta["sources"]] == ["jsonl", "text", "jsonl"]
    assert meta["split"]["documents"] == 3


def test_tokenizer_cli_reads_jsonl_through_the_data_module(tmp_path, capsys):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "one two"}, {"text": "three"}])
    tok = tmp_path / "t.json"
    assert main(["tokenizer", "train", "--data", str(path), "--kind", "word", "--out", str(tok)]) == 0
    capsys.readouterr()
    assert main(["tokenizer", "stats", "--tokenizer", str(tok), "--data", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 2


# ---- bad input ----

def test_bad_jsonl_lines_name_the_line_or_are_skipped_and_counted(tmp_path, capsys):
    good = [{"text": LINES[i % len(LINES)] * 3} for i in range(10)]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join([json.dumps(good[0]), "{not json", json.dumps(good[1]), json.dumps({"title": "x"}),
                               "", json.dumps({"text": 5}), *map(json.dumps, good[2:])]) + "\n")
    with pytest.raises(CLLMError, match=r"c.jsonl line 2 is not valid JSON .*--skip-bad-lines"):
        prepare(DataConfig(data=str(path)), tmp_path / "d")
    path2 = write_jsonl(tmp_path / "c2.jsonl", [good[0], {"title": "x"}])
    with pytest.raises(CLLMError, match=r"c2.jsonl line 2 has no field 'text' \(use --text-field\)"):
        prepare(DataConfig(data=str(path2)), tmp_path / "d")
    assert not (tmp_path / "d").exists()
    capsys.readouterr()
    p = prepare(DataConfig(data=str(path), skip_bad_lines=True), tmp_path / "d")
    assert "skipped 3 bad JSONL line(s) in" in capsys.readouterr().err
    assert p.meta["notes"] and "first: line 2" in p.meta["notes"][0]
    ids = np.concatenate([p.tokens("train"), p.tokens("val")])
    assert (ids == EOS_ID).sum() == 10 - 2  # 10 good documents in two splits
    expect_cli_error(capsys, ["prepare", "--data", path, "--out", tmp_path / "e"], "line 2 is not valid JSON")
    assert not (tmp_path / "e").exists()


def test_invalid_utf8_strict_replace_skip(tmp_path, capsys):
    path = tmp_path / "bad.txt"
    path.write_bytes(SHORT_TEXT.encode() * 3 + b"\xff\xfe" + SHORT_TEXT.encode() * 3)
    offset = len(SHORT_TEXT.encode()) * 3
    with pytest.raises(CLLMError, match=rf"bad.txt: invalid UTF-8 at byte offset {offset} .*--errors replace"):
        prepare(DataConfig(data=str(path)), tmp_path / "d")
    replaced = prepare(DataConfig(data=str(path), errors="replace"), tmp_path / "r")
    assert "\ufffd\ufffd" in "".join(all_tokens(replaced))
    skipped = prepare(DataConfig(data=str(path), errors="skip"), tmp_path / "s")
    assert "".join(all_tokens(skipped)) == SHORT_TEXT * 6
    assert f"(first at byte offset {offset}) dropped" in capsys.readouterr().err
    # In JSONL the offset is the file's, not the line's.
    jl = tmp_path / "bad.jsonl"
    jl.write_bytes(b'{"text": "fine"}\n{"text": "bro\xc3\x28ken"}\n')
    with pytest.raises(CLLMError, match=r"bad.jsonl: invalid UTF-8 at byte offset 30 "):
        prepare(DataConfig(data=str(jl)), tmp_path / "j")
    # Streaming reads blocks: an error far into a file still reports the absolute offset.
    big = tmp_path / "big.txt"
    big.write_bytes(b"line of text\n" * 500 + b"\x80")
    old = sources.BLOCK_BYTES
    sources.BLOCK_BYTES = 1000
    try:
        with pytest.raises(CLLMError, match=r"byte offset 6500 "):
            prepare(DataConfig(data=str(big)), tmp_path / "b")
    finally:
        sources.BLOCK_BYTES = old
    expect_cli_error(capsys, ["prepare", "--data", path, "--out", tmp_path / "x"], f"byte offset {offset}")


def test_empty_documents_are_skipped_and_an_empty_corpus_is_an_error(tmp_path, capsys):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text(SHORT_TEXT * 5)
    (root / "b.txt").write_text("")
    (root / "c.jsonl").write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"text": SHORT_TEXT * 5}) + "\n")
    p = prepare(DataConfig(data=str(root), val_fraction=0.4), tmp_path / "d")
    assert "skipped 2 empty document(s)" in capsys.readouterr().err
    assert p.meta["split"]["documents"] == 2  # a.txt and the non-empty JSONL record
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x.jsonl").write_text(json.dumps({"text": ""}) + "\n")
    (tmp_path / "e" / "y.txt").write_text("")
    with pytest.raises(CLLMError, match="corpus is empty"):
        prepare(DataConfig(data=str(tmp_path / "e")), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not [q for q in tmp_path.iterdir() if ".tmp-" in q.name]


def test_wrong_header_and_truncated_shards(tmp_path, capsys, corpus_file):
    d = tmp_path / "d"
    prepare(DataConfig(data=str(corpus_file)), d)
    val = d / "val.bin"
    raw = val.read_bytes()
    val.write_bytes(b"NOTCLLM\0" + raw[8:])
    with pytest.raises(CLLMError, match="not a cllm token shard"):
        load_prepared(d)
    val.write_bytes(raw[:-3])
    with pytest.raises(CLLMError, match="val.bin is truncated"):
        load_prepared(d)
    val.write_bytes(raw[:10])
    with pytest.raises(CLLMError, match="no complete header"):
        load_prepared(d)
    head = bytearray(raw)
    head[12:16] = (3).to_bytes(4, "little")  # 3-byte tokens: unsupported
    val.write_bytes(bytes(head))
    with pytest.raises(CLLMError, match="unsupported header"):
        load_prepared(d)
    expect_cli_error(capsys, ["train", "--preset", "tiny", "--no-progress", "--data", d, "--out", tmp_path / "run"],
                     "unsupported header")
    assert not (tmp_path / "run").exists()
    (d / "meta.json").write_text("{broken")
    with pytest.raises(CLLMError, match="incomplete or corrupt"):
        load_prepared(d)


def test_tokenizer_vocabulary_larger_than_the_model(tmp_path, capsys, corpus_file):
    expect_cli_error(capsys, ["train", "--preset", "tiny", "--no-progress", "--data", corpus_file, "--vocab-size", "10",
                              "--out", tmp_path / "run"], "smaller than the tokenizer's")


@pytest.mark.parametrize("flags, message", [
    (["--workers", "-1"], "workers must be 0"),
    (["--shard-tokens", "1", "--block-size", "8"], "shard_tokens (1) must be more than block_size"),
    (["--errors", "ignore"], "invalid choice"),
    (["--text-field", ""], "text_field must not be empty"),
])
def test_bad_prepare_settings(tmp_path, capsys, corpus_file, flags, message):
    expect_cli_error(capsys, ["prepare", "--data", corpus_file, "--out", tmp_path / "d", *flags], message)


# ---- shards, streaming, parallel ----

def test_shards_stream_and_batches_sample_across_them(tmp_path, corpus_file, monkeypatch):
    whole = prepare(DataConfig(data=str(corpus_file), tokenizer="word"), tmp_path / "whole")
    monkeypatch.setattr(sources, "BLOCK_BYTES", 300)  # many blocks per document
    sharded = prepare(DataConfig(data=str(corpus_file), tokenizer="word", shard_tokens=500), tmp_path / "sharded")
    assert len(sharded.meta["shards"]["train"]) > 2 and all(n <= 500 for _, n in sharded.meta["shards"]["train"])
    assert sharded.tokenizer.fingerprint() == whole.tokenizer.fingerprint()
    for split in ("train", "val"):
        assert np.array_equal(sharded.tokens(split), whole.tokens(split))
    assert sharded.fingerprint != whole.fingerprint  # shard layout changes what batches are drawn
    b = Batches(sharded.shards("train"), batch_size=64, block_size=16, seed=1)
    flat = np.asarray(whole.tokens("train"))
    x, y = b.get()
    assert torch_equal_shift(x, y, flat)
    state = json.loads(json.dumps(b.state()))
    nxt = b.get()
    c = Batches(sharded.shards("train"), batch_size=64, block_size=16, seed=5)
    c.set_state(state)
    again = c.get()
    assert (again[0] == nxt[0]).all() and (again[1] == nxt[1]).all()


def torch_equal_shift(x, y, flat) -> bool:
    """Every row is a real window of the token stream and y is x shifted by one."""
    s = flat.tobytes()
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        if not (row_x[1:] == row_y[:-1]).all():
            return False
        window = np.concatenate([row_x, row_y[-1:]]).astype(flat.dtype).tobytes()
        if window not in s:
            return False
    return True


def test_batches_with_one_shard_draw_exactly_as_before():
    tokens = np.arange(5000, dtype=np.uint16)
    b = Batches([tokens], batch_size=8, block_size=32, seed=11)
    rng = np.random.Generator(np.random.PCG64(11))
    for _ in range(3):
        starts = rng.integers(0, len(tokens) - 32, size=8)
        assert (b.get()[0].numpy() == tokens[starts[:, None] + np.arange(32)]).all()
    with pytest.raises(CLLMError, match="fewer than block_size"):
        Batches([tokens[:10], tokens[:20]], batch_size=2, block_size=32, seed=0)


@pytest.mark.parametrize("kind", ["char", "byte", "word", "bpe"])
def test_parallel_encoding_equals_serial(tmp_path, kind, monkeypatch):
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(12):
        (root / f"{i:02d}.txt").write_text((SHORT_TEXT + f"document {i} ünïcødé\n") * (3 + i))
    cfg = dict(data=str(root), tokenizer=kind, tokenizer_vocab_size=400)
    serial = prepare(DataConfig(**cfg, workers=1), tmp_path / "serial")
    monkeypatch.setattr(prep, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(prep, "TASK_CHARS", 2000)
    parallel = prepare(DataConfig(**cfg, workers=2), tmp_path / "parallel")
    assert parallel.fingerprint == serial.fingerprint  # workers is not part of the data's identity
    for split in ("train", "val"):
        assert np.array_equal(parallel.tokens(split), serial.tokens(split))


def chunked(text: str, block: int) -> list[str]:
    """The pieces the reader cuts ``text`` into at a block size of ``block`` characters."""
    chunks, rest = [], text
    while len(rest) > block:
        cut = sources._safe_cut(rest[:block])
        if cut == 0:
            break
        chunks.append(rest[:cut])
        rest = rest[cut:]
    return chunks + [rest]


def assert_chunks_encode_like_the_whole(text: str, block: int) -> None:
    chunks = chunked(text, block)
    assert "".join(chunks) == text
    for kind, tok in TOKS.items():
        got = np.concatenate([tok.encode_with_unk(c) for c in chunks]) if text else np.zeros(0)
        assert np.array_equal(got, tok.encode_with_unk(text)), (kind, chunks)


TRAIN = "ab ,.\n\t\u00e9\u3000's X1 ab ab ab's\n\nX  \n\n\nY \n \n  Z\t\n"
TOKS = {
    # Vocabularies that hold multi-character whitespace tokens, so a cut inside a run would show.
    "word": tokenizer_class("word").train([TRAIN * 3], vocab_size=60),
    "bpe": tokenizer_class("bpe").train([TRAIN * 20 + "x.\n\n y" * 50 + "x  \n\ty" * 50], vocab_size=400),
    "char": tokenizer_class("char").train([TRAIN]),
}


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab ,.\n\t\u00e9\u3000'sXY1")), max_size=400),
       st.integers(min_value=3, max_value=60))
def test_streamed_chunks_encode_like_the_whole_text(text, block):
    assert_chunks_encode_like_the_whole(text, block)


def test_chunks_never_end_inside_or_after_a_whitespace_run():
    bpe = TOKS["bpe"]
    # "\n\n" is one token at the end of a string but two before a word: a cut there would show.
    assert len(bpe.encode_reference("x.\n\n")) == 3 and len(bpe.encode_reference("x.\n\nS")) == 5
    # "\n\n" then a word: GPT-2 splits the run as "\n" + "\n" before a word but not at the end of a
    # string, so the reader must not cut after the second newline (it did once, on shakespeare.txt).
    text = "make haste.\n\nSIR M.\nMy good lord,\n  I guess\n\n\nX Y  Z"
    for block in range(3, len(text) + 1):
        assert_chunks_encode_like_the_whole(text, block)
    assert chunked("a.\n\nSIR M.\nMy", 12) == ["a.\n\nSIR M.\n", "My"]


def test_tokenizer_trains_on_an_even_sample_of_a_large_corpus(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", [{"text": f"doc{i} " + LINES[i % len(LINES)] * 40} for i in range(1000)])
    assert path.stat().st_size > 1_400_000
    p = prepare(DataConfig(data=str(path), tokenizer="word", tokenizer_sample_mb=1), tmp_path / "d")
    info = p.meta["tokenizer_training"]
    assert info["sample"].startswith("even sample") and 900_000 < info["trained_on_chars"] < 1_100_000
    vocab = set(p.tokenizer.tokens)
    assert "doc5" in vocab and "doc995" in vocab  # the sample spans the corpus, not just its start


# ---- caching ----

def test_cache_survives_touch_and_rebuilds_on_change(tmp_path, corpus_file):
    cfg = DataConfig(data=str(corpus_file))
    first = prepare(cfg, tmp_path / "d")
    shard = tmp_path / "d" / "train.bin"
    mtime = shard.stat().st_mtime_ns
    os.utime(corpus_file, ns=(1, 1))  # same bytes, new mtime: contents decide, nothing re-tokenised
    again = prepare(cfg, tmp_path / "d")
    assert shard.stat().st_mtime_ns == mtime and again.fingerprint == first.fingerprint
    assert load_prepared(tmp_path / "d").meta["sources"][0]["mtime_ns"] == 1
    bpe = prepare(DataConfig(data=str(corpus_file), tokenizer="bpe", tokenizer_vocab_size=300), tmp_path / "d")
    assert bpe.fingerprint != first.fingerprint and bpe.meta["tokenizer_kind"] == "bpe"
    raw = corpus_file.read_bytes()
    corpus_file.write_bytes(raw[:-5] + b"XXXXX")  # same size, new content, new mtime
    changed = prepare(DataConfig(data=str(corpus_file), tokenizer="bpe", tokenizer_vocab_size=300), tmp_path / "d")
    assert changed.fingerprint != bpe.fingerprint


def test_config_accepts_the_new_data_settings():
    cfg = Config()
    cfg.data.errors = "skip"
    cfg.data.workers = 2
    cfg.validate()
    assert HEADER.size == 32


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_streamed_prepare_of_one_document_equals_encoding_it_whole(tmp_path, monkeypatch, kind):
    paragraphs = [f"SPEAKER {i}.\n{LINES[i % len(LINES)]}\n  {LINES[(i + 1) % len(LINES)]}  \n\n" for i in range(60)]
    path = tmp_path / "play.txt"
    path.write_text("".join(paragraphs) + "[Exeunt.]\n\n\n", encoding="utf-8")
    monkeypatch.setattr(sources, "BLOCK_BYTES", 256)
    p = prepare(DataConfig(data=str(path), tokenizer=kind, tokenizer_vocab_size=400), tmp_path / "d")
    ids = np.concatenate([p.tokens("train"), p.tokens("val")]).astype(np.int64)
    text = path.read_text(encoding="utf-8")
    whole = p.tokenizer.encode_reference(text) if kind == "bpe" else p.tokenizer.encode(text)
    assert np.array_equal(ids, whole)


def test_a_file_without_newlines_still_streams_in_blocks(tmp_path, monkeypatch):
    path = tmp_path / "one-line.txt"
    text = " ".join(f"word{i % 37}, ünï" for i in range(400))
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(sources, "BLOCK_BYTES", 200)
    chunks = [c for _, c in sources.iter_chunks(sources.resolve_sources(str(path))[0])]
    assert len(chunks) > 10 and max(map(len, chunks)) < 400 and "".join(chunks) == text
    p = prepare(DataConfig(data=str(path), tokenizer="bpe", tokenizer_vocab_size=300), tmp_path / "d")
    ids = np.concatenate([p.tokens("train"), p.tokens("val")]).astype(np.int64)
    assert np.array_equal(ids, p.tokenizer.encode_reference(text))
