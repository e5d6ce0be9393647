"""The architecture holds: layers (import-linter), one training step, one config source, small functions."""

import ast
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cllm.cli import build_parser
from cllm.config import FIELDS, Config, apply_dict, load_preset
from cllm.training import Trainer, train
from cllm.training.bench import VARIANTS, variant_trainer
from cllm.training.metrics import MetricsLog

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is in the test extra"
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "0 broken" in r.stdout


@pytest.mark.parametrize("folder", ["cllm/training", "cllm/cli"])
def test_functions_fit_on_a_screen(folder):
    long = []
    for path in sorted((ROOT / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert not long, long


def _small_cfg() -> Config:
    cfg = Config()
    apply_dict(cfg, load_preset("tiny"), "preset")
    cfg.model.vocab_size = 50
    cfg.train.compile = False
    return cfg.validate()


def test_bench_times_the_training_step():
    cfg = _small_cfg()
    for variant in VARIANTS:
        trainer = variant_trainer(cfg, variant)
        assert type(trainer) is Trainer and type(trainer).step is Trainer.step
        assert trainer.tokens_per_step == cfg.train.batch_size * cfg.train.grad_accum * cfg.model.block_size
        before = [p.detach().clone() for p in trainer.model.parameters()]
        loss = trainer.step()
        assert loss > 0 and trainer.step_count == 1
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert variant_trainer(cfg, "float32-eager").dtype == "float32"
    assert variant_trainer(cfg, "per-sequence").cfg.train.batch_size == 1


def test_training_never_writes_into_the_callers_config(tmp_path, corpus_file):
    cfg = tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=2)
    before = dataclasses.asdict(cfg)
    assert cfg.model.vocab_size == 0
    result = train(cfg, log=lambda *a: None)
    assert dataclasses.asdict(cfg) == before
    saved = json.loads((result.out / "ckpt" / "trainer_state.json").read_text())["config"]
    assert saved["model"]["vocab_size"] > 0


def test_prepare_flags_come_from_the_data_config():
    parser = build_parser()
    prepare = parser._subparsers._group_actions[0].choices["prepare"]
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    prepare_dests = {a.dest for a in prepare._actions}
    data_fields = {name for name, (section, _) in FIELDS.items() if section == "data"}
    assert data_fields <= prepare_dests
    # the same help text in both commands: written once, in the field's metadata
    help_of = lambda p, dest: next(a.help for a in p._actions if a.dest == dest)  # noqa: E731
    for name in data_fields:
        assert help_of(prepare, name) == help_of(train_parser, name) == help_of(train_parser, name).strip()
        assert FIELDS[name][1].metadata["help"] in help_of(prepare, name).replace("%%", "%")


def test_repeated_path_flags_are_joined(tmp_path):
    from cllm.config import config_from_args

    args = build_parser().parse_args(["train", "--data", "a.txt", "b.txt", "--data", "c", "--include", "*.md"])
    cfg = config_from_args(args)
    assert cfg.data.data.split(":") == ["a.txt", "b.txt", "c"] and cfg.data.include == "*.md"


def test_metrics_go_to_jsonl_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLog(tmp_path, "tensorboard") as log:
        for step in (1, 2, 3):
            log.write({"step": step, "loss": 4.0 - step, "val_loss": None, "lr": 1e-3, "tokens": step * 10})
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert "val_loss" not in events.Tags()["scalars"]
    # a resumed log drops what came after the resume point
    MetricsLog(tmp_path, "jsonl", resume_step=2).close()
    assert [json.loads(ln)["step"] for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_train_with_tensorboard_logging(tmp_path, corpus_file):
    pytest.importorskip("tensorboard")
    train(tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=3, log_interval=1, log="tensorboard"),
          log=lambda *a: None)
    assert any((tmp_path / "run" / "tensorboard").iterdir())
