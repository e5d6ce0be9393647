"""The ``tokenizer`` CLI, through register() on an argparse parser, and main()'s error handling."""

from __future__ import annotations

import argparse
import json

import pytest

from cllm.errors import CLLMError
from cllm.tokenizers import load_tokenizer
from cllm.cli import main
from cllm.cli.tokenizer import register

TEXT = "To be, or not to be, that is the question.\nWhether 'tis nobler in the mind to suffer.\n"


def run(argv):
    parser = argparse.ArgumentParser(prog="cllm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text(TEXT, encoding="utf-8")
    (d / "sub" / "b.md").write_text("Ça va? Oui, ça va.\n", encoding="utf-8")
    (d / "image.bin").write_bytes(b"\x89PNG\0\0\xff")  # binary: skipped
    (d / ".hidden").write_text("SECRET", encoding="utf-8")  # hidden: skipped
    return d


@pytest.mark.parametrize("kind", ["char", "byte", "word", "bpe"])
def test_train_encode_decode(kind, corpus, tmp_path, capsys):
    out = tmp_path / "tok.json"
    assert run(["tokenizer", "train", "--data", str(corpus), "--kind", kind, "--vocab-size", "300",
                "--min-freq", "1", "--out", str(out)]) == 0
    tok = load_tokenizer(out)
    assert tok.kind == kind
    assert "SECRET" not in tok.to_json()
    capsys.readouterr()
    assert run(["tokenizer", "encode", "--tokenizer", str(out), "--text", "to be", "--json"]) == 0
    ids = json.loads(capsys.readouterr().out)
    assert ids == tok.encode("to be").tolist()
    assert run(["tokenizer", "decode", "--tokenizer", str(out), "--ids", " ".join(map(str, ids))]) == 0
    assert capsys.readouterr().out == "to be\n"
    f = tmp_path / "in.txt"
    f.write_text("not to be", encoding="utf-8")
    assert run(["tokenizer", "encode", "--tokenizer", str(out), "--file", str(f)]) == 0
    assert capsys.readouterr().out.split() == [str(i) for i in tok.encode("not to be").tolist()]


def test_stats(corpus, tmp_path, capsys):
    out = tmp_path / "w.json"
    run(["tokenizer", "train", "--data", str(corpus / "a.txt"), "--kind", "word", "--vocab-size", "1000", "--out", str(out)])
    capsys.readouterr()
    assert run(["tokenizer", "stats", "--tokenizer", str(out), "--data", str(corpus)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["documents"] == 2
    assert stats["unknown_tokens"] > 0 and 0 < stats["unknown_rate"] < 1  # b.md's words are unseen
    assert stats["tokens"] > 0 and stats["tokens_per_byte"] == pytest.approx(stats["tokens"] / stats["bytes"])
    assert 0 < stats["vocab_coverage"] <= 1


def test_stats_char_counts_unknowns_instead_of_failing(corpus, tmp_path, capsys):
    out = tmp_path / "c.json"
    run(["tokenizer", "train", "--data", str(corpus / "a.txt"), "--kind", "char", "--out", str(out)])
    capsys.readouterr()
    run(["tokenizer", "stats", "--tokenizer", str(out), "--data", str(corpus / "sub")])
    assert json.loads(capsys.readouterr().out)["unknown_tokens"] > 0


def test_invalid_utf8_names_file_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world")
    with pytest.raises(CLLMError, match=r"bad\.txt: invalid UTF-8 at byte offset 6"):
        run(["tokenizer", "train", "--data", str(bad), "--kind", "word", "--out", str(tmp_path / "t.json")])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tokenizer", "train", "--data", "/nonexistent/x", "--kind", "word", "--out", "t.json"], "not found"),
        (["tokenizer", "encode", "--tokenizer", "/nonexistent.json", "--text", "x"], "not found"),
        (["tokenizer", "decode", "--tokenizer", "TOK", "--ids", "1 two 3"], "not an integer"),
        (["tokenizer", "decode", "--tokenizer", "TOK", "--ids", "99999"], "outside"),
        (["tokenizer", "encode", "--tokenizer", "TOK", "--file", "/nonexistent.txt"], "not found"),
        (["tokenizer", "train", "--data", "EMPTY", "--kind", "word", "--out", "t.json"], "no text files"),
        (["tokenizer", "train", "--data", "DATA", "--kind", "bpe", "--vocab-size", "10", "--out", "t.json"], "at least 260"),
    ],
)
def test_bad_input_raises_cllm_error(argv, message, tmp_path, corpus):
    tok = tmp_path / "tok.json"
    run(["tokenizer", "train", "--data", str(corpus), "--kind", "word", "--out", str(tok)])
    (tmp_path / "empty").mkdir()
    subs = {"TOK": str(tok), "EMPTY": str(tmp_path / "empty"), "DATA": str(corpus)}
    argv = [subs.get(a, a) for a in argv]
    with pytest.raises(CLLMError, match=message):
        run(argv)


def test_main_reports_one_line_error(tmp_path, capsys):
    assert main(["tokenizer", "encode", "--tokenizer", str(tmp_path / "missing.json"), "--text", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cllm: error: tokenizer file not found") and err.count("\n") == 1


def test_argparse_rejects_unknown_kind_and_missing_source(capsys):
    with pytest.raises(SystemExit):
        main(["tokenizer", "train", "--data", "x", "--kind", "sentencepiece", "--out", "t.json"])
    with pytest.raises(SystemExit):
        main(["tokenizer", "encode", "--tokenizer", "t.json"])
