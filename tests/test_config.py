import pytest

from cllm.cli import build_parser
from cllm.config import Config, config_from_args, load_preset, preset_names
from cllm.errors import CLLMError


def parse(*argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_presets_are_data_and_valid():
    assert {"tiny", "small", "base", "gpt2"} <= set(preset_names())
    for name in preset_names():
        Config.from_dict(load_preset(name)).validate()
    small = parse("--preset", "small")
    assert (small.model.n_layer, small.model.n_head, small.model.n_embd, small.model.block_size) == (4, 4, 128, 64)
    assert small.train.batch_size == 12 and small.train.optimizer == "adamw"
    default = parse()  # cllm train's own default: small's shape, trained the quick way
    assert default.model == parse("--preset", "quickstart").model
    assert (default.model.n_layer, default.model.n_embd, default.model.norm) == (4, 128, "rmsnorm")
    assert (default.train.optimizer, default.train.max_steps, default.train.compile) == ("muon", 600, False)
    bench = config_from_args(build_parser().parse_args(["bench"]))
    assert bench.train.optimizer == "adamw"  # cllm bench measures the small preset's step
    base = parse("--preset", "base")
    assert (base.model.n_layer, base.model.n_head, base.model.n_embd, base.model.block_size) == (6, 6, 384, 256)


def test_toml_then_flags_override(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\nn_layer = 3\n[train]\nlr = 0.002\nschedule = "wsd"\n')
    cfg = parse("--config", str(toml), "--lr", "0.005", "--no-bias")
    assert cfg.model.n_layer == 3 and cfg.train.lr == 0.005 and cfg.train.schedule == "wsd"
    assert cfg.model.bias is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--n-embd", "100", "--n-head", "3"], "divisible"),
        (["--lr", "0"], "lr must be positive"),
        (["--lr", "-1"], "lr must be positive"),
        (["--batch-size", "0"], "batch_size must be positive"),
        (["--max-steps", "-5"], "max_steps must be positive"),
        (["--schedule", "exp"], "schedule must be one of"),
        (["--val-fraction", "1.5"], "val_fraction"),
        (["--min-lr", "1"], "min_lr"),
    ],
)
def test_invalid_settings_are_rejected(argv, message):
    with pytest.raises(CLLMError, match=message):
        parse(*argv)


def test_toml_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nn_layer=")
    with pytest.raises(CLLMError, match="not valid TOML"):
        parse("--config", str(bad))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[model]\nn_layers = 3\n")
    with pytest.raises(CLLMError, match="unknown setting model.n_layers"):
        parse("--config", str(unknown))
    wrong_type = tmp_path / "type.toml"
    wrong_type.write_text('[model]\nn_layer = "three"\n')
    with pytest.raises(CLLMError, match="must be int"):
        parse("--config", str(wrong_type))
    with pytest.raises(CLLMError, match="not found"):
        parse("--config", str(tmp_path / "missing.toml"))
    with pytest.raises(CLLMError, match="unknown preset"):
        parse("--preset", "huge")


def test_every_config_flag_has_help_text():
    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    documented = {a.dest: a.help for a in train_parser._actions}
    from cllm.config import FIELDS

    for name in FIELDS:
        assert not documented[name].startswith("[default:"), f"--{name} has no explanation"
