"""The run configuration: one typed dataclass tree, validated in one place.

Resolution order, later wins: dataclass defaults -> preset (TOML in cllm/presets/) -> --config file
(TOML) -> command-line flags. Every field has a flag named after it (``--n-layer``, ``--lr``, ...);
field names are unique across sections so a flag always means one thing. Each field's help text,
allowed values and multi-value joiner are its metadata (``setting``): the flags, their --help and
``validate`` are all generated from it, so nothing is written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import CLLMError

# Positional encodings that are a fixed [n_positions, n_embd] table added to the token embeddings
# (built in cllm.crystalline).
FIXED_POSITION_TABLES = ("sinusoidal", "ulam", "clock", "prime")
# Token-embedding initialisations besides the plain normal one (cllm.crystalline).
TOKEN_EMBEDDING_INITS = ("crystalline",)
# Handling of invalid UTF-8 in input text: stop | U+FFFD | drop the bad bytes (cllm.data.sources).
UTF8_ERRORS = ("strict", "replace", "skip")


def setting(default: Any, help: str, choices: tuple = (), multiple: str = ""):
    """A config field with its --help text, its allowed values (checked by ``validate``), and, for a
    string that may name several things, the separator its flag joins repeated values with."""
    return field(default=default, metadata={"help": help, "choices": tuple(choices), "multiple": multiple})


@dataclass
class ModelConfig:
    n_layer: int = setting(4, 'transformer blocks')
    n_head: int = setting(4, 'attention heads per block')
    n_embd: int = setting(128, 'width of the residual stream')
    block_size: int = setting(64, 'context length in tokens')
    vocab_size: int = setting(0, '0: taken from the tokenizer when the data is prepared')
    dropout: float = setting(0.0, 'dropout on embeddings, residual branches and attention weights')
    bias: bool = setting(True, 'biases in linear layers and LayerNorm')
    tie_embeddings: bool = setting(True, 'the LM head shares the token-embedding matrix')
    # rope won the ablation (docs/ABLATION.md): -0.19 nats at equal tokens vs learned positions.
    pos_encoding: str = setting("rope", "positions: rotary, a learned table, none, or a fixed table",
                                choices=("rope", "learned", "none", *FIXED_POSITION_TABLES))
    embedding_init: str = setting("normal", "token-embedding initialisation", choices=("normal", *TOKEN_EMBEDDING_INITS))
    norm: str = setting("layernorm", "normalisation layers", choices=("layernorm", "rmsnorm"))
    qk_norm: bool = setting(False, 'RMS-normalise queries and keys per head')
    mlp: str = setting("gelu", "MLP non-linearity", choices=("gelu", "relu2", "swiglu"))
    zero_init_proj: bool = setting(False, "start every block's output projections at zero")
    logit_softcap: float = setting(0.0, '> 0: logits = cap * tanh(logits / cap)')


@dataclass
class DataConfig:
    data: str = setting("", "text files, folders (recursive), .jsonl files, or a prepared dataset directory; "
                            "several as --data A B or joined by os.pathsep; none: the bundled corpus", multiple=os.pathsep)
    tokenizer: str = setting("char", "tokenizer kind", choices=("char", "byte", "word", "bpe"))
    tokenizer_vocab_size: int = setting(8192, 'for tokenizers that learn a vocabulary of a chosen size')
    val_fraction: float = setting(0.1, 'share of the corpus held out for validation')
    errors: str = setting("strict", "invalid UTF-8: stop with file and byte offset | replace with U+FFFD | "
                                    "skip the bad bytes", choices=UTF8_ERRORS)
    text_field: str = setting("text", 'the field of each JSONL record that holds its text')
    skip_bad_lines: bool = setting(False, 'JSONL lines that are not JSON or lack the field: skip (counted) instead of stopping')
    include: str = setting("", "globs: in directories, read only files whose relative path or name matches "
                               "(repeatable, or comma-separated)", multiple=",")
    exclude: str = setting("", "globs: in directories, skip files whose relative path or name matches "
                               "(repeatable, or comma-separated)", multiple=",")
    split_seed: int = setting(1337, 'seeds the choice of val documents (corpora of several documents)')
    shard_tokens: int = setting(1 << 26, 'tokens per shard file')
    tokenizer_sample_mb: int = setting(64, 'word/bpe tokenizers train on an even sample of at most this many MB')
    workers: int = setting(0, 'processes that tokenise in parallel; 0: all cores')


@dataclass
class TrainConfig:
    out: str = setting("runs/default", 'run directory: checkpoints, metrics.jsonl, loss.png, prepared data')
    batch_size: int = setting(12, 'sequences per micro-batch')
    grad_accum: int = setting(1, 'micro-batches per optimizer step')
    max_steps: int = setting(2000, 'optimizer steps in the whole run')
    optimizer: str = setting("adamw", "muon: Muon for block matrices, AdamW for the rest", choices=("adamw", "muon"))
    lr: float = setting(1e-3, "AdamW's peak learning rate")
    muon_lr: float = setting(0.02, "Muon's peak learning rate (with optimizer = muon)")
    min_lr: float = setting(1e-4, 'learning rate at the end of the decay')
    schedule: str = setting("cosine", "learning-rate schedule (wsd: warmup-stable-decay)",
                            choices=("cosine", "linear", "constant", "wsd"))
    warmup_steps: int = setting(100, 'steps of linear learning-rate warm-up')
    decay_fraction: float = setting(0.2, 'wsd: share of the run spent decaying to min_lr')
    weight_decay: float = setting(0.1, 'AdamW decoupled weight decay (matrices only)')
    beta1: float = setting(0.9, 'AdamW first-moment decay')
    beta2: float = setting(0.99, 'AdamW second-moment decay')
    grad_clip: float = setting(1.0, '0 disables clipping')
    max_bad_steps: int = setting(10, 'steps in a row with a non-finite loss or gradient norm (each skipped, '
                                     'no update) before the run stops with an error')
    eval_interval: int = setting(250, 'steps between validation evaluations')
    eval_batches: int = setting(20, '0: the whole validation split, every token scored once')
    log_interval: int = setting(10, 'steps between metrics.jsonl lines')
    save_interval: int = setting(500, 'steps between checkpoints (one is also written at the end and on Ctrl-C)')
    seed: int = setting(1337, 'seeds python, numpy, torch and the batch sampler')
    device: str = setting("auto", "auto: cuda when available", choices=("auto", "cpu", "cuda"))
    dtype: str = setting("auto", "auto: bfloat16 where the hardware has it, else float32",
                         choices=("auto", "float32", "bfloat16"))
    compile: bool = setting(True, 'torch.compile the model (falls back to eager when no compiler works)')
    compile_scope: str = setting("model", "what torch.compile compiles: the whole model as one graph (fastest steps), "
                                          "or one transformer block reused by every layer (base preset: its first step "
                                          "compiles 2.3x faster, steps run 10-15 % slower; for short runs)",
                                 choices=("model", "blocks"))
    activation_checkpointing: bool = setting(False, 'trade ~1/3 more compute for much less activation memory')
    threads: int = setting(0, '0: all cores')
    nproc: int = setting(1, 'processes to train with on this machine (data parallel, started with torchrun\'s '
                            'launcher); inside torchrun this is ignored')
    parallel: str = setting("ddp", "how several processes split the work: ddp replicates the model, fsdp shards "
                                   "parameters, gradients and optimizer state (FSDP2)", choices=("ddp", "fsdp"))
    sample_tokens: int = setting(200, 'printed at the end of training; 0 to skip')
    progress: bool = setting(True, "show the progress bar")
    log: str = setting("jsonl", "where metrics go besides the progress bar: metrics.jsonl, or also TensorBoard "
                                "event files in OUT/tensorboard (needs the tensorboard extra)", choices=("jsonl", "tensorboard"))
    init_from: str = setting("", "start from these weights: a cllm run or checkpoint directory, or an exported "
                                 "Hugging Face directory (cllm export)")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "Config":
        cfg = cls()
        apply_dict(cfg, data, where)
        return cfg

    def validate(self) -> "Config":
        """Raise CLLMError naming the first contradictory or out-of-range setting."""
        m, d, t = self.model, self.data, self.train
        for name, (section, _) in FIELDS.items():
            value = getattr(getattr(self, section), name)
            if isinstance(value, float) and not math.isfinite(value):
                raise CLLMError(f"{name} must be a finite number, got {value}")
        positive = {
            "n_layer": m.n_layer, "n_head": m.n_head, "n_embd": m.n_embd, "block_size": m.block_size,
            "batch_size": t.batch_size, "grad_accum": t.grad_accum, "max_steps": t.max_steps,
            "lr": t.lr, "muon_lr": t.muon_lr, "eval_interval": t.eval_interval,
            "log_interval": t.log_interval, "save_interval": t.save_interval, "max_bad_steps": t.max_bad_steps,
            "tokenizer_vocab_size": d.tokenizer_vocab_size, "shard_tokens": d.shard_tokens,
            "tokenizer_sample_mb": d.tokenizer_sample_mb,
        }
        for name, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise CLLMError(f"{name} must be positive, got {value}")
        if m.n_embd % m.n_head:
            raise CLLMError(f"n_embd ({m.n_embd}) must be divisible by n_head ({m.n_head})")
        if m.vocab_size < 0:
            raise CLLMError(f"vocab_size must be 0 (from the tokenizer) or positive, got {m.vocab_size}")
        if d.workers < 0:
            raise CLLMError(f"workers must be 0 (all cores) or positive, got {d.workers}")
        if d.shard_tokens <= m.block_size:
            raise CLLMError(f"shard_tokens ({d.shard_tokens}) must be more than block_size ({m.block_size})")
        if not d.text_field:
            raise CLLMError("text_field must not be empty")
        if not 0.0 <= m.dropout < 1.0:
            raise CLLMError(f"dropout must be in [0, 1), got {m.dropout}")
        if not 0.0 < d.val_fraction < 1.0:
            raise CLLMError(f"val_fraction must be between 0 and 1, got {d.val_fraction}")
        if not 0.0 <= t.min_lr <= t.lr:
            raise CLLMError(f"min_lr ({t.min_lr}) must be in [0, lr={t.lr}]")
        if t.eval_batches < 0:
            raise CLLMError(f"eval_batches must be >= 0 (0 = the whole validation split), got {t.eval_batches}")
        if t.nproc < 1:
            raise CLLMError(f"nproc must be >= 1, got {t.nproc}")
        for name in ("warmup_steps", "weight_decay", "grad_clip", "threads", "sample_tokens"):
            if getattr(t, name) < 0:
                raise CLLMError(f"{name} must be >= 0, got {getattr(t, name)}")
        if not (0.0 <= t.beta1 < 1.0 and 0.0 <= t.beta2 < 1.0):
            raise CLLMError(f"beta1 and beta2 must be in [0, 1), got {t.beta1}, {t.beta2}")
        if not 0.0 < t.decay_fraction <= 1.0:
            raise CLLMError(f"decay_fraction must be in (0, 1], got {t.decay_fraction}")
        if m.pos_encoding == "rope" and (m.n_embd // m.n_head) % 2:
            raise CLLMError(f"rope needs an even head size; n_embd / n_head = {m.n_embd // m.n_head}")
        if m.logit_softcap < 0:
            raise CLLMError(f"logit_softcap must be >= 0 (0 = off), got {m.logit_softcap}")
        for name, (section, f) in FIELDS.items():
            value, allowed = getattr(getattr(self, section), name), f.metadata["choices"]
            if allowed and value not in allowed:
                raise CLLMError(f"invalid choice {value!r} for {name}: {name} must be one of {', '.join(allowed)}")
        return self


SECTIONS = ("model", "data", "train")


def _field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    """field name -> (section, field); names are unique across sections by design."""
    index: dict[str, tuple[str, dataclasses.Field]] = {}
    for section in SECTIONS:
        for f in fields(Config.__dataclass_fields__[section].default_factory):
            assert f.name not in index, f"config field {f.name} is not unique"
            index[f.name] = (section, f)
    return index


FIELDS = _field_index()


def _coerce(value: Any, typ: Any, where: str) -> Any:
    typ = {"int": int, "float": float, "str": str, "bool": bool}.get(typ, typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, typ) and not isinstance(value, bool):
        return value
    raise CLLMError(f"{where} must be {typ.__name__}, got {value!r}")


def apply_dict(cfg: Config, data: dict, where: str) -> None:
    """Overlay ``{section: {field: value}}`` onto cfg, rejecting unknown keys and wrong types."""
    for section, values in data.items():
        if section not in SECTIONS or not isinstance(values, dict):
            raise CLLMError(f"{where}: unknown section [{section}] (expected {', '.join(SECTIONS)})")
        target = getattr(cfg, section)
        for name, value in values.items():
            if name not in target.__dataclass_fields__:
                raise CLLMError(f"{where}: unknown setting {section}.{name}")
            ftype = target.__dataclass_fields__[name].type
            setattr(target, name, _coerce(value, ftype, f"{where}: {section}.{name}"))


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CLLMError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CLLMError(f"config file {path} is not valid TOML: {e}") from None


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("cllm.presets").iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> dict:
    if name not in preset_names():
        raise CLLMError(f"unknown preset {name!r} (choose from {', '.join(preset_names())})")
    text = resources.files("cllm.presets").joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def add_config_arguments(parser: argparse.ArgumentParser, sections: tuple[str, ...] = SECTIONS,
                         presets: bool = True, default_preset: str = "small") -> None:
    """One flag per field of ``sections`` (and --preset, --config), all defaulting to None (= not given)."""
    if presets:
        parser.set_defaults(default_preset=default_preset)
        parser.add_argument("--preset", help=f"named preset: {', '.join(preset_names())} (default: "
                            f"{default_preset}); it and --config override the built-in defaults shown below")
        parser.add_argument("--config", metavar="TOML", help="TOML file with [model], [data], [train] tables")
    for section in sections:
        group = parser.add_argument_group(f"{section} settings")
        for name, (field_section, f) in FIELDS.items():
            if field_section != section:
                continue
            flag, meta = "--" + name.replace("_", "-"), f.metadata
            default = f.default if f.default != "" else "none"
            choices = f" ({' | '.join(meta['choices'])})" if meta["choices"] else ""
            help_text = f"{meta['help']}{choices} [default: {default}]".replace("%", "%%")
            if f.type in (bool, "bool"):
                group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            elif meta["multiple"]:  # --data A B --data C: joined into one string when the config is built
                group.add_argument(flag, dest=name, action="extend", nargs="+", default=None, metavar=name.upper(),
                                   help=help_text)
            else:
                typ = {"int": int, "float": float, "str": str}[f.type] if isinstance(f.type, str) else f.type
                # allowed values are checked by validate(), with the same message for TOML and flags
                group.add_argument(flag, dest=name, type=typ, default=None, metavar=name.upper(), help=help_text)


def flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The config fields given on the command line, as ``{section: {field: value}}``."""
    overrides: dict[str, dict[str, Any]] = {}
    for name, (section, f) in FIELDS.items():
        value = getattr(args, name, None)
        if value is not None:
            if f.metadata["multiple"] and isinstance(value, list):
                value = f.metadata["multiple"].join(value)
            overrides.setdefault(section, {})[name] = value
    return overrides


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> Config:
    """Build the resolved config: defaults -> preset -> base (e.g. a checkpoint's) -> --config -> flags."""
    cfg = Config()
    if base is not None:
        apply_dict(cfg, base, "checkpoint config")
    else:
        preset = getattr(args, "preset", None) or getattr(args, "default_preset", "small")
        apply_dict(cfg, load_preset(preset), "preset")
    if getattr(args, "config", None):
        apply_dict(cfg, read_toml(args.config), str(args.config))
    apply_dict(cfg, flag_overrides(args), "flags")
    return cfg.validate()


def resolve_vocab_size(model: ModelConfig, tokenizer_vocab_size: int) -> ModelConfig:
    """The model config with vocab_size taken from the tokenizer when it is 0 (a new copy: the
    caller's config is never changed); a set vocab_size must hold every token id."""
    if model.vocab_size == 0:
        return dataclasses.replace(model, vocab_size=tokenizer_vocab_size)
    if model.vocab_size < tokenizer_vocab_size:
        raise CLLMError(f"vocab_size {model.vocab_size} is smaller than the tokenizer's {tokenizer_vocab_size}")
    return model
