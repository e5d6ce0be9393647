"""cllm tokenizers as Hugging Face ``tokenizers`` pipelines that give the same ids on any text.

Each kind becomes a ``tokenizer.json`` that ``transformers.AutoTokenizer`` (a
``PreTrainedTokenizerFast``) loads with no custom code:

* ``bpe``: already an HF byte-level BPE; its JSON is written as is (plus a Lowercase normalizer
  when the tokenizer lowercases).
* ``byte``: byte b is id 4 + b. A byte-level BPE with no merges expresses exactly that: the
  ByteLevel pre-tokenizer maps each UTF-8 byte to one printable character (GPT-2's table), and
  each character is one vocabulary entry.
* ``char``: a WordLevel model over single code points (a Split pre-tokenizer isolates each one);
  unknown characters become <unk>, as ``encode_with_unk`` does.
* ``word``: the same cut as ``cllm.tokenizers.word`` (letter/digit runs, whitespace runs, single
  other characters), written as an explicit regex: the character classes are generated from
  Python's own ``re`` classes, so Oniguruma's different idea of ``\\w`` and ``\\s`` (marks,
  U+001C..U+001F) never enters. A whitespace run the vocabulary lacks is spelled greedily with
  the longest known whitespace tokens, as cllm does: the regex tries the known whitespace tokens
  longest first.

The four specials (<pad>, <unk>, <bos>, <eos> = 0..3) are vocabulary entries, deliberately *not*
HF "added tokens": a literal "<eos>" in user text is ordinary text in cllm, and so it stays here.
Their ids are given to transformers through config.json / generation_config.json instead.

Known limit: with ``lowercase``, HF's Lowercase normalizer lowercases character by character,
while Python's ``str.lower`` gives a word-final capital sigma the final form (ς); text with a
capital Σ at the end of a word can therefore differ.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from ..errors import CLLMError
from ..tokenizers import SPECIAL_TOKENS, UNK_ID, Tokenizer
from ..tokenizers.word import TOKEN_RE

_OFFSET = len(SPECIAL_TOKENS)


def _hf():
    try:
        from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, normalizers, pre_tokenizers
    except ImportError:  # pragma: no cover - tokenizers is a core dependency
        raise CLLMError("exporting a tokenizer needs the 'tokenizers' package") from None
    return Regex, HFTokenizer, decoders, models, normalizers, pre_tokenizers


def bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table, indexed by byte (what HF's ByteLevel uses):
    printable Latin-1 bytes stand for themselves, the other 68 are moved to U+0100 onwards."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in range(256)]


def _class(ranges: list[tuple[int, int]]) -> str:
    return "[" + "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges) + "]"


@functools.lru_cache(maxsize=None)
def _python_class(pattern: str) -> str:
    """An Oniguruma character class holding exactly the code points Python's ``re`` matches with
    ``pattern`` (one character), as explicit ranges."""
    rx = re.compile(pattern)
    ranges, start = [], None
    for c in range(0x110000):
        ok = not 0xD800 <= c < 0xE000 and rx.match(chr(c)) is not None
        if ok and start is None:
            start = c
        elif not ok and start is not None:
            ranges.append((start, c - 1))
            start = None
    if start is not None:
        ranges.append((start, 0x10FFFF))
    return _class(ranges)


def _escape(text: str) -> str:
    return "".join(f"\\x{{{ord(c):X}}}" for c in text)


def word_split_regex(tokens: list[str]) -> str:
    """The word tokenizer's cut, with whitespace runs pre-spelled by the known whitespace tokens."""
    assert TOKEN_RE.pattern == r"[^\W_]+|\s+|.", "cllm.tokenizers.word changed its split; update this"
    spaces = sorted({t for t in tokens if t.isspace()}, key=lambda t: (-len(t), t))
    parts = [_python_class(r"[^\W_]") + "+"]
    parts += [_escape(t) for t in spaces]  # ordered alternation: the longest known run wins
    parts += [r"[\s\S]"]  # any single character: a lone unknown space, punctuation, symbols
    return "|".join(parts)


def hf_tokenizer_json(tok: Tokenizer) -> str:
    """The HF ``tokenizers`` JSON equivalent of a cllm tokenizer (same ids for any text)."""
    Regex, HFTokenizer, decoders, models, normalizers, pre_tokenizers = _hf()
    if tok.kind == "bpe":
        spec = json.loads(tok.to_dict()["hf_tokenizer"])
        if tok.lowercase:
            spec["normalizer"] = {"type": "Lowercase"}
        return json.dumps(spec, ensure_ascii=False)
    if tok.kind == "byte":
        vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        vocab.update({ch: _OFFSET + b for b, ch in enumerate(bytes_to_unicode())})
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        hf.decoder = decoders.ByteLevel()
    elif tok.kind in ("char", "word"):
        entries = tok.chars if tok.kind == "char" else tok.tokens
        vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *entries])}
        hf = HFTokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS[UNK_ID]))
        pattern = r"[\s\S]" if tok.kind == "char" else word_split_regex(tok.tokens)
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
        hf.decoder = decoders.Fuse()  # join the pieces as they are (no spaces between)
        if tok.lowercase:
            hf.normalizer = normalizers.Lowercase()
    else:
        raise CLLMError(f"tokenizer kind {tok.kind!r} has no HF tokenizers equivalent")
    return hf.to_str()


def write_hf_tokenizer(tok: Tokenizer, out: Path, model_max_length: int) -> None:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json for AutoTokenizer, plus
    cllm_tokenizer.json (the cllm tokenizer itself, so an import gets it back unchanged)."""
    (out / "tokenizer.json").write_text(hf_tokenizer_json(tok), encoding="utf-8")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    (out / "special_tokens_map.json").write_text("{}", encoding="utf-8")
    (out / "cllm_tokenizer.json").write_text(tok.to_json(), encoding="utf-8")


def read_cllm_tokenizer(directory: Path) -> Tokenizer:
    """The cllm tokenizer of an HF directory: cllm_tokenizer.json (written by our export), else a
    tokenizer.json that is a cllm byte-level BPE; anything else is refused."""
    from ..tokenizers import BPETokenizer, load_tokenizer

    if (directory / "cllm_tokenizer.json").is_file():
        return load_tokenizer(directory / "cllm_tokenizer.json")
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise CLLMError(f"{directory} has no tokenizer.json (and no cllm_tokenizer.json)")
    try:
        return BPETokenizer(path.read_text(encoding="utf-8"))
    except CLLMError as e:
        raise CLLMError(f"{path} is not a tokenizer cllm can use: {e}") from None
