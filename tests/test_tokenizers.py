"""Tokenizers: round trips, save/load stability, vocabulary rules, specials, unknowns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.errors import CLLMError
from cllm.tokenizers import (
    SPECIAL_TOKENS,
    TOKENIZERS,
    UNK_ID,
    UNK_TEXT,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    WordTokenizer,
    load_tokenizer,
    save_tokenizer,
    tokenizer_class,
    tokenizer_from_json,
)
from cllm.tokenizers.bpe import safe_chunks

CORPUS = [
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n\n"
    "Or to take arms against a sea of troubles  \n"
    "And by opposing end them. To die—to sleep,\n",
    "Ärger über Öl? Ça va. 漢字かな交じり文 😀 tabs\tand  double  spaces.\n\n\nThe end 1234 5678.",
]

settings.register_profile("cllm", max_examples=150, deadline=None)
settings.load_profile("cllm")


@pytest.fixture(scope="module")
def trained():
    return {
        "char": CharTokenizer.train(CORPUS),
        "byte": ByteTokenizer.train(CORPUS),
        "word": WordTokenizer.train(CORPUS, vocab_size=60, min_freq=1),
        "bpe": BPETokenizer.train(CORPUS, vocab_size=400, min_freq=0),
    }


BPE = BPETokenizer.train(CORPUS * 3, vocab_size=400)
BYTE = ByteTokenizer()


def test_registry_has_every_kind():
    assert sorted(TOKENIZERS) == ["bpe", "byte", "char", "word"]
    with pytest.raises(CLLMError, match="unknown tokenizer"):
        tokenizer_class("sentencepiece")


@pytest.mark.parametrize("kind", ["char", "byte", "word", "bpe"])
def test_specials_at_fixed_ids(trained, kind):
    tok = trained[kind]
    assert tok.eos_id == 3 and tok.bos_id == 2
    assert [tok.id_to_token(i) for i in range(4)] == list(SPECIAL_TOKENS)
    # Specials other than <unk> decode to nothing; <unk> to U+FFFD.
    assert tok.decode([0, 2, 3]) == ""
    assert tok.decode([UNK_ID]) == UNK_TEXT


@pytest.mark.parametrize("kind", ["char", "byte", "word", "bpe"])
def test_save_load_gives_identical_ids(trained, kind, tmp_path):
    tok = trained[kind]
    path = tmp_path / f"{kind}.json"
    save_tokenizer(tok, path)
    again = load_tokenizer(path)
    assert type(again) is type(tok)
    assert again.fingerprint() == tok.fingerprint()
    assert again.vocab_size == tok.vocab_size
    for text in CORPUS + ["To be or not", ""]:
        assert np.array_equal(again.encode(text), tok.encode(text))
        assert again.encode(text).dtype == np.int64
    # A second save of the reloaded tokenizer is byte-identical.
    save_tokenizer(again, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", ["char", "byte", "word", "bpe"])
def test_ids_in_range_and_decode_rejects_bad_ids(trained, kind):
    tok = trained[kind]
    ids = tok.encode(CORPUS[0])
    assert ids.min() >= 0 and ids.max() < tok.vocab_size
    for bad in ([tok.vocab_size], [-1], [0, 2**40]):
        with pytest.raises(CLLMError, match="outside"):
            tok.decode(bad)
    with pytest.raises(CLLMError):
        tok.decode(["x"])


@pytest.mark.parametrize("kind", ["char", "byte", "word", "bpe"])
def test_encode_batch_matches_encode(trained, kind):
    tok = trained[kind]
    texts = CORPUS + ["", " to be", "be be be"]
    for a, b in zip(tok.encode_batch(texts), texts):
        assert np.array_equal(a, tok.encode(b))


# ---- byte ----


@given(st.text())
def test_byte_round_trip(text):
    ids = BYTE.encode(text)
    assert BYTE.decode(ids) == text
    assert len(ids) == len(text.encode("utf-8"))


def test_byte_vocabulary_and_surrogates():
    assert BYTE.vocab_size == 260
    assert BYTE.encode("A").tolist() == [4 + 65]
    assert BYTE.id_to_token(4 + 255) == "<0xFF>"
    with pytest.raises(CLLMError, match="surrogate"):
        BYTE.encode("a\ud800b")
    # A truncated multi-byte character decodes to U+FFFD rather than failing.
    assert BYTE.decode(BYTE.encode("é")[:1]) == "\ufffd"


# ---- bpe ----


@given(st.text())
def test_bpe_round_trip(text):
    assert BPE.decode(BPE.encode(text)) == text


# Whitespace-heavy text exercises the piece cutting: it must give HF's own ids, not just a round trip.
_ws_text = st.text(alphabet=st.sampled_from(list(" \n\t\r\x0b\x0c\x85\xa0\u2000\u3000\x1c'sabé1.!漢😀")), max_size=60)


@given(st.one_of(st.text(), _ws_text))
def test_bpe_fast_encoding_equals_hf_encoding(text):
    tok = BPETokenizer.from_dict(BPE.to_dict())  # fresh, empty piece cache
    assert np.array_equal(tok.encode(text), tok.encode_reference(text))
    assert np.array_equal(tok.encode(text), tok.encode_reference(text))  # warm cache path too


@given(st.lists(_ws_text, max_size=5))
def test_bpe_encode_batch_equals_hf(texts):
    for ids, text in zip(BPE.encode_batch(texts), texts):
        assert np.array_equal(ids, BPE.encode_reference(text))


def test_bpe_long_text_is_chunked_identically():
    text = ("".join(CORPUS) + "\n") * 400  # ~140 KB: several chunks and several joined batches
    tok = BPETokenizer.from_dict(BPE.to_dict())
    assert len(safe_chunks(text)) > 1 and "".join(safe_chunks(text)) == text
    assert np.array_equal(tok.encode(text), tok.encode_reference(text))
    assert tok.decode(tok.encode(text)) == text


def test_bpe_specials_are_not_matched_in_text():
    text = "a <eos> b <pad><unk><bos>"
    ids = BPE.encode(text)
    assert not np.isin(ids, [0, 1, 2, 3]).any()
    assert BPE.decode(ids) == text


def test_bpe_vocab_size_and_training_rules():
    assert BPE.vocab_size == 400
    assert [BPE._hf.id_to_token(i) for i in range(4)] == list(SPECIAL_TOKENS)
    with pytest.raises(CLLMError, match="at least 260"):
        BPETokenizer.train(CORPUS, vocab_size=100)
    # Training is deterministic.
    assert BPETokenizer.train(CORPUS * 3, vocab_size=400).fingerprint() == BPE.fingerprint()
    # A high min_freq stops merging early: fewer ids than asked for.
    assert BPETokenizer.train(CORPUS, vocab_size=2000, min_freq=50).vocab_size < 2000


def test_bpe_lowercase():
    tok = BPETokenizer.train(CORPUS, vocab_size=300, lowercase=True)
    assert np.array_equal(tok.encode("THE Sea"), tok.encode("the sea"))
    assert tok.decode(tok.encode("THE Sea")) == "the sea"
    assert BPETokenizer.from_dict(tok.to_dict()).lowercase


def test_bpe_rejects_foreign_hf_json_and_surrogates():
    with pytest.raises(CLLMError, match="malformed"):
        BPETokenizer.from_dict({"hf_tokenizer": "{not json"})
    with pytest.raises(CLLMError, match="surrogate"):
        BPE.encode("x \ud800 y")


# ---- word ----


def test_word_tokens_reconstruct_in_vocab_text():
    tok = WordTokenizer.train(CORPUS, vocab_size=10_000)
    for text in CORPUS:
        assert tok.decode(tok.encode(text)) == text
        assert tok.unknown_rate(text) == 0.0
    ids = tok.encode("To be,  or")
    assert [tok.id_to_token(i) for i in ids] == ["To", " ", "be", ",", "  ", "or"]


def test_word_vocabulary_is_deterministic_and_stable():
    a = WordTokenizer.train(CORPUS, vocab_size=40)
    b = WordTokenizer.train(list(CORPUS), vocab_size=40)
    assert a.fingerprint() == b.fingerprint() and a.tokens == b.tokens
    # Ties in count are broken by code point order, not by input order.
    c = WordTokenizer.train(["b a c", "c b a"], vocab_size=100)
    assert c.tokens == [" ", "a", "b", "c"]
    reloaded = tokenizer_from_json(a.to_json())
    assert reloaded.tokens == a.tokens
    assert np.array_equal(reloaded.encode(CORPUS[1]), a.encode(CORPUS[1]))


def test_word_min_freq_and_vocab_size():
    docs = ["apple apple apple pear pear fig"]
    tok = WordTokenizer.train(docs, vocab_size=100, min_freq=2)
    assert tok.tokens == [" ", "apple", "pear"]  # counts 5, 3, 2; "fig" (1) is dropped
    small = WordTokenizer.train(docs, vocab_size=6)
    assert small.vocab_size == 6 and small.tokens == [" ", "apple"]
    with pytest.raises(CLLMError, match="vocab_size"):
        WordTokenizer.train(docs, vocab_size=4)
    with pytest.raises(CLLMError, match="min_freq"):
        WordTokenizer.train(docs, min_freq=0)


@given(st.text())
def test_word_encode_never_raises(text):
    tok = WORD
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ((ids >= 0) & (ids < tok.vocab_size)).all()
    # Every in-vocabulary token decodes to itself; unknowns to U+FFFD.
    decoded = tok.decode(ids)
    if not np.any(ids == UNK_ID):
        assert decoded == text


WORD = WordTokenizer.train(CORPUS, vocab_size=100)


def test_word_unknowns():
    ids = WORD.encode("To be zebra!")
    assert ids.tolist().count(UNK_ID) == 2  # "zebra" and "!" were never seen
    assert WORD.decode(ids) == f"To be {UNK_TEXT}{UNK_TEXT}"
    assert WORD.unknown_rate("To be zebra!") == pytest.approx(2 / 6)
    # An unseen whitespace run is spelled with known whitespace tokens, not <unk>.
    assert WORD.decode(WORD.encode("To" + " " * 7 + "be")) == "To" + " " * 7 + "be"


def test_word_lowercase():
    tok = WordTokenizer.train(["The THE the"], vocab_size=100, lowercase=True)
    assert tok.tokens == ["the", " "]
    assert tok.encode("THE The").tolist() == tok.encode("the the").tolist()
    assert tokenizer_from_json(tok.to_json()).lowercase
    cased = WordTokenizer.train(["The THE the"], vocab_size=100)
    assert set(cased.tokens) == {" ", "The", "THE", "the"}


def test_word_rejects_bad_vocabulary():
    with pytest.raises(CLLMError, match="more than once"):
        WordTokenizer.from_dict({"tokens": ["a", "a"]})
    with pytest.raises(CLLMError, match="malformed"):
        tokenizer_from_json('{"kind": "word"}')


# ---- char ----


def test_char_unknown_raises_and_stats_helper():
    tok = CharTokenizer.train(["abc"])
    with pytest.raises(CLLMError, match="'z' at position 1"):
        tok.encode("az")
    assert tok.encode_with_unk("az").tolist() == [4, UNK_ID]
    assert tok.unknown_rate("az") == 0.5
    assert tok.decode(tok.encode("cab")) == "cab"


def test_char_lowercase_option_keeps_old_fingerprints():
    plain = CharTokenizer.train(["Ab"])
    assert "lowercase" not in plain.to_dict()
    low = CharTokenizer.train(["Ab"], lowercase=True)
    assert low.chars == ["a", "b"] and low.decode(low.encode("AB")) == "ab"
    assert tokenizer_from_json(low.to_json()).lowercase


def test_malformed_json():
    for text in ["[1, 2]", "not json", '{"kind": "bpe"}']:
        with pytest.raises(CLLMError):
            tokenizer_from_json(text)
