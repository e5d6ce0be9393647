"""The run configuration: one typed dataclass tree, validated in one place.

Resolution order, later wins: dataclass defaults -> preset (TOML in cllm/presets/) -> --config file
(TOML) -> command-line flags. Every field has a flag named after it (``--n-layer``, ``--lr``, ...);
field names are unique across sections so a flag always means one thing.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import CLLMError


@dataclass
class ModelConfig:
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # width of the residual stream
    block_size: int = 64  # context length in tokens
    vocab_size: int = 0  # 0: taken from the tokenizer when the data is prepared
    dropout: float = 0.0  # dropout on embeddings, residual branches and attention weights
    bias: bool = True  # biases in linear layers and LayerNorm
    tie_embeddings: bool = True  # the LM head shares the token-embedding matrix
    # rope won the ablation (docs/ABLATION.md): -0.19 nats at equal tokens vs learned positions.
    pos_encoding: str = "rope"  # rope | learned | none | a fixed table: sinusoidal | ulam | clock | prime
    embedding_init: str = "normal"  # normal | crystalline
    norm: str = "layernorm"  # layernorm | rmsnorm
    qk_norm: bool = False  # RMS-normalise queries and keys per head
    mlp: str = "gelu"  # gelu | relu2 | swiglu
    zero_init_proj: bool = False  # start every block's output projections at zero
    logit_softcap: float = 0.0  # > 0: logits = cap * tanh(logits / cap)


@dataclass
class DataConfig:
    # Text files, directories (recursive) and .jsonl files, several separated by os.pathsep (":" on
    # Linux/macOS); or a prepared dataset directory. "" means the bundled Shakespeare corpus.
    data: str = ""  # files, folders, .jsonl (several joined by os.pathsep) or a prepared dataset; "" = bundled
    tokenizer: str = "char"  # char | byte | word | bpe
    tokenizer_vocab_size: int = 8192  # for tokenizers that learn a vocabulary of a chosen size
    val_fraction: float = 0.1  # share of the corpus held out for validation
    errors: str = "strict"  # invalid UTF-8: strict (stop with an error) | replace (U+FFFD) | skip (drop bytes)
    text_field: str = "text"  # the field of each JSONL record that holds its text
    skip_bad_lines: bool = False  # JSONL lines that are not JSON or lack the field: skip (counted) instead of stopping
    include: str = ""  # comma-separated globs: in directories, read only matching files (path or name)
    exclude: str = ""  # comma-separated globs: in directories, never read matching files
    split_seed: int = 1337  # seeds the choice of val documents (corpora of several documents)
    shard_tokens: int = 1 << 26  # tokens per shard file
    tokenizer_sample_mb: int = 64  # word/bpe tokenizers train on an even sample of at most this many MB
    workers: int = 0  # processes that tokenise in parallel; 0: all cores


@dataclass
class TrainConfig:
    out: str = "runs/default"  # run directory: checkpoints, metrics.jsonl, loss.png, prepared data
    batch_size: int = 12  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 2000  # optimizer steps in the whole run
    optimizer: str = "adamw"  # adamw | muon (Muon for block matrices, AdamW for the rest)
    lr: float = 1e-3  # AdamW's peak learning rate
    muon_lr: float = 0.02  # Muon's peak learning rate (with optimizer = muon)
    min_lr: float = 1e-4  # learning rate at the end of the decay
    schedule: str = "cosine"  # cosine | linear | constant | wsd (warmup-stable-decay)
    warmup_steps: int = 100  # steps of linear learning-rate warm-up
    decay_fraction: float = 0.2  # wsd: share of the run spent decaying to min_lr
    weight_decay: float = 0.1  # AdamW decoupled weight decay (matrices only)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.99  # AdamW second-moment decay
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 250  # steps between validation evaluations
    eval_batches: int = 20  # 0: the whole validation split, every token scored once
    log_interval: int = 10  # steps between metrics.jsonl lines
    save_interval: int = 500  # steps between checkpoints (one is also written at the end and on Ctrl-C)
    seed: int = 1337  # seeds python, numpy, torch and the batch sampler
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bfloat16 where the hardware has it, else float32) | float32 | bfloat16
    compile: bool = True  # torch.compile the model (falls back to eager when no compiler works)
    activation_checkpointing: bool = False  # trade ~1/3 more compute for much less activation memory
    threads: int = 0  # 0: all cores
    sample_tokens: int = 200  # printed at the end of training; 0 to skip
    progress: bool = True  # show the progress bar


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
        positive = {
            "n_layer": m.n_layer, "n_head": m.n_head, "n_embd": m.n_embd, "block_size": m.block_size,
            "batch_size": t.batch_size, "grad_accum": t.grad_accum, "max_steps": t.max_steps,
            "lr": t.lr, "muon_lr": t.muon_lr, "eval_interval": t.eval_interval,
            "log_interval": t.log_interval, "save_interval": t.save_interval,
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
        if t.warmup_steps < 0 or t.weight_decay < 0 or t.grad_clip < 0 or t.threads < 0 or t.sample_tokens < 0:
            raise CLLMError("warmup_steps, weight_decay, grad_clip, threads and sample_tokens must be >= 0")
        if not (0.0 <= t.beta1 < 1.0 and 0.0 <= t.beta2 < 1.0):
            raise CLLMError(f"beta1 and beta2 must be in [0, 1), got {t.beta1}, {t.beta2}")
        if not 0.0 < t.decay_fraction <= 1.0:
            raise CLLMError(f"decay_fraction must be in (0, 1], got {t.decay_fraction}")
        from .crystalline import FIXED_POSITION_TABLES, TOKEN_EMBEDDING_INITS

        if m.pos_encoding == "rope" and (m.n_embd // m.n_head) % 2:
            raise CLLMError(f"rope needs an even head size; n_embd / n_head = {m.n_embd // m.n_head}")
        if m.logit_softcap < 0:
            raise CLLMError(f"logit_softcap must be >= 0 (0 = off), got {m.logit_softcap}")
        choices = {
            "pos_encoding": (m.pos_encoding, ("learned", "rope", "none", *FIXED_POSITION_TABLES)),
            "embedding_init": (m.embedding_init, ("normal", *TOKEN_EMBEDDING_INITS)),
            "norm": (m.norm, ("layernorm", "rmsnorm")),
            "mlp": (m.mlp, ("gelu", "relu2", "swiglu")),
            "schedule": (t.schedule, ("cosine", "linear", "constant", "wsd")),
            "optimizer": (t.optimizer, ("adamw", "muon")),
            "device": (t.device, ("auto", "cpu", "cuda")),
            "dtype": (t.dtype, ("auto", "float32", "bfloat16")),
            "errors": (d.errors, ("strict", "replace", "skip")),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise CLLMError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
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


def _field_comments() -> dict[str, str]:
    """Each field's trailing comment in the dataclasses above, reused as its flag's --help text, so
    the explanation is written in one place."""
    import inspect
    import re

    comments = {}
    for cls in (ModelConfig, DataConfig, TrainConfig):
        for m in re.finditer(r"^\s+(\w+): [^=]+= [^#\n]*#\s*(.+)$", inspect.getsource(cls), re.M):
            comments[m.group(1)] = m.group(2).replace("%", "%%")
    return comments


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--preset, --config and one flag per config field, all defaulting to None (= not given)."""
    parser.add_argument("--preset", help=f"named preset: {', '.join(preset_names())} (default: small); "
                        "it and --config override the built-in defaults shown below")
    parser.add_argument("--config", metavar="TOML", help="TOML file with [model], [data], [train] tables")
    comments = _field_comments()
    for section in SECTIONS:
        group = parser.add_argument_group(f"{section} settings")
        for name, (_, f) in FIELDS.items():
            if FIELDS[name][0] != section:
                continue
            flag = "--" + name.replace("_", "-")
            help_text = f"{comments.get(name, '')} [default: {f.default if f.default != '' else 'none'}]".strip()
            if f.type in (bool, "bool"):
                group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            else:
                typ = {"int": int, "float": float, "str": str}[f.type] if isinstance(f.type, str) else f.type
                group.add_argument(flag, dest=name, type=typ, default=None, metavar=name.upper(), help=help_text)


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> Config:
    """Build the resolved config: defaults -> preset -> base (e.g. a checkpoint's) -> --config -> flags."""
    cfg = Config()
    if base is not None:
        apply_dict(cfg, base, "checkpoint config")
    else:
        apply_dict(cfg, load_preset(getattr(args, "preset", None) or "small"), "preset")
    if getattr(args, "config", None):
        apply_dict(cfg, read_toml(args.config), str(args.config))
    for name, (section, _) in FIELDS.items():
        value = getattr(args, name, None)
        if value is not None:
            setattr(getattr(cfg, section), name, value)
    return cfg.validate()
