"""cllm models as GGUF files (llama.cpp's format), written with the ``gguf`` package.

The model first goes through the HF mapping (``cllm.interop.hf.to_hf``), then each HF tensor is
renamed with gguf's own HF -> GGUF table (``gguf.get_tensor_name_map``) and re-laid-out the way
llama.cpp's ``convert_hf_to_gguf.py`` does it, so llama.cpp and transformers' GGUF reader see what
they expect:

  gpt2     Conv1D weights back to [out, in]; ``output.weight`` written even when tied
  gptneox  fused QKV rows from NeoX's per-head [q_h; k_h; v_h] back to [q; k; v] (all heads each);
           ``output.weight`` written even when tied; zero attention biases where there are none
  llama    (bias = false only: transformers' llama GGUF reader drops biases)
           q and k rows permuted within each head from rotate-half pairs (i, i + D/2) to
           adjacent pairs (2i, 2i + 1), because llama.cpp's llama graph rotates adjacent pairs
  qwen3    as in HF (llama.cpp rotates Qwen3 in NeoX/rotate-half style); q/k norm weights of 1

All tensors are float32 (file type ALL_F32). Metadata keys are gguf's (``{arch}.context_length``,
``{arch}.attention.layer_norm_epsilon`` ...). Tokenizers: ``bpe`` is written as llama.cpp's
``gpt2`` BPE (tokens, merges, token types); ``char``, ``word`` and ``byte`` have no llama.cpp
tokenizer model and are written as ``tokenizer.ggml.model = none`` with their token list. Every file also carries
the cllm tokenizer's JSON under ``cllm.tokenizer``.

Known difference: llama.cpp (and transformers' GGUF reader) compute GPT-2 and GPT-NeoX GELU with
the tanh approximation, while cllm's is exact; logits of such files differ slightly (~1e-3).
Checked by hand with llama.cpp itself (llama-cpp-cffi 0.4.42, float32 KV cache, tiny random
models): llama logits equal cllm's within 1e-6, gpt2 and gptneox within 1e-3 (the GELU), BPE
token ids equal; that build predates Qwen3, which is checked through transformers only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import CLLMError
from ..tokenizers import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, Tokenizer
from .hf import neox_qkv_inverse, to_hf


def _gguf():
    try:
        import gguf
    except ImportError:
        raise CLLMError("GGUF export needs the 'gguf' package (pip install 'cllm[export]')") from None
    return gguf


def llama_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """q or k rows [H * D, ...]: within each head, rotate-half order (first halves, then second
    halves) -> interleaved order (pairs adjacent), which llama.cpp's llama rope expects."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _arch(gguf, config: dict):
    return {"gpt2": gguf.MODEL_ARCH.GPT2, "gpt_neox": gguf.MODEL_ARCH.GPTNEOX,
            "llama": gguf.MODEL_ARCH.LLAMA, "qwen3": gguf.MODEL_ARCH.QWEN3}[config["model_type"]]


def gguf_tensors(config: dict, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF tensors -> GGUF-named tensors in llama.cpp's layouts (see the module docstring)."""
    gguf = _gguf()
    kind = config["model_type"]
    n_layer = config.get("n_layer", config.get("num_hidden_layers"))
    n_head = config.get("n_head", config.get("num_attention_heads"))
    names = gguf.get_tensor_name_map(_arch(gguf, config), n_layer)
    t = dict(tensors)
    if kind in ("gpt2", "gpt_neox") and "lm_head.weight" not in t and "embed_out.weight" not in t:
        t["lm_head.weight"] = t["transformer.wte.weight" if kind == "gpt2" else "gpt_neox.embed_in.weight"]
    out = {}
    for name, w in t.items():
        if kind == "gpt2" and name.endswith(".weight") and any(k in name for k in (".c_attn.", ".c_proj.", ".c_fc.")):
            w = w.t()
        elif kind == "gpt_neox" and ".query_key_value." in name:
            w = neox_qkv_inverse(w, n_head)
        elif kind == "llama" and (".q_proj." in name or ".k_proj." in name):
            w = llama_permute(w, n_head)
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise CLLMError(f"GGUF export: no llama.cpp name for tensor {name}")
        out[new] = w.float().contiguous()
    if kind == "gpt_neox":  # llama.cpp's gptneox graph adds attention biases unconditionally
        C = config["hidden_size"]
        for i in range(n_layer):
            out.setdefault(f"blk.{i}.attn_qkv.bias", torch.zeros(3 * C))
            out.setdefault(f"blk.{i}.attn_output.bias", torch.zeros(C))
    return out


def _write_hparams(w, config: dict) -> None:
    kind = config["model_type"]
    w.add_vocab_size(config["vocab_size"])  # llama.cpp sizes the vocab from this when the tokenizer is "none"
    if kind == "gpt2":
        C = config["n_embd"]
        w.add_context_length(config["n_positions"])
        w.add_embedding_length(C)
        w.add_feed_forward_length(config["n_inner"])
        w.add_block_count(config["n_layer"])
        w.add_head_count(config["n_head"])
        w.add_layer_norm_eps(config["layer_norm_epsilon"])
        return
    C, H = config["hidden_size"], config["num_attention_heads"]
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(C)
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_head_count(H)
    w.add_rope_freq_base(config.get("rope_theta", config.get("rotary_emb_base")))
    if kind == "gpt_neox":
        w.add_rope_dimension_count(int(C // H * config["rotary_pct"]))
        w.add_parallel_residual(config["use_parallel_residual"])
        w.add_layer_norm_eps(config["layer_norm_eps"])
    else:
        w.add_head_count_kv(config["num_key_value_heads"])
        w.add_layer_norm_rms_eps(config["rms_norm_eps"])
        if kind == "llama":
            w.add_rope_dimension_count(config["head_dim"])
        else:
            w.add_key_length(config["head_dim"])
            w.add_value_length(config["head_dim"])


def _write_tokenizer(w, gguf, tok: Tokenizer, vocab_size: int) -> None:
    types = [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS)
    if tok.kind == "bpe":
        spec = json.loads(tok.to_dict()["hf_tokenizer"])
        vocab = spec["model"]["vocab"]
        tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_merges(merges)
    else:
        # char, word, byte: no llama.cpp tokenizer model cuts text this way (a byte-level BPE
        # without merges would, but llama.cpp requires the merges key and gguf cannot write an
        # empty array), so the file names no model and lists the tokens for display.
        tokens = [tok.id_to_token(i) for i in range(tok.vocab_size)]
        w.add_tokenizer_model("none")
    types += [gguf.TokenType.NORMAL] * (len(tokens) - len(types))
    # A model may have more embedding rows than the tokenizer has ids; llama.cpp wants one entry each.
    tokens += [f"<unused{i}>" for i in range(len(tokens), vocab_size)]
    types += [gguf.TokenType.UNUSED] * (vocab_size - len(types))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_unk_token_id(UNK_ID)
    w.add_pad_token_id(PAD_ID)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_string("cllm.tokenizer", tok.to_json())


def export_gguf(model: torch.nn.Module, tokenizer: Tokenizer, out: str | Path) -> Path:
    """Write ``out`` (a .gguf file; a directory gets ``model.gguf`` inside) for a model whose
    options map to an HF architecture (the same refusals as the HF export)."""
    gguf = _gguf()
    config, tensors = to_hf(model.cfg, model.state_dict())
    if config.get("activation_function", config.get("hidden_act")) == "relu2":
        raise CLLMError("mlp = relu2: llama.cpp's gpt2 and gptneox graphs use GELU; GGUF export needs mlp = gelu")
    if config["model_type"] == "llama" and model.cfg.bias:
        # transformers' GGUF reader drops llama biases without a word; refuse rather than mislead.
        raise CLLMError("bias = true with rmsnorm + swiglu: llama GGUF readers do not load biases; "
                        "GGUF export needs bias = false")
    out = Path(out)
    if out.is_dir() or not out.suffix:
        out.mkdir(parents=True, exist_ok=True)
        out = out / "model.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    arch = gguf.MODEL_ARCH_NAMES[_arch(gguf, config)]
    w = gguf.GGUFWriter(str(out), arch)
    w.add_name("cllm")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    _write_hparams(w, config)
    _write_tokenizer(w, gguf, tokenizer, config["vocab_size"])
    for name, tensor in gguf_tensors(config, tensors).items():
        w.add_tensor(name, tensor.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
