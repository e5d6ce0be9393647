"""Export to transformers and GGUF, import back: logits, greedy decoding, tokenizer ids, weights,
and every refusal. Tiny random models (2 layers, 32 wide, block 16) with large weights so that a
wrong layout cannot hide behind near-uniform logits."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from cllm.checkpoint import save_checkpoint
from cllm.cli import main
from cllm.config import Config, ModelConfig
from cllm.errors import CLLMError
from cllm.interop import export_gguf, export_hf, hf_architecture, load_pretrained
from cllm.model import GPT
from cllm.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, WordTokenizer

from conftest import SHORT_TEXT

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

try:  # greedy decoding as cllm does it (the module moved during the KV-cache work)
    from cllm.inference import generate
except ImportError:  # pragma: no cover
    from cllm.sample import generate

# Newlines (single, double, \r\n), tabs, punctuation, runs of spaces, accents (composed and
# combining), CJK, an emoji, a file separator (Python whitespace, not Oniguruma's) and "<eos>".
TEXT = ("To be, or not to be:\n\nthat is the question!  Tabs\there; naïve café, e\u0301, 日本語 🎉\r\n"
        "a_b <eos> don't\x1c end...   \n\n\n")
CORPUS = SHORT_TEXT * 4 + "café naïve 日本\t"

MAPPED = {
    "gpt2": (dict(pos_encoding="learned"), "GPT2LMHeadModel"),
    "gpt2-relu2-nobias-untied": (dict(pos_encoding="learned", mlp="relu2", bias=False, tie_embeddings=False),
                                 "GPT2LMHeadModel"),
    "neox": (dict(), "GPTNeoXForCausalLM"),
    "neox-nobias-untied": (dict(bias=False, tie_embeddings=False), "GPTNeoXForCausalLM"),
    "llama": (dict(norm="rmsnorm", mlp="swiglu"), "LlamaForCausalLM"),
    "llama-nobias-untied": (dict(norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False), "LlamaForCausalLM"),
    "qwen3": (dict(norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=False), "Qwen3ForCausalLM"),
}


def make_tokenizer(kind):
    if kind == "char":
        return CharTokenizer.train([CORPUS])
    if kind == "byte":
        return ByteTokenizer()
    if kind == "word":
        return WordTokenizer.train([CORPUS], vocab_size=120)
    return BPETokenizer.train([CORPUS], vocab_size=300)


def tiny_model(tokenizer, seed=0, **options):
    cfg = ModelConfig(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=tokenizer.vocab_size, **options)
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def cllm_logits(model, idx):
    with torch.no_grad():
        return model(idx)[0]


@pytest.mark.parametrize("name", list(MAPPED))
def test_export_matches_transformers_and_imports_back(tmp_path, name):
    options, arch = MAPPED[name]
    tok = make_tokenizer(["char", "byte", "word", "bpe"][list(MAPPED).index(name) % 4])
    model = tiny_model(tok, **options)
    assert hf_architecture(model.cfg) == arch
    export_hf(model, tok, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == arch

    ids = torch.as_tensor(tok.encode_with_unk(TEXT)[:16])[None]
    with torch.no_grad():
        theirs = hf(ids).logits
    torch.testing.assert_close(theirs, cllm_logits(model, ids), atol=1e-4, rtol=0)

    prompt = ids[:, :4]
    ours = generate(model, prompt, 10, temperature=0.0, eos_id=tok.eos_id)
    with torch.no_grad():
        greedy = hf.generate(prompt, max_new_tokens=10, do_sample=False, attention_mask=torch.ones_like(prompt))
    assert greedy.tolist() == ours.tolist()

    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tok(TEXT)["input_ids"] == tok.encode_with_unk(TEXT).tolist()

    fields, state, tok2 = load_pretrained(tmp_path)
    assert fields == dataclasses.asdict(model.cfg)
    back = GPT(ModelConfig(**fields))
    back.load_state_dict(state)
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    assert tok2.to_json() == tok.to_json()


@pytest.mark.parametrize("kind", ["char", "byte", "word", "bpe", "char-lower", "word-lower", "bpe-lower"])
def test_autotokenizer_gives_cllm_ids(tmp_path, kind):
    base, _, lower = kind.partition("-")
    if lower:
        cls = {"char": CharTokenizer, "word": WordTokenizer, "bpe": BPETokenizer}[base]
        tok = cls.train([CORPUS], lowercase=True, **({"vocab_size": 300} if base == "bpe" else {}))
    else:
        tok = make_tokenizer(base)
    export_hf(tiny_model(tok), tok, tmp_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    # Unknown words, an unknown whitespace run spelled with known ones, unknown characters.
    for text in (TEXT, CORPUS, "", " ", "\n \n", "zzz  \t\t\n\n\n\n  Q", TEXT.upper()):
        assert hf_tok(text)["input_ids"] == tok.encode_with_unk(text).tolist(), text
    if base in ("byte", "bpe"):  # lossless kinds decode back
        assert hf_tok.decode(hf_tok(TEXT)["input_ids"]) == (TEXT.lower() if lower else TEXT)


def test_load_pretrained_reads_a_cllm_checkpoint(tmp_path):
    tok = make_tokenizer("char")
    model = tiny_model(tok, norm="rmsnorm", mlp="swiglu", qk_norm=True)
    cfg = Config(model=model.cfg)
    save_checkpoint(tmp_path / "run" / "ckpt", model, tok, {"config": cfg.to_dict(), "step": 0})
    fields, state, tok2 = load_pretrained(tmp_path / "run")
    back = GPT(ModelConfig(**fields))
    back.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    assert fields == dataclasses.asdict(model.cfg) and tok2.to_json() == tok.to_json()


REFUSED = [
    (dict(logit_softcap=30.0), "logit_softcap"),
    (dict(pos_encoding="sinusoidal"), "pos_encoding = sinusoidal"),
    (dict(pos_encoding="ulam"), "pos_encoding = ulam"),
    (dict(pos_encoding="clock"), "pos_encoding = clock"),
    (dict(pos_encoding="prime"), "pos_encoding = prime"),
    (dict(pos_encoding="none"), "pos_encoding = none"),
    (dict(pos_encoding="learned", norm="rmsnorm"), "norm = rmsnorm"),
    (dict(norm="rmsnorm", mlp="relu2"), "mlp = relu2"),
    (dict(mlp="swiglu"), "mlp = swiglu"),
    (dict(qk_norm=True), "qk_norm with norm = layernorm"),
    (dict(norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=True), "qk_norm with bias = true"),
]


@pytest.mark.parametrize("options, named", REFUSED, ids=[n for _, n in REFUSED])
def test_unmapped_options_are_refused_in_one_line(tmp_path, options, named):
    model = tiny_model(ByteTokenizer(), **options)
    for export in (export_hf, export_gguf):
        with pytest.raises(CLLMError) as e:
            export(model, ByteTokenizer(), tmp_path / "out")
        assert named in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def _exported(tmp_path, **options):
    model = tiny_model(ByteTokenizer(), **options)
    export_hf(model, ByteTokenizer(), tmp_path)
    return json.loads((tmp_path / "config.json").read_text())


@pytest.mark.parametrize("options, edit, named", [
    (dict(pos_encoding="learned"), {"activation_function": "gelu_new"}, "gelu_new"),
    (dict(), {"use_parallel_residual": True}, "use_parallel_residual"),
    (dict(), {"rotary_pct": 0.25, "rope_parameters": None}, "rotary_pct = 0.25"),
    (dict(norm="rmsnorm", mlp="swiglu"), {"num_key_value_heads": 2}, "num_key_value_heads = 2"),
    (dict(norm="rmsnorm", mlp="swiglu"), {"rms_norm_eps": 1e-6}, "rms_norm_eps"),
    (dict(norm="rmsnorm", mlp="swiglu"), {"rope_theta": 500000.0, "rope_parameters": None}, "rope theta"),
    (dict(norm="rmsnorm", mlp="swiglu"), {"model_type": "mistral"}, "model_type 'mistral'"),
])
def test_import_refuses_what_cllm_cannot_express(tmp_path, options, edit, named):
    config = _exported(tmp_path, **options)
    config.update(edit)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CLLMError) as e:
        load_pretrained(tmp_path)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_import_refuses_learned_qk_norm_weights_and_missing_paths(tmp_path):
    import safetensors.torch

    _exported(tmp_path, norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=False)
    tensors = safetensors.torch.load_file(str(tmp_path / "model.safetensors"))
    tensors["model.layers.1.self_attn.k_norm.weight"] *= 2
    safetensors.torch.save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CLLMError, match="k_norm has learned weights"):
        load_pretrained(tmp_path)
    with pytest.raises(CLLMError, match="not found"):
        load_pretrained(tmp_path / "nothing")


def test_import_tokenizer_and_weights_files(tmp_path):
    """Without cllm_tokenizer.json a cllm BPE tokenizer.json is still read; any other is refused."""
    bpe = make_tokenizer("bpe")
    export_hf(tiny_model(bpe), bpe, tmp_path / "bpe")
    (tmp_path / "bpe" / "cllm_tokenizer.json").unlink()
    assert load_pretrained(tmp_path / "bpe")[2].to_json() == bpe.to_json()
    char = make_tokenizer("char")
    export_hf(tiny_model(char), char, tmp_path / "char")
    (tmp_path / "char" / "cllm_tokenizer.json").unlink()
    with pytest.raises(CLLMError, match="not a tokenizer cllm can use"):
        load_pretrained(tmp_path / "char")
    (tmp_path / "char" / "model.safetensors").unlink()
    with pytest.raises(CLLMError, match="no model.safetensors"):
        load_pretrained(tmp_path / "char")


GGUF_CASES = {
    # transformers' GGUF reader leaves some keys unread (gpt2: context_length into n_positions,
    # qwen3: key_length into head_dim; gpt2 activation is always tanh GELU there), so those
    # settings are passed to it; the file itself carries them (checked with GGUFReader).
    "gpt2": (dict(pos_encoding="learned"), "gpt2", {"n_positions": 16, "activation_function": "gelu"}),
    "llama": (dict(norm="rmsnorm", mlp="swiglu", bias=False), "llama", {}),
    "llama-untied": (dict(norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False), "llama", {}),
    "qwen3": (dict(norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=False), "qwen3", {"head_dim": 8}),
}


def _gguf_fields(path):
    reader = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: np.array(t.data).reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}
    return meta, tensors


@pytest.mark.parametrize("name", list(GGUF_CASES))
def test_gguf_round_trip_through_transformers(tmp_path, name):
    options, arch, unread = GGUF_CASES[name]
    tok = make_tokenizer("bpe")
    model = tiny_model(tok, **options)
    path = export_gguf(model, tok, tmp_path / "m.gguf")
    meta, _ = _gguf_fields(path)
    assert meta["general.architecture"] == arch and meta[f"{arch}.block_count"] == 2
    assert meta[f"{arch}.context_length"] == 16 and meta[f"{arch}.embedding_length"] == 32
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.eos_token_id"] == tok.eos_id
    assert len(meta["tokenizer.ggml.tokens"]) == tok.vocab_size
    if arch == "qwen3":
        assert meta["qwen3.attention.key_length"] == 8
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    if arch not in GGUF_CONFIG_MAPPING:  # transformers 4.51 reads no qwen3 GGUF; later versions do
        pytest.skip(f"transformers {transformers.__version__} has no GGUF reader for {arch}")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, **unread).eval()
    ids = torch.as_tensor(tok.encode(TEXT)[:16])[None]
    with torch.no_grad():
        theirs = hf(ids).logits
    torch.testing.assert_close(theirs, cllm_logits(model, ids), atol=1e-4, rtol=0)


def test_gguf_gptneox_layout_and_other_tokenizers(tmp_path):
    """transformers reads no gptneox GGUF, so the file is read back with GGUFReader: its tensors
    are cllm's own (llama.cpp's gptneox QKV layout is cllm's [q; k; v]), its keys per llama.cpp."""
    tok = make_tokenizer("word")
    model = tiny_model(tok)
    meta, tensors = _gguf_fields(export_gguf(model, tok, tmp_path))
    assert meta["general.architecture"] == "gptneox" and meta["gptneox.use_parallel_residual"] is False
    assert meta["gptneox.vocab_size"] == tok.vocab_size  # llama.cpp sizes a "none" vocabulary from it
    assert meta["gptneox.rope.dimension_count"] == 8 and meta["gptneox.feed_forward_length"] == 128
    assert meta["tokenizer.ggml.model"] == "none" and meta["tokenizer.ggml.tokens"][4:] == tok.tokens
    assert json.loads(meta["cllm.tokenizer"]) == json.loads(tok.to_json())
    sd = model.state_dict()
    pairs = {"token_embd.weight": "wte.weight", "output.weight": "lm_head.weight", "output_norm.weight": "ln_f.weight",
             "blk.1.attn_qkv.weight": "blocks.1.attn.c_attn.weight", "blk.1.attn_qkv.bias": "blocks.1.attn.c_attn.bias",
             "blk.0.ffn_up.weight": "blocks.0.mlp.c_fc.weight", "blk.0.ffn_down.bias": "blocks.0.mlp.c_proj.bias",
             "blk.0.attn_norm.bias": "blocks.0.ln_1.bias"}
    for theirs, ours in pairs.items():
        assert np.array_equal(tensors[theirs], sd[ours].numpy()), theirs
    meta, _ = _gguf_fields(export_gguf(tiny_model(ByteTokenizer(), pos_encoding="learned"), ByteTokenizer(), tmp_path / "b.gguf"))
    assert meta["tokenizer.ggml.model"] == "none" and meta["tokenizer.ggml.tokens"][4] == "<0x00>"


@pytest.mark.parametrize("options, named", [
    (dict(pos_encoding="learned", mlp="relu2"), "mlp = relu2"),
    (dict(norm="rmsnorm", mlp="swiglu", bias=True), "bias = true"),
])
def test_gguf_refusals(tmp_path, options, named):
    with pytest.raises(CLLMError, match=named):
        export_gguf(tiny_model(ByteTokenizer(), **options), ByteTokenizer(), tmp_path / "m.gguf")


def test_cli_export(tmp_path, capsys):
    tok = make_tokenizer("char")
    model = tiny_model(tok, norm="rmsnorm", mlp="swiglu", bias=False)
    save_checkpoint(tmp_path / "run" / "ckpt", model, tok, {"config": Config(model=model.cfg).to_dict(), "step": 3})
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert "LlamaForCausalLM" in capsys.readouterr().out
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "tokenizer.json").is_file()
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "gguf", "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g" / "model.gguf").is_file()

    bad = tiny_model(tok, logit_softcap=15.0)
    save_checkpoint(tmp_path / "bad" / "ckpt", bad, tok, {"config": Config(model=bad.cfg).to_dict(), "step": 3})
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(tmp_path / "bad"), "--format", "hf", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "logit_softcap = 15.0" in err and not (tmp_path / "x").exists()


def test_the_default_run_exports(tmp_path):
    # The README exports `runs/default`, what `cllm train` with no preset trains (the quickstart preset).
    from cllm.config import apply_dict, load_preset

    for preset, arch in (("quickstart", "Qwen3ForCausalLM"), ("small", "GPTNeoXForCausalLM")):
        cfg = Config()
        apply_dict(cfg, load_preset(preset), "preset")
        assert hf_architecture(dataclasses.replace(cfg.model, vocab_size=65)) == arch
