"""The command line, end to end, and every bad input: exit 2, one line, no traceback, nothing left behind."""

import gc
import json
import os
import subprocess
import sys

import pytest

from cllm.cli import entry, main

from conftest import SHORT_TEXT

TINY = ["--preset", "tiny", "--no-progress", "--threads", "1", "--sample-tokens", "0"]


def run_cli(*argv, cwd=None):
    return subprocess.run([sys.executable, "-m", "cllm", *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_prepare_train_sample_eval_end_to_end(tmp_path, corpus_file):
    data, run = tmp_path / "data", tmp_path / "run"
    r = run_cli("prepare", "--data", corpus_file, "--out", data)
    assert r.returncode == 0, r.stderr
    assert "train" in r.stdout and (data / "train.bin").is_file()
    r = run_cli("train", *TINY, "--data", data, "--out", run, "--max-steps", "30", "--eval-interval", "10")
    assert r.returncode == 0, r.stderr
    assert "val loss" in r.stdout and (run / "ckpt" / "model.safetensors").is_file()
    args = ["sample", "--checkpoint", run, "--prompt", "To be", "--max-new-tokens", "40", "--temperature", "0.8",
            "--top-k", "10", "--top-p", "0.95", "--seed", "1"]
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("To be") and len(first.stdout) > 30
    r = run_cli("eval", "--checkpoint", run / "best", "--data", corpus_file, "--json")
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)
    assert 0 < scores["loss"] < 5 and scores["tokens"] == len(corpus_file.read_text()) - 1


def test_bad_input_through_the_console_entry_point(tmp_path):
    r = run_cli("train", "--data", tmp_path / "missing.txt", "--out", tmp_path / "run")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith("cllm: error: data path not found")
    assert not (tmp_path / "run").exists()


def test_the_process_entry_point_returns_mains_code_and_freezes_the_heap(tmp_path, capsys):
    # frozen objects are skipped by the interpreter's last collection: a quicker exit (benchmarks/startup.py)
    try:
        assert entry(["train", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "run")]) == 2
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert capsys.readouterr().err.startswith("cllm: error: data path not found")


def test_a_torchrun_worker_leaves_after_its_atexit_handlers_with_its_output_and_exit_code(tmp_path):
    # Workers skip the interpreter's shutdown, where gloo's threads can abort the process (cllm.cli._leave_worker).
    script = ("import atexit, sys\n"
              "atexit.register(lambda: print('atexit handler ran'))\n"
              "from cllm.cli import entry\n"
              f"sys.exit(entry(['train', '--data', {str(tmp_path / 'missing.txt')!r}, '--out', {str(tmp_path / 'run')!r}]))\n")
    run = lambda env: subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                                     env={**os.environ, **env})
    worker, plain = run({"RANK": "1", "WORLD_SIZE": "1"}), run({})
    assert worker.returncode == plain.returncode == 2
    assert worker.stderr.startswith("cllm: error: data path not found") and worker.stderr == plain.stderr
    assert worker.stdout == plain.stdout == "atexit handler ran\n"


def expect_error(capsys, argv, message):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse rejects a flag before main's handler runs
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("cllm: error:") and err.strip().count("\n") == 0, err
    assert message in err, err
    return err


@pytest.fixture
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    corpus = root / "c.txt"
    corpus.write_text(SHORT_TEXT * 40)
    assert main(["train", *TINY, "--data", str(corpus), "--out", str(root / "run"), "--max-steps", "3"]) == 0
    return root / "run"


def test_bad_data_inputs(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", *TINY, "--out", out]
    expect_error(capsys, base + ["--data", tmp_path / "nope"], "data path not found")
    (tmp_path / "empty.txt").write_text("")
    expect_error(capsys, base + ["--data", tmp_path / "empty.txt"], "corpus is empty")
    (tmp_path / "bins").mkdir()
    (tmp_path / "bins" / "x.bin").write_bytes(b"\0\1\2")
    expect_error(capsys, base + ["--data", tmp_path / "bins"], "no text files")
    (tmp_path / "bad.txt").write_bytes(SHORT_TEXT.encode() * 5 + b"\xc3\x28")
    expect_error(capsys, base + ["--data", tmp_path / "bad.txt"], f"byte offset {len(SHORT_TEXT.encode()) * 5}")
    (tmp_path / "short.txt").write_text("just a little text")
    expect_error(capsys, base + ["--data", tmp_path / "short.txt"], "fewer than block_size + 1")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # --errors replace proceeds past invalid UTF-8
    assert main([str(a) for a in base] + ["--data", str(tmp_path / "bad.txt"), "--errors", "replace", "--max-steps", "2"]) == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--n-embd", "30", "--n-head", "4"], "divisible by n_head"),
        (["--lr", "0"], "lr must be positive"),
        (["--batch-size", "-1"], "batch_size must be positive"),
        (["--max-steps", "0"], "max_steps must be positive"),
        (["--lr", "abc"], "invalid float value"),
        (["--device", "tpu"], "device must be one of"),
    ],
)
def test_bad_settings(tmp_path, capsys, flags, message):
    expect_error(capsys, ["train", *TINY, "--out", tmp_path / "run", *flags], message)
    assert not (tmp_path / "run").exists()


def test_bad_resume_and_checkpoints(tmp_path, capsys, trained_run):
    expect_error(capsys, ["train", *TINY, "--out", tmp_path / "none", "--resume"], "does not exist")
    (tmp_path / "emptyrun").mkdir()
    expect_error(capsys, ["train", *TINY, "--out", tmp_path / "emptyrun", "--resume"], "no checkpoint")
    expect_error(capsys, ["train", "--no-progress", "--out", trained_run, "--resume", "--n-layer", "3"],
                 "contradict the checkpoint")
    expect_error(capsys, ["sample", "--checkpoint", tmp_path / "nope"], "checkpoint not found")
    expect_error(capsys, ["sample", "--checkpoint", trained_run, "--prompt", "日本"], "not in the tokenizer's vocabulary")
    expect_error(capsys, ["sample", "--checkpoint", trained_run, "--prompt-file", tmp_path / "p.txt"], "not found")
    weights = trained_run / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    expect_error(capsys, ["sample", "--checkpoint", trained_run], "truncated")
    expect_error(capsys, ["train", "--no-progress", "--out", trained_run, "--resume"], "truncated")
    state = trained_run / "best" / "trainer_state.json"
    state.write_text("{ broken")
    expect_error(capsys, ["sample", "--checkpoint", trained_run / "best"], "corrupt")


def test_an_existing_run_is_not_replaced_by_accident(tmp_path, capsys, trained_run):
    before = (trained_run / "ckpt" / "trainer_state.json").read_bytes()
    expect_error(capsys, ["train", *TINY, "--out", trained_run, "--max-steps", "2"], "already holds a trained run")
    assert (trained_run / "ckpt" / "trainer_state.json").read_bytes() == before
    assert main(["train", *TINY, "--out", str(trained_run), "--max-steps", "2", "--overwrite",
                 "--data", str(trained_run.parent / "c.txt")]) == 0


def test_checkpoint_files_from_another_run_do_not_match(tmp_path, capsys, trained_run):
    other = tmp_path / "other"
    corpus = tmp_path / "c.txt"
    corpus.write_text(SHORT_TEXT * 40)
    assert main(["train", *TINY, "--data", str(corpus), "--out", str(other), "--max-steps", "3", "--n-embd", "16"]) == 0
    (trained_run / "ckpt" / "model.safetensors").write_bytes((other / "ckpt" / "model.safetensors").read_bytes())
    expect_error(capsys, ["sample", "--checkpoint", trained_run], "from another checkpoint")


def test_unknown_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--no-such-flag"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("cllm: error: unrecognized arguments") and err.strip().count("\n") == 0


def test_bench_runs_and_reports_json(capsys):
    assert main(["bench", "--preset", "tiny", "--steps", "2", "--warmup", "1", "--compare", "float32-eager",
                 "per-sequence", "--json", "--threads", "1", "--no-compile"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["preset"] == "tiny" and summary["variant"] == "default"
    assert summary["tokens_per_sec"] > 0 and 0 < summary["mfu"] < 1 and summary["peak_rss_mb"] > 0
    assert set(summary["compare"]) == {"float32-eager", "per-sequence"} and summary["ratio"] > 0


def test_bench_profile_covers_every_phase(capsys):
    assert main(["bench", "--preset", "tiny", "--profile", "--json", "--threads", "1"]) == 0
    profile = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["profile_ms"]
    assert list(profile) == ["embedding", "attention", "mlp", "norms", "lm head + loss", "backward", "optimizer",
                             "data", "other"]
    assert all(ms >= 0 for ms in profile.values()) and profile["backward"] > 0 and profile["attention"] > 0
