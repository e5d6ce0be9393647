"""Property-based fuzzing of everything that reads user input: tokenizer JSON and the tokenizers
themselves, text and JSONL readers, prepared datasets, checkpoints, metrics.jsonl, TOML configs
and flag values. The property is always the same: a result, or a CLLMError (exit code 2, one
line), never another exception. Kept fast: few examples each, no deadline.
"""

import json
import math
import os
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cllm.checkpoint import load_checkpoint, load_model, save_checkpoint
from cllm.cli import build_parser
from cllm.config import FIELDS, SECTIONS, Config, config_from_args, read_toml
from cllm.data import iter_documents, load_prepared, prepare
from cllm.config import DataConfig
from cllm.errors import CLLMError
from cllm.model import GPT
from cllm.config import ModelConfig
from cllm.tokenizers import TOKENIZERS, ByteTokenizer, CharTokenizer, tokenizer_from_json
from cllm.training.metrics import plot_losses, truncate_metrics

# CLLM_FUZZ_SCALE=20 python -m pytest tests/test_fuzz.py: a longer hunt (20x the examples)
SCALE = float(os.environ.get("CLLM_FUZZ_SCALE", "1"))
FAST = settings(max_examples=int(40 * SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=int(15 * SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def result_or_cllm_error(fn, *args, **kwargs):
    """fn's result, or None when it raised CLLMError; any other exception fails the test."""
    try:
        return fn(*args, **kwargs)
    except CLLMError as e:
        assert str(e) and "\n" not in str(e).strip(), repr(str(e))
        return None


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="cllm-fuzz-") as d:
        yield Path(d)


# -- tokenizers ----------------------------------------------------------------------------------------

tokenizer_dicts = st.builds(lambda kind, extra: {"kind": kind, **extra},
                            st.sampled_from([*TOKENIZERS, "nope"]),
                            st.dictionaries(st.sampled_from(["vocab", "tokens", "chars", "lowercase", "hf", "spec",
                                                             "version", "merges", "words"]), json_values, max_size=4))


@FAST
@given(st.one_of(json_values, tokenizer_dicts))
def test_tokenizer_json_of_any_shape(value):
    tok = result_or_cllm_error(tokenizer_from_json, json.dumps(value))
    if tok is not None:
        result_or_cllm_error(tok.encode, "hello, world")
        result_or_cllm_error(tok.decode, [0, 1, 2, 3, 4])


@FAST
@given(st.binary(max_size=200))
def test_tokenizer_json_from_random_bytes(raw):
    result_or_cllm_error(tokenizer_from_json, raw.decode("latin-1"))


@SLOW
@given(kind=st.sampled_from(sorted(TOKENIZERS)), texts=st.lists(st.text(max_size=60), max_size=4),
       probe=st.text(max_size=60), ids=st.lists(st.integers(-5, 600), max_size=20))
def test_tokenizers_train_encode_decode_any_text(kind, texts, probe, ids):
    options = {"vocab_size": 300} if kind in ("bpe", "word") else {}
    tok = result_or_cllm_error(TOKENIZERS[kind].train, texts, **options)
    if tok is None:
        return
    encoded = result_or_cllm_error(tok.encode, probe)
    if encoded is not None and isinstance(tok, ByteTokenizer):
        assert tok.decode(encoded) == probe
    if encoded is not None and isinstance(tok, CharTokenizer):
        assert tok.decode(encoded) == probe
    result_or_cllm_error(tok.decode, ids)
    again = result_or_cllm_error(tokenizer_from_json, tok.to_json())
    assert again is not None and again.fingerprint() == tok.fingerprint()


# -- text and JSONL readers, prepared datasets ------------------------------------------------------------

jsonl_lines = st.lists(st.one_of(
    st.builds(json.dumps, st.dictionaries(st.sampled_from(["text", "body", ""]), json_values, max_size=3)),
    st.builds(json.dumps, json_values),
    st.text(max_size=30),
    st.just(""),
), max_size=8)


@FAST
@given(raw=st.binary(max_size=300), suffix=st.sampled_from([".txt", ".jsonl", ".md"]),
       errors=st.sampled_from(["strict", "replace", "skip"]), skip_bad_lines=st.booleans())
def test_reading_random_bytes(workdir, raw, suffix, errors, skip_bad_lines):
    path = workdir / f"random{suffix}"
    path.write_bytes(raw)
    docs = result_or_cllm_error(lambda: list(iter_documents(path, errors, "text", skip_bad_lines)))
    if docs is not None:
        assert all(isinstance(d, str) for d in docs)


@FAST
@given(lines=jsonl_lines, field=st.sampled_from(["text", "body"]), skip_bad_lines=st.booleans())
def test_reading_random_jsonl(workdir, lines, field, skip_bad_lines):
    path = workdir / "random.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    result_or_cllm_error(lambda: list(iter_documents(path, "strict", field, skip_bad_lines)))


@SLOW
@given(raw=st.binary(min_size=0, max_size=400), kind=st.sampled_from(["char", "byte", "word"]),
       suffix=st.sampled_from([".txt", ".jsonl"]), val_fraction=st.floats(0.05, 0.9))
def test_preparing_random_bytes(workdir, raw, kind, suffix, val_fraction):
    src = workdir / "prep" / f"input{suffix}"
    shutil.rmtree(workdir / "prep", ignore_errors=True)
    src.parent.mkdir()
    src.write_bytes(raw)
    cfg = DataConfig(data=str(src), tokenizer=kind, workers=1, errors="replace", skip_bad_lines=True,
                     val_fraction=val_fraction, tokenizer_vocab_size=300)
    data = result_or_cllm_error(prepare, cfg, workdir / "prep" / "out", min_tokens=2)
    if data is not None:
        assert load_prepared(workdir / "prep" / "out").fingerprint == data.fingerprint


@pytest.fixture(scope="module")
def prepared(workdir):
    src = workdir / "corpus.txt"
    src.write_text("To be, or not to be, that is the question.\n" * 20, encoding="utf-8")
    prepare(DataConfig(data=str(src), workers=1), workdir / "prepared", min_tokens=2)
    return workdir / "prepared"


@SLOW
@given(target=st.sampled_from(["meta.json", "tokenizer.json", "train.bin", "val.bin"]),
       how=st.sampled_from(["bytes", "json", "truncate", "flip"]), raw=st.binary(max_size=80), value=json_values,
       at=st.integers(0, 10_000))
def test_damaged_prepared_dataset(workdir, prepared, target, how, raw, value, at):
    copy = workdir / "prepared-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(prepared, copy)
    path = copy / target
    data = path.read_bytes()
    if how == "bytes":
        path.write_bytes(raw)
    elif how == "json":
        path.write_text(json.dumps(value), encoding="utf-8")
    elif how == "truncate":
        path.write_bytes(data[: at % (len(data) + 1)])
    else:
        flipped = bytearray(data)
        flipped[at % len(data)] ^= 0xFF
        path.write_bytes(bytes(flipped))
    ds = result_or_cllm_error(load_prepared, copy)
    if ds is not None:
        for split in ("train", "val"):
            result_or_cllm_error(ds.shards, split)


# -- checkpoints and metrics -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_dir(workdir):
    tok = CharTokenizer.train(["hello world"])
    cfg = Config()
    cfg.model = ModelConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=tok.vocab_size)
    state = {"config": cfg.to_dict(), "step": 3, "elapsed": 1.0, "best_val_loss": None}
    return save_checkpoint(workdir / "ckpt", GPT(cfg.model), tok, state)


@SLOW
@given(state=st.one_of(json_values, st.dictionaries(st.sampled_from(["files", "config", "step", "format",
                                                                     "state_sha256"]), json_values)),
       keep_real=st.sets(st.sampled_from(["files", "config", "step", "format"])))
def test_checkpoint_state_of_any_shape(workdir, checkpoint_dir, state, keep_real):
    copy = workdir / "ckpt-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(checkpoint_dir, copy)
    real = json.loads((checkpoint_dir / "trainer_state.json").read_text())
    if isinstance(state, dict):
        state = {**state, **{k: real[k] for k in keep_real}}
    (copy / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
    result_or_cllm_error(load_model, copy)


@SLOW
@given(section=st.sampled_from(["model", "train", "data", "bogus"]), name=st.sampled_from(sorted(FIELDS) + ["zzz"]),
       value=json_values)
def test_checkpoint_config_of_any_value(workdir, checkpoint_dir, section, name, value):
    """A checkpoint whose config holds anything, with a consistent checksum (as a crafted file would)."""
    from cllm.checkpoint import _state_digest

    copy = workdir / "ckpt-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(checkpoint_dir, copy)
    state = json.loads((checkpoint_dir / "trainer_state.json").read_text())
    state["config"].setdefault(section, {})[name] = value
    state["state_sha256"] = _state_digest(state)
    (copy / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
    result_or_cllm_error(load_model, copy)


@SLOW
@given(lines=st.lists(st.one_of(jsonl_lines.map("\n".join), st.builds(json.dumps, st.fixed_dictionaries(
    {"step": st.integers(-3, 30), "loss": json_scalars, "tokens": json_scalars, "val_loss": json_scalars}))),
    max_size=6), keep=st.integers(0, 30))
def test_metrics_of_any_content(workdir, lines, keep):
    path = workdir / "metrics.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    truncate_metrics(path, keep)
    plot_losses(path, workdir / "loss.png")


# -- configuration: TOML files and flag values ---------------------------------------------------------

def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else "inf" if v == math.inf else "-inf" if v == -math.inf else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v)


toml_scalars = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats() | st.text(max_size=12)
                | st.sampled_from(["rope", "char", "bpe", "cosine", "muon", "fsdp", "auto", "float32"]))
toml_configs = st.dictionaries(
    st.sampled_from([*SECTIONS, "extra"]),
    st.dictionaries(st.sampled_from(sorted(FIELDS) + ["unknown_key"]), toml_scalars | st.lists(toml_scalars, max_size=2),
                    max_size=5),
    max_size=3)


def load_config_file(path):
    cfg = Config()
    from cllm.config import apply_dict

    apply_dict(cfg, read_toml(path), str(path))
    return cfg.validate()


@FAST
@given(toml_configs)
def test_random_toml_config(workdir, config):
    path = workdir / "run.toml"
    path.write_text("".join(f"[{section}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
                            for section, values in config.items()), encoding="utf-8", errors="surrogatepass")
    cfg = result_or_cllm_error(load_config_file, path)
    if cfg is not None:  # whatever validates is usable: finite numbers, known choices
        for name, (section, f) in FIELDS.items():
            value = getattr(getattr(cfg, section), name)
            if isinstance(value, float):
                assert math.isfinite(value), (name, value)


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_as_toml(workdir, raw):
    path = workdir / "junk.toml"
    path.write_bytes(raw)
    result_or_cllm_error(load_config_file, path)


@FAST
@given(name=st.sampled_from(sorted(FIELDS)), value=st.one_of(
    st.text(alphabet=string.printable, max_size=12), st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e400",
                                                                      "1e-400", "9" * 30, "", " ", "true"])))
def test_random_flag_values(name, value):
    """Every config flag with any value: parsed and validated, or one line and exit code 2."""
    flag = "--" + name.replace("_", "-")
    argv = ["train", f"{flag}={value}"] if FIELDS[name][1].type not in (bool, "bool") else ["train", flag]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        assert e.code == 2
        return
    cfg = result_or_cllm_error(config_from_args, args)
    if cfg is not None:
        for field_name, (section, _) in FIELDS.items():
            v = getattr(getattr(cfg, section), field_name)
            assert not isinstance(v, float) or math.isfinite(v), (field_name, v)
