"""Fault injection: kill -9 and SIGTERM at chosen and random points, damaged checkpoint files,
concurrent runs, a finished run resumed, NaN losses and gradients, failed saves (injected, a file
size limit, a full tmpfs). Each must end in a resumable run equal to a straight one, or in a
one-line error that names what is wrong; never a traceback, never a corrupt or non-finite checkpoint.

The kill harness is benchmarks/faults.py (its soak runs 50+ kill points); here a few run.
"""

import errno
import importlib.util
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cllm import checkpoint as checkpoint_module
from cllm.checkpoint import load_checkpoint
from cllm.cli import main
from cllm.errors import CLLMError
from cllm.training import Trainer, train
from cllm.training.runlock import run_lock

from conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("cllm_faults_harness", ROOT / "benchmarks" / "faults.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

STEPS = harness.MAX_STEPS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return harness.corpus_file(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory):
    """The uninterrupted run every interrupted one must end equal to: (outcome, its directory)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("straight") / "run"
    reference, _ = harness.straight_run(corpus, out)
    return reference, out


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("cllm: error: ") and "Traceback" not in err, err
    return lines[0]


# -- kill -9 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["fsync:12", "rename:3", "eval:2", "metrics:9", "plot:0", "time:random"])
def test_kill9_then_resume_equals_the_straight_run(fault, corpus, straight, tmp_path):
    """Killed while saving (mid-fsync, between the two renames), evaluating, writing a metrics line,
    plotting, or at a random moment: every checkpoint left loads, and the resumed run ends exactly
    as the straight one (final and best weights, every logged loss, loss.png)."""
    reference, _ = straight
    if fault == "time:random":
        fault = f"time:{random.Random().uniform(1.0, 9.0):.2f}"
    r = harness.trial(corpus, tmp_path / "run", fault, reference)
    assert r["intact"], r
    assert r["equal"], r
    if not fault.startswith("time"):
        assert r["killed"], f"{fault} was never reached"


def test_sigterm_saves_a_checkpoint_and_the_run_resumes_equal(corpus, straight, tmp_path):
    """A real SIGTERM (the process sends it to itself right after its 5th metrics line, so it lands
    at a known step of the straight run's own schedule; a signal from outside lands wherever the
    run has got to, and a longer run given to make room has another learning-rate schedule):
    one checkpoint, exit 130, and the resumed run ends exactly as the straight one."""
    reference, _ = straight
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", harness.FAULT_HOOK, "sigterm:5", *harness.train_args(corpus, out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert "interrupted at step" in proc.stdout and "--resume" in proc.stdout
    step = load_checkpoint(out).state["step"]
    assert 5 <= step < STEPS
    assert main(harness.train_args(corpus, out) + ["--resume"]) == 0
    assert harness.same_outcome(harness.outcome(out), reference)


# -- damaged checkpoint files ------------------------------------------------------------------------

CKPT_FILES = ["model.safetensors", "optimizer.pt", "tokenizer.json", "trainer_state.json"]


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "missing"])
@pytest.mark.parametrize("name", CKPT_FILES)
def test_damaged_checkpoint_file_is_a_one_line_error(name, damage, straight, tmp_path, capsys):
    """Each file of the latest checkpoint truncated, with one byte flipped, or deleted: --resume (and
    eval, which loads best/ the same way) stops with one line naming the file or the checkpoint."""
    _, source = straight
    run = tmp_path / "run"
    shutil.copytree(source, run)
    path = run / "ckpt" / name
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "corrupted":
        flipped = bytearray(data)
        i = len(data) // 2
        if name == "trainer_state.json":  # the step's digit: the JSON still parses but says something else
            i = data.index(b'"step": ') + len(b'"step": ')
            flipped[i] = ord("7") if data[i] != ord("7") else ord("3")
        else:
            flipped[i] ^= 0x01
        path.write_bytes(bytes(flipped))
    else:
        path.unlink()
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(run / "ckpt") in line or name in line, line
    assert any(word in line for word in ("corrupt", "truncated", "missing", "incomplete", "no checkpoint",
                                         "hash mismatch")), line
    with pytest.raises(CLLMError):
        load_checkpoint(run)


def test_a_crash_between_the_renames_falls_back_to_the_previous_checkpoint(straight, tmp_path):
    """ckpt/ moved aside to .ckpt.old and the new one not yet in place: loading uses .ckpt.old."""
    _, source = straight
    run = tmp_path / "run"
    shutil.copytree(source, run)
    os.replace(run / "ckpt", run / ".ckpt.old")
    assert load_checkpoint(run).state["step"] == STEPS


def test_stale_temporary_directories_of_killed_saves_are_removed(straight, tmp_path):
    _, source = straight
    run = tmp_path / "run"
    shutil.copytree(source, run)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = run / f".ckpt.tmp-{int(dead.stdout)}"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    ckpt = load_checkpoint(run)
    model, tok, _ = checkpoint_module.load_model(run)
    checkpoint_module.save_checkpoint(run / "ckpt", model, tok, {k: v for k, v in ckpt.state.items()
                                                                  if k not in ("files", "format", "state_sha256")})
    assert not stale.exists()
    assert load_checkpoint(run).state["step"] == STEPS


# -- concurrent runs ---------------------------------------------------------------------------------

HOLD_LOCK = ("import sys, time\nfrom cllm.training.runlock import run_lock\n"
             "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)\n")


def test_a_second_process_on_the_same_run_stops_naming_the_holder(straight, corpus, tmp_path, capsys):
    _, source = straight
    run = tmp_path / "run"
    shutil.copytree(source, run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in (["--resume", "--max-steps", str(STEPS + 4)], ["--overwrite"]):
            capsys.readouterr()
            assert main(harness.train_args(corpus, run) + extra) == 2
            line = one_error_line(capsys.readouterr().err)
            assert f"pid {holder.pid}" in line and "in use" in line and str(run) in line, line
        assert load_checkpoint(run).state["step"] == STEPS  # untouched
        holder.send_signal(signal.SIGKILL)  # kill -9: the kernel drops the lock, nothing stale is left
        holder.wait(timeout=30)
        assert main(harness.train_args(corpus, run) + ["--resume", "--max-steps", str(STEPS + 2)]) == 0
        assert load_checkpoint(run).state["step"] == STEPS + 2
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_reentrant_and_not_inherited_by_forked_children(tmp_path):
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    with run_lock(run):
        with run_lock(run):  # cllm train takes it before reading the checkpoint, then train() again
            pass
        ready, say_ready = os.pipe()
        child = os.fork()
        if child == 0:  # a forked tokenising worker, still alive after its parent lets go
            os.write(say_ready, b"x")
            time.sleep(30)
            os._exit(0)
        os.read(ready, 1)  # the child runs (its at-fork hook has closed its copy of the lock's fd)
    try:
        fd = os.open(run / ".lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would fail if the child held the lock
        finally:
            os.close(fd)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


# -- finished run --------------------------------------------------------------------------------------

def test_resume_of_a_finished_run_says_so_and_how_to_extend_it(straight, tmp_path, capsys):
    _, source = straight
    run = tmp_path / "run"
    shutil.copytree(source, run)
    (run / "loss.png").unlink()  # as if killed while plotting: drawn again
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and f"{STEPS} steps" in out and f"--max-steps {2 * STEPS}" in out, out
    assert (run / "loss.png").is_file()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", str(STEPS - 5)]) == 0


# -- non-finite loss, gradients, weights -------------------------------------------------------------------

def _nan_at(monkeypatch, steps, where="loss"):
    """Make the loss (and so every gradient) NaN, or one gradient inf, at the given 1-based steps."""
    real_loss, real_micro = Trainer.loss, Trainer.micro_steps

    def loss(self, x, y):
        value = real_loss(self, x, y)
        return value * float("nan") if self.step_count + 1 in steps else value

    def micro_steps(self):
        value = real_micro(self)
        if self.step_count + 1 in steps:
            next(p for p in self.model.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
        return value

    if where == "loss":
        monkeypatch.setattr(Trainer, "loss", loss)
    else:
        monkeypatch.setattr(Trainer, "micro_steps", micro_steps)


@pytest.mark.parametrize("where,grad_clip", [("loss", 1.0), ("grad", 1.0), ("grad", 0.0)])
def test_a_non_finite_step_is_skipped_and_counted(where, grad_clip, tmp_path, corpus_file, monkeypatch):
    _nan_at(monkeypatch, {3, 4}, where)
    weights = {}

    def snapshot(step, loss):
        weights[step] = {n: p.detach().clone() for n, p in trainer_model[0].named_parameters()}

    trainer_model = []
    real_init = Trainer.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        trainer_model.append(self.model)

    monkeypatch.setattr(Trainer, "__init__", init)
    lines = []
    cfg = tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=8, log_interval=5, eval_interval=4,
                      grad_clip=grad_clip)
    result = train(cfg, log=lines.append, on_step=snapshot)
    assert result.step == 8
    for step in (3, 4):  # no update: the weights are those after step 2
        assert all(torch.equal(weights[step][n], weights[2][n]) for n in weights[2])
    assert not all(torch.equal(weights[5][n], weights[4][n]) for n in weights[4])
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in records}
    assert by_step[3]["skipped_steps"] == 1 and by_step[4]["skipped_steps"] == 2 and by_step[8]["skipped_steps"] == 2
    state = load_checkpoint(tmp_path / "run").state
    assert state["skipped_steps"] == 2
    model, _, _ = checkpoint_module.load_model(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_bad_steps_in_a_row_stop_the_run(tmp_path, corpus_file, monkeypatch, capsys):
    _nan_at(monkeypatch, set(range(7, 100)))
    cfg = tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=20, save_interval=5, eval_interval=5,
                      max_bad_steps=3)
    with pytest.raises(CLLMError, match=r"3 steps in a row .*max_bad_steps = 3"):
        train(cfg, log=lambda *a: None)
    state = load_checkpoint(tmp_path / "run").state
    assert state["step"] == 5  # the last save before the bad steps; nothing written after them
    assert load_checkpoint(tmp_path / "run" / "best").state["step"] == 5


def test_max_bad_steps_is_a_flag_and_is_validated(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--max-bad-steps", "0"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "max_bad_steps" in line and "0" in line


def test_non_finite_weights_are_never_saved(tmp_path, corpus_file):
    def poison(step, loss):
        if step == 6:
            with torch.no_grad():
                next(iter(trainer_params)).view(-1)[0] = float("nan")

    trainer_params = []
    real_init = Trainer.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        trainer_params.extend(self.model.parameters())

    Trainer.__init__ = init
    try:
        cfg = tiny_config(tmp_path / "run", data=str(corpus_file), max_steps=20, save_interval=4, eval_interval=3)
        with pytest.raises(CLLMError, match="not finite"):
            train(cfg, log=lambda *a: None, on_step=poison)
    finally:
        Trainer.__init__ = real_init
    assert load_checkpoint(tmp_path / "run").state["step"] == 4
    assert load_checkpoint(tmp_path / "run" / "best").state["step"] == 3
    for d in ("ckpt", "best"):
        model, _, _ = checkpoint_module.load_model(tmp_path / "run" / d)
        assert all(torch.isfinite(p).all() for p in model.parameters())


# -- failed saves ------------------------------------------------------------------------------------

@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES])
@pytest.mark.parametrize("target", ["weights", "optimizer", "state"])
def test_a_failed_save_keeps_the_previous_checkpoint(error, target, straight, corpus, tmp_path, monkeypatch, capsys):
    _, source = straight
    run = tmp_path / "run"
    shutil.copytree(source, run)
    before = load_checkpoint(run).state

    def fail(path, *a, **k):
        raise OSError(error, os.strerror(error), str(path))

    if target == "weights":
        monkeypatch.setattr(checkpoint_module.safetensors.torch, "save_model", lambda m, path, *a, **k: fail(path))
    elif target == "optimizer":
        real_open = open
        monkeypatch.setattr(checkpoint_module, "open", lambda p, mode="r", *a, **k: fail(p) if str(p).endswith(
            "optimizer.pt") and "w" in mode else real_open(p, mode, *a, **k), raising=False)
    else:
        real_write = Path.write_text
        monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: fail(self) if self.name ==
                            "trainer_state.json" else real_write(self, *a, **k))
    capsys.readouterr()
    assert main(harness.train_args(corpus, run) + ["--resume", "--max-steps", str(STEPS + 4)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "cannot write checkpoint" in line and os.strerror(error) in line and "intact" in line, line
    monkeypatch.undo()
    after = load_checkpoint(run).state
    assert after["step"] == STEPS and after["files"] == before["files"]
    assert not list(run.glob(".*.tmp-*"))


@pytest.mark.parametrize("limit", [40_000, 160_000])  # fails in model.safetensors / in optimizer.pt
def test_a_real_write_failure_file_size_limit(limit, straight, corpus, tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past ``limit`` bytes (EFBIG), as a full disk would."""
    _, source = straight
    run = tmp_path / "run"
    shutil.copytree(source, run)
    before = load_checkpoint(run).state

    def limit_writes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "cllm", *harness.train_args(corpus, run), "--resume",
                           "--max-steps", str(STEPS + 4)], capture_output=True, text=True, preexec_fn=limit_writes)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert "cannot write checkpoint" in line and "too large" in line.lower() and "intact" in line, line
    after = load_checkpoint(run).state
    assert after["step"] == STEPS and after["files"] == before["files"]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 600 KB tmpfs, where the system allows mounting one (root in a container); else skipped."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
                                                       capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_during_training(tiny_tmpfs, corpus, capsys):
    run = tiny_tmpfs / "run"
    capsys.readouterr()
    rc = main(harness.train_args(corpus, run) + ["--max-steps", "400", "--eval-interval", "2", "--save-interval", "2"])
    err = capsys.readouterr().err
    assert rc == 2, err
    line = one_error_line(err)
    assert "No space left on device" in line, line
    state = load_checkpoint(run).state  # whatever was saved last is whole
    assert 0 < state["step"] < 400
    load_checkpoint(run / "best")
