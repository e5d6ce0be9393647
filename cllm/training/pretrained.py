"""``init_from``: start a run from pretrained weights (a cllm run or checkpoint, or an exported HF
directory) instead of a random initialisation, to fine-tune or to continue on new data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..config import Config, ModelConfig
from ..tokenizers import Tokenizer

# What a run may choose for itself when it starts from pretrained weights: everything else about
# the model is the pretrained one's, since the weights only fit that shape.
RUN_CHOSEN_MODEL_SETTINGS = ("dropout",)


@dataclass
class Pretrained:
    model: ModelConfig
    state_dict: dict[str, torch.Tensor]
    tokenizer: Tokenizer


def load_for_init(cfg: Config) -> Pretrained:
    """Read ``cfg.train.init_from``: its model settings (the run keeps its own dropout), weights with
    cllm's names, and the tokenizer the run's data must be encoded with. One-line errors for a path
    that is no model or an architecture cllm cannot express (``cllm.interop.load_pretrained``)."""
    from ..interop import load_pretrained

    fields, state_dict, tokenizer = load_pretrained(cfg.train.init_from)
    kept = {name: getattr(cfg.model, name) for name in RUN_CHOSEN_MODEL_SETTINGS}
    model = dataclasses.replace(ModelConfig(), **{**fields, **kept})
    return Pretrained(model, state_dict, tokenizer)
