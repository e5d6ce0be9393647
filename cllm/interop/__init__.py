"""Models that leave cllm and come back: Hugging Face transformers directories and GGUF files.

``export_hf`` / ``cllm export --format hf`` writes a directory transformers loads with no custom
code (GPT-2, GPT-NeoX, Llama or Qwen3, chosen by the model's options; see ``hf``);
``export_gguf`` writes llama.cpp's format; ``load_pretrained`` reads an exported directory (or a
cllm run or checkpoint) back as (ModelConfig fields, cllm state dict, tokenizer) for
``cllm train --init-from``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..errors import CLLMError
from ..tokenizers import Tokenizer
from .hf import export_hf, from_hf, hf_architecture, to_hf

__all__ = ["export_hf", "export_gguf", "load_pretrained", "hf_architecture", "to_hf", "from_hf"]


def export_gguf(model, tokenizer, out):
    from .gguf import export_gguf as _export

    return _export(model, tokenizer, out)


def _read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    import safetensors.torch

    index = directory / "model.safetensors.index.json"
    if index.is_file():  # sharded: {"weight_map": {tensor: file}}
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    elif (directory / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise CLLMError(f"{directory} has no model.safetensors (cllm reads safetensors weights only)")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            tensors.update(safetensors.torch.load_file(str(directory / name)))
        except Exception as e:  # safetensors raises several types for malformed files
            raise CLLMError(f"cannot read {directory / name}: {str(e).splitlines()[0]}") from None
    return tensors


def load_pretrained(path: str | Path) -> tuple[dict, dict[str, torch.Tensor], Tokenizer]:
    """An exported HF directory (GPT-2, GPT-NeoX, Llama or Qwen3 within cllm's options) or a cllm
    run/checkpoint directory -> (ModelConfig field values, state dict with cllm names, tokenizer).

    ``GPT(ModelConfig(**cfg)).load_state_dict(sd)`` then rebuilds the model; the state dict holds
    ``lm_head.weight`` too (the same tensor as ``wte.weight`` when tied). Anything else is a
    one-line CLLMError.
    """
    path = Path(path)
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CLLMError(f"{path / 'config.json'} is not valid JSON") from None
        if not isinstance(config, dict):
            raise CLLMError(f"{path / 'config.json'} is not a JSON object")
        from .hf_tokenizer import read_cllm_tokenizer

        fields, sd = from_hf(config, _read_safetensors(path), where=str(path))
        tokenizer = read_cllm_tokenizer(path)
        if tokenizer.vocab_size > fields["vocab_size"]:
            raise CLLMError(f"{path}: the tokenizer has {tokenizer.vocab_size} ids, the model only {fields['vocab_size']}")
        return fields, sd, tokenizer
    from ..checkpoint import load_model

    if not path.exists():
        raise CLLMError(f"pretrained model not found: {path}")
    model, tokenizer, cfg = load_model(path)
    sd = {k: v.detach().clone() for k, v in model.named_parameters(remove_duplicate=False)}
    if cfg.model.tie_embeddings:
        sd["lm_head.weight"] = sd["wte.weight"]
    return dataclasses.asdict(cfg.model), sd, tokenizer
