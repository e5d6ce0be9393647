"""cllm models <-> Hugging Face transformers architectures (config.json + model.safetensors).

Which architecture a model becomes follows its options (``hf_architecture``):

  learned positions + LayerNorm + GELU/ReLU²      -> GPT2LMHeadModel
  RoPE + LayerNorm + GELU/ReLU²                   -> GPTNeoXForCausalLM (sequential residual, full rotary)
  RoPE + RMSNorm + SwiGLU                         -> LlamaForCausalLM
  RoPE + RMSNorm + SwiGLU + QK-norm (no biases)   -> Qwen3ForCausalLM (per-head q/k RMSNorm, weight 1)

Everything else is refused with a one-line CLLMError naming the option. Shapes below use
C = n_embd, H = n_head, D = C / H, F = MLP hidden width, V = vocab, L = layers.
Where cllm has ``bias = false`` but the HF architecture always has a bias (GPT-2 everywhere,
GPT-NeoX's MLP and LayerNorms), the bias is written as zeros; on import, a model whose biases
are all zero comes back with ``bias = false``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import CLLMError
from ..tokenizers import BOS_ID, EOS_ID, PAD_ID

# nn.RMSNorm(eps=None) and F.rms_norm(eps=None) use the float32 machine epsilon.
RMS_EPS = float(torch.finfo(torch.float32).eps)
LN_EPS = 1e-5  # nn.LayerNorm's default, which cllm uses
ROPE_BASE = 10000.0  # cllm.model.rotary_tables' base
ACTS = {"gelu": "gelu", "relu2": "relu2"}  # transformers' ACT2FN names: exact erf GELU, ReLU²


def swiglu_hidden(n_embd: int) -> int:
    return 64 * math.ceil(8 * n_embd / 3 / 64)  # as cllm.model.MLP


def hf_architecture(m: ModelConfig) -> str:
    """The HF architecture class name for a model config, or CLLMError naming what has none."""
    if m.logit_softcap > 0:
        raise CLLMError(f"logit_softcap = {m.logit_softcap}: no HF architecture soft-caps logits this way; "
                        "export needs logit_softcap = 0")
    if m.pos_encoding not in ("learned", "rope"):
        raise CLLMError(f"pos_encoding = {m.pos_encoding}: no HF architecture has this position encoding; "
                        "export needs learned or rope")
    if m.norm == "layernorm" and m.mlp in ACTS:
        if m.qk_norm:
            raise CLLMError("qk_norm with norm = layernorm: no HF architecture has both; "
                            "QK-norm exports as Qwen3 (rope + rmsnorm + swiglu)")
        return "GPT2LMHeadModel" if m.pos_encoding == "learned" else "GPTNeoXForCausalLM"
    if m.norm == "rmsnorm" and m.mlp == "swiglu" and m.pos_encoding == "rope":
        if not m.qk_norm:
            return "LlamaForCausalLM"
        if m.bias:
            raise CLLMError("qk_norm with bias = true: Qwen3, the HF architecture with per-head QK-norm, "
                            "has no MLP biases; export needs bias = false")
        return "Qwen3ForCausalLM"
    raise CLLMError(f"pos_encoding = {m.pos_encoding}, norm = {m.norm}, mlp = {m.mlp}: no HF architecture "
                    "has this combination (learned/rope + layernorm + gelu/relu2, or rope + rmsnorm + swiglu)")


# ---------------------------------------------------------------------------------------------
# export: cllm state dict -> (config.json dict, HF tensors)


def _common(m: ModelConfig) -> dict:
    return {"vocab_size": m.vocab_size, "tie_word_embeddings": m.tie_embeddings, "bos_token_id": BOS_ID,
            "eos_token_id": EOS_ID, "pad_token_id": PAD_ID, "torch_dtype": "float32", "use_cache": True}


def _bias(sd: dict, name: str, size: int) -> torch.Tensor:
    """A bias from the state dict, or zeros where cllm has none (bias = false)."""
    return sd[name] if name in sd else torch.zeros(size)


def _gpt2(m: ModelConfig, sd: dict) -> tuple[dict, dict]:
    """wte [V, C], wpe [T, C]; per block ln_1/ln_2 [C], c_attn [C, 3C] (Conv1D: [in, out]),
    attn.c_proj [C, C], c_fc [C, 4C], mlp.c_proj [4C, C], every one with a bias; ln_f [C]."""
    C = m.n_embd
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_positions": m.block_size,
              "n_ctx": m.block_size, "n_embd": C, "n_layer": m.n_layer, "n_head": m.n_head, "n_inner": 4 * C,
              "activation_function": ACTS[m.mlp], "layer_norm_epsilon": LN_EPS, "resid_pdrop": m.dropout,
              "embd_pdrop": m.dropout, "attn_pdrop": m.dropout, "scale_attn_weights": True,
              "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, **_common(m)}
    t = {"transformer.wte.weight": sd["wte.weight"], "transformer.wpe.weight": sd["wpe.weight"]}
    # GPT-2's Conv1D stores weights as [in, out]: every Linear weight [out, in] is transposed.
    for i in range(m.n_layer):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        for ours, theirs, n in (("ln_1", "ln_1", C), ("ln_2", "ln_2", C)):
            t[h + theirs + ".weight"] = sd[b + ours + ".weight"]
            t[h + theirs + ".bias"] = _bias(sd, b + ours + ".bias", n)
        for ours, theirs, n in (("attn.c_attn", "attn.c_attn", 3 * C), ("attn.c_proj", "attn.c_proj", C),
                                ("mlp.c_fc", "mlp.c_fc", 4 * C), ("mlp.c_proj", "mlp.c_proj", C)):
            t[h + theirs + ".weight"] = sd[b + ours + ".weight"].t()
            t[h + theirs + ".bias"] = _bias(sd, b + ours + ".bias", n)
    t["transformer.ln_f.weight"] = sd["ln_f.weight"]
    t["transformer.ln_f.bias"] = _bias(sd, "ln_f.bias", C)
    if not m.tie_embeddings:
        t["lm_head.weight"] = sd["lm_head.weight"]
    return config, t


def neox_qkv(w: torch.Tensor, H: int) -> torch.Tensor:
    """cllm's fused [q; k; v] rows ([3C, ...], each block all heads) -> GPT-NeoX's per-head
    [q_h; k_h; v_h] interleave (its attention views the output as [.., H, 3D] and chunks by 3)."""
    rest = w.shape[1:]
    return w.reshape(3, H, -1, *rest).transpose(0, 1).reshape(w.shape)


def neox_qkv_inverse(w: torch.Tensor, H: int) -> torch.Tensor:
    rest = w.shape[1:]
    return w.reshape(H, 3, -1, *rest).transpose(0, 1).reshape(w.shape)


def _neox(m: ModelConfig, sd: dict) -> tuple[dict, dict]:
    """embed_in [V, C]; per layer two LayerNorms [C] (with bias), query_key_value [3C, C] in the
    per-head interleave, dense [C, C], dense_h_to_4h [4C, C] and dense_4h_to_h [C, 4C] (always
    with biases); embed_out [V, C] unless tied. Rotary: full head, base 10000, rotate-half."""
    C, H = m.n_embd, m.n_head
    config = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": C,
              "num_hidden_layers": m.n_layer, "num_attention_heads": H, "intermediate_size": 4 * C,
              "hidden_act": ACTS[m.mlp], "max_position_embeddings": m.block_size, "layer_norm_eps": LN_EPS,
              "use_parallel_residual": False, "attention_bias": m.bias, "attention_dropout": m.dropout,
              "hidden_dropout": m.dropout,
              # the transformers 4.x keys and the 5.x rope_parameters, so either version reads it
              "rotary_pct": 1.0, "rotary_emb_base": ROPE_BASE,
              "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_BASE, "partial_rotary_factor": 1.0},
              **_common(m)}
    t = {"gpt_neox.embed_in.weight": sd["wte.weight"]}
    for i in range(m.n_layer):
        b, h = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        for ours, theirs in (("ln_1", "input_layernorm"), ("ln_2", "post_attention_layernorm")):
            t[h + theirs + ".weight"] = sd[b + ours + ".weight"]
            t[h + theirs + ".bias"] = _bias(sd, b + ours + ".bias", C)
        t[h + "attention.query_key_value.weight"] = neox_qkv(sd[b + "attn.c_attn.weight"], H)
        t[h + "attention.dense.weight"] = sd[b + "attn.c_proj.weight"]
        if m.bias:
            t[h + "attention.query_key_value.bias"] = neox_qkv(sd[b + "attn.c_attn.bias"], H)
            t[h + "attention.dense.bias"] = sd[b + "attn.c_proj.bias"]
        t[h + "mlp.dense_h_to_4h.weight"] = sd[b + "mlp.c_fc.weight"]
        t[h + "mlp.dense_h_to_4h.bias"] = _bias(sd, b + "mlp.c_fc.bias", 4 * C)
        t[h + "mlp.dense_4h_to_h.weight"] = sd[b + "mlp.c_proj.weight"]
        t[h + "mlp.dense_4h_to_h.bias"] = _bias(sd, b + "mlp.c_proj.bias", C)
    t["gpt_neox.final_layer_norm.weight"] = sd["ln_f.weight"]
    t["gpt_neox.final_layer_norm.bias"] = _bias(sd, "ln_f.bias", C)
    if not m.tie_embeddings:
        t["embed_out.weight"] = sd["lm_head.weight"]  # 4.x name; 5.x renames it to lm_head on load
    return config, t


def _llama(m: ModelConfig, sd: dict, qwen3: bool) -> tuple[dict, dict]:
    """embed_tokens [V, C]; per layer RMSNorm weights [C], q/k/v/o_proj [C, C], gate/up_proj
    [F, C], down_proj [C, F] (biases when cllm has them; Qwen3 has none in its MLP), Qwen3's
    q_norm/k_norm [D]; norm [C]; lm_head [V, C] unless tied. Both rotate halves, as cllm does."""
    C, H, F = m.n_embd, m.n_head, swiglu_hidden(m.n_embd)
    config = {"architectures": ["Qwen3ForCausalLM" if qwen3 else "LlamaForCausalLM"],
              "model_type": "qwen3" if qwen3 else "llama", "hidden_size": C, "intermediate_size": F,
              "num_hidden_layers": m.n_layer, "num_attention_heads": H, "num_key_value_heads": H,
              "head_dim": C // H, "hidden_act": "silu", "max_position_embeddings": m.block_size,
              "rms_norm_eps": RMS_EPS, "attention_bias": m.bias, "attention_dropout": m.dropout,
              "rope_theta": ROPE_BASE, "rope_scaling": None,
              "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_BASE}, **_common(m)}
    if qwen3:
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=m.n_layer)
    else:
        config.update(mlp_bias=m.bias, pretraining_tp=1)
    t = {"model.embed_tokens.weight": sd["wte.weight"]}
    for i in range(m.n_layer):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        t[h + "input_layernorm.weight"] = sd[b + "ln_1.weight"]
        t[h + "post_attention_layernorm.weight"] = sd[b + "ln_2.weight"]
        # c_attn [3C, C] is q, k, v stacked; c_fc [2F, C] is gate then value (SiLU(gate) * value).
        for kind in ("weight", "bias") if m.bias else ("weight",):  # biases split like their weights
            for part, name in zip(sd[b + f"attn.c_attn.{kind}"].split(C), ("q_proj", "k_proj", "v_proj")):
                t[h + f"self_attn.{name}.{kind}"] = part
            t[h + f"self_attn.o_proj.{kind}"] = sd[b + f"attn.c_proj.{kind}"]
            gate, up = sd[b + f"mlp.c_fc.{kind}"].split(F)
            t[h + f"mlp.gate_proj.{kind}"], t[h + f"mlp.up_proj.{kind}"] = gate, up
            t[h + f"mlp.down_proj.{kind}"] = sd[b + f"mlp.c_proj.{kind}"]
        if qwen3:  # cllm's QK-norm has no weight: Qwen3's per-head RMSNorm with weight 1
            t[h + "self_attn.q_norm.weight"] = torch.ones(C // H)
            t[h + "self_attn.k_norm.weight"] = torch.ones(C // H)
    t["model.norm.weight"] = sd["ln_f.weight"]
    if not m.tie_embeddings:
        t["lm_head.weight"] = sd["lm_head.weight"]
    return config, t


def to_hf(m: ModelConfig, state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json contents, HF-named float32 tensors) for a cllm model; CLLMError if unmapped."""
    arch = hf_architecture(m)
    sd = {k: v.detach().float().cpu() for k, v in state_dict.items()}
    if arch == "GPT2LMHeadModel":
        config, tensors = _gpt2(m, sd)
    elif arch == "GPTNeoXForCausalLM":
        config, tensors = _neox(m, sd)
    else:
        config, tensors = _llama(m, sd, qwen3=arch == "Qwen3ForCausalLM")
    return config, {k: v.contiguous().clone() for k, v in tensors.items()}


def export_hf(model: torch.nn.Module, tokenizer, out: str | Path) -> Path:
    """Write ``out``/config.json, generation_config.json, model.safetensors and the tokenizer files.
    The mapping is checked before anything is written."""
    import safetensors.torch

    from .hf_tokenizer import write_hf_tokenizer

    m: ModelConfig = model.cfg
    config, tensors = to_hf(m, model.state_dict())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    generation = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=1), encoding="utf-8")
    safetensors.torch.save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    write_hf_tokenizer(tokenizer, out, m.block_size)
    return out


# ---------------------------------------------------------------------------------------------
# import: (config.json dict, HF tensors) -> (ModelConfig fields, cllm state dict)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise CLLMError(message)


def _rope(config: dict) -> tuple[float, float]:
    """(theta, rotary fraction) from either the 4.x keys or 5.x rope_parameters."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    _need(kind == "default", f"rope type {kind!r}: cllm's RoPE is unscaled")
    theta = float(params.get("rope_theta", config.get("rope_theta", config.get("rotary_emb_base", ROPE_BASE))))
    frac = float(params.get("partial_rotary_factor", config.get("rotary_pct", config.get("partial_rotary_factor", 1.0))))
    return theta, frac


def _from_gpt2(config: dict, t: dict) -> tuple[dict, dict]:
    C, L = config["n_embd"], config["n_layer"]
    act = config.get("activation_function", "gelu_new")
    _need(act in ACTS, f"GPT-2 activation_function = {act}: cllm has exact gelu and relu2 (not tanh GELU)")
    _need(config.get("n_inner") in (None, 4 * C), f"GPT-2 n_inner = {config.get('n_inner')}: cllm's MLP is 4 x n_embd")
    _need(config.get("scale_attn_weights", True) and not config.get("scale_attn_by_inverse_layer_idx", False),
          "GPT-2 attention scaling other than 1/sqrt(head_dim) has no cllm equivalent")
    cfg = dict(n_layer=L, n_head=config["n_head"], n_embd=C, block_size=config["n_positions"],
               pos_encoding="learned", norm="layernorm", mlp=act, dropout=float(config.get("resid_pdrop", 0.0)),
               layer_norm_eps=float(config.get("layer_norm_epsilon", LN_EPS)))
    sd = {"wte.weight": t["transformer.wte.weight"], "wpe.weight": t["transformer.wpe.weight"]}
    for i in range(L):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        for n in ("ln_1", "ln_2"):
            sd[b + n + ".weight"], sd[b + n + ".bias"] = t[h + n + ".weight"], t[h + n + ".bias"]
        for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            sd[b + n + ".weight"], sd[b + n + ".bias"] = t[h + n + ".weight"].t(), t[h + n + ".bias"]
    sd["ln_f.weight"], sd["ln_f.bias"] = t["transformer.ln_f.weight"], t["transformer.ln_f.bias"]
    sd["lm_head.weight"] = t.get("lm_head.weight", t["transformer.wte.weight"])
    return cfg, sd


def _from_neox(config: dict, t: dict) -> tuple[dict, dict]:
    C, H, L = config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"]
    act = config.get("hidden_act", "gelu")
    _need(act in ACTS, f"GPT-NeoX hidden_act = {act}: cllm has gelu and relu2")
    _need(not config.get("use_parallel_residual", True), "GPT-NeoX use_parallel_residual = true: cllm's blocks are sequential")
    theta, frac = _rope(config)
    _need(frac == 1.0, f"GPT-NeoX rotary_pct = {frac}: cllm rotates the whole head")
    _need(theta == ROPE_BASE, f"rope theta = {theta}: cllm's RoPE base is {ROPE_BASE:g}")
    _need(config.get("intermediate_size", 4 * C) == 4 * C, "GPT-NeoX intermediate_size must be 4 x hidden_size for cllm")
    cfg = dict(n_layer=L, n_head=H, n_embd=C, block_size=config["max_position_embeddings"], pos_encoding="rope",
               norm="layernorm", mlp=act, dropout=float(config.get("hidden_dropout", 0.0)),
               layer_norm_eps=float(config.get("layer_norm_eps", LN_EPS)))
    sd = {"wte.weight": t["gpt_neox.embed_in.weight"]}
    for i in range(L):
        b, h = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        for ours, theirs in (("ln_1", "input_layernorm"), ("ln_2", "post_attention_layernorm")):
            sd[b + ours + ".weight"], sd[b + ours + ".bias"] = t[h + theirs + ".weight"], t[h + theirs + ".bias"]
        sd[b + "attn.c_attn.weight"] = neox_qkv_inverse(t[h + "attention.query_key_value.weight"], H)
        if h + "attention.query_key_value.bias" in t:
            sd[b + "attn.c_attn.bias"] = neox_qkv_inverse(t[h + "attention.query_key_value.bias"], H)
        for ours, theirs in (("attn.c_proj", "attention.dense"), ("mlp.c_fc", "mlp.dense_h_to_4h"),
                             ("mlp.c_proj", "mlp.dense_4h_to_h")):
            sd[b + ours + ".weight"] = t[h + theirs + ".weight"]
            if h + theirs + ".bias" in t:
                sd[b + ours + ".bias"] = t[h + theirs + ".bias"]
    sd["ln_f.weight"], sd["ln_f.bias"] = t["gpt_neox.final_layer_norm.weight"], t["gpt_neox.final_layer_norm.bias"]
    sd["lm_head.weight"] = t.get("embed_out.weight", t.get("lm_head.weight", sd["wte.weight"]))
    return cfg, sd


def _from_llama(config: dict, t: dict, qwen3: bool) -> tuple[dict, dict]:
    C, H, L = config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"]
    name = "Qwen3" if qwen3 else "Llama"
    _need(config.get("hidden_act", "silu") == "silu", f"{name} hidden_act = {config.get('hidden_act')}: cllm's SwiGLU uses silu")
    _need(config.get("num_key_value_heads", H) == H, f"{name} num_key_value_heads = {config.get('num_key_value_heads')}: "
          "cllm has no grouped-query attention")
    _need(config.get("head_dim", C // H) == C // H, f"{name} head_dim = {config.get('head_dim')}: cllm's is hidden_size / heads")
    _need(config["intermediate_size"] == swiglu_hidden(C), f"{name} intermediate_size = {config['intermediate_size']}: "
          f"cllm's SwiGLU width for hidden_size {C} is {swiglu_hidden(C)}")
    eps = float(config.get("rms_norm_eps", 1e-6))
    _need(math.isclose(eps, RMS_EPS, rel_tol=1e-6), f"{name} rms_norm_eps = {eps:g}: cllm's RMSNorm uses {RMS_EPS:g}")
    theta, _ = _rope(config)
    _need(theta == ROPE_BASE, f"rope theta = {theta:g}: cllm's RoPE base is {ROPE_BASE:g}")
    cfg = dict(n_layer=L, n_head=H, n_embd=C, block_size=config["max_position_embeddings"], pos_encoding="rope",
               norm="rmsnorm", mlp="swiglu", qk_norm=qwen3, dropout=float(config.get("attention_dropout", 0.0)))
    sd = {"wte.weight": t["model.embed_tokens.weight"]}
    for i in range(L):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        sd[b + "ln_1.weight"] = t[h + "input_layernorm.weight"]
        sd[b + "ln_2.weight"] = t[h + "post_attention_layernorm.weight"]
        if qwen3:
            for n in ("q_norm", "k_norm"):
                _need(bool((t[h + f"self_attn.{n}.weight"] == 1).all()), f"Qwen3 layer {i} {n} has learned weights: "
                      "cllm's QK-norm has none")
        attn = [h + f"self_attn.{n}_proj" for n in "qkv"]
        mlp = [h + "mlp.gate_proj", h + "mlp.up_proj"]
        sd[b + "attn.c_attn.weight"] = torch.cat([t[n + ".weight"] for n in attn])
        sd[b + "attn.c_proj.weight"] = t[h + "self_attn.o_proj.weight"]
        sd[b + "mlp.c_fc.weight"] = torch.cat([t[n + ".weight"] for n in mlp])
        sd[b + "mlp.c_proj.weight"] = t[h + "mlp.down_proj.weight"]
        if any(n + ".bias" in t for n in [*attn, *mlp, h + "self_attn.o_proj", h + "mlp.down_proj"]):
            zeros = lambda n, size: t.get(n + ".bias", torch.zeros(size))  # noqa: E731
            sd[b + "attn.c_attn.bias"] = torch.cat([zeros(n, C) for n in attn])
            sd[b + "attn.c_proj.bias"] = zeros(h + "self_attn.o_proj", C)
            sd[b + "mlp.c_fc.bias"] = torch.cat([zeros(n, config["intermediate_size"]) for n in mlp])
            sd[b + "mlp.c_proj.bias"] = zeros(h + "mlp.down_proj", C)
    sd["ln_f.weight"] = t["model.norm.weight"]
    sd["lm_head.weight"] = t.get("lm_head.weight", sd["wte.weight"])
    return cfg, sd


def from_hf(config: dict, tensors: dict[str, torch.Tensor], where: str = "model") -> tuple[dict, dict]:
    """(ModelConfig field values, cllm state dict) for an HF config and its tensors; CLLMError if
    the architecture or one of its settings has no cllm equivalent."""
    kind = config.get("model_type")
    readers = {"gpt2": _from_gpt2, "gpt_neox": _from_neox,
               "llama": lambda c, t: _from_llama(c, t, False), "qwen3": lambda c, t: _from_llama(c, t, True)}
    if kind not in readers:
        raise CLLMError(f"{where}: model_type {kind!r} cannot be imported (cllm reads gpt2, gpt_neox, llama, qwen3)")
    try:
        cfg, sd = readers[kind](config, tensors)
    except KeyError as e:
        raise CLLMError(f"{where}: {kind} config or weights lack {e}") from None
    eps = cfg.pop("layer_norm_eps", LN_EPS)
    _need(math.isclose(eps, LN_EPS, rel_tol=1e-6), f"{where}: layer norm epsilon {eps:g}: cllm's LayerNorm uses {LN_EPS:g}")
    tie = bool(config.get("tie_word_embeddings", kind == "gpt2"))  # transformers' defaults
    if tie:
        sd["lm_head.weight"] = sd["wte.weight"]
    # bias = false only if every bias is zero (then dropping them changes nothing); with
    # bias = true, a bias the HF model lacks is zero.
    has_bias = any(k.endswith(".bias") and bool(v.any()) for k, v in sd.items())
    if not has_bias:
        sd = {k: v for k, v in sd.items() if not k.endswith(".bias")}
    cfg.update(vocab_size=sd["wte.weight"].shape[0], bias=has_bias, tie_embeddings=tie)
    fields = dataclasses.asdict(ModelConfig(**cfg))
    return fields, _complete(fields, sd, where)


def _complete(fields: dict, sd: dict, where: str) -> dict[str, torch.Tensor]:
    """Check sd against the parameters a cllm GPT of this config has (built on the meta device, so
    nothing is allocated); a missing bias is zero, anything else missing or mis-shaped is an error."""
    from ..model import GPT

    with torch.device("meta"):
        expected = dict(GPT(ModelConfig(**fields)).named_parameters(remove_duplicate=False))
    out = {}
    for name, ref in expected.items():
        if name not in sd and name.endswith(".bias"):
            out[name] = torch.zeros(ref.shape)
            continue
        _need(name in sd, f"{where}: no weight for cllm's {name}")
        _need(tuple(sd[name].shape) == tuple(ref.shape),
              f"{where}: {name} has shape {tuple(sd[name].shape)}, cllm expects {tuple(ref.shape)}")
        out[name] = sd[name].float().contiguous()
    extra = sorted(set(sd) - set(expected))
    _need(not extra, f"{where}: weights cllm has no place for: {', '.join(extra[:3])}")
    if fields["tie_embeddings"]:
        out["lm_head.weight"] = out["wte.weight"]
    return out
