"""Data-parallel training (cllm/training/distributed.py) on CPU with gloo: 2 processes, tiny shapes.

Every distributed run is a subprocess (``python -m cllm train --nproc 2`` or
``python -m torch.distributed.run``) with a timeout; launchers use --standalone (a free port
chosen by the launcher) or a free port found here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cllm.cli import main as cli_main
from cllm.data import Batches
from cllm.training.trainer import Trainer

from conftest import SHORT_TEXT, tiny_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RANK", None)  # never inherit a launcher's environment
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(SHORT_TEXT * 40, encoding="utf-8")
    return path


def _train_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--preset", "tiny", "--data", str(corpus), "--out", str(out), "--no-progress",
            "--dtype", "float32", "--no-compile", "--threads", "1", "--log-interval", "1", "--eval-interval", "4",
            "--sample-tokens", "0", "--schedule", "constant", "--dropout", "0.1", *extra]


def _cllm(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cllm", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _losses(out: Path) -> dict[int, float]:
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


# -- 1. 2 ranks x batch 4 == 1 rank x batch 8 on the same sequences --------------------------------------

class RankSlice:
    """Rank ``rank`` of ``world``'s rows of each batch of one shared sampler (same sequences overall)."""

    def __init__(self, batches: Batches, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world

    def get(self):
        x, y = self.batches.get()
        n = x.shape[0] // self.world
        return x[self.rank * n:(self.rank + 1) * n], y[self.rank * n:(self.rank + 1) * n]

    def state(self):
        return self.batches.state()

    def set_state(self, state):
        self.batches.set_state(state)


def _equivalence_run(cfg, tokens, rank: int, world: int, dist) -> list[float]:
    """20 training losses, then the validation loss of the distributed model and (rank 0) of a plain
    one-process copy of its weights on the same split, then how many all-reduces the Python side of
    the 20 steps made (DDP's gradient buckets are reduced from C++, so these are the per-step extras)."""
    from cllm.training.trainer import validation_loss

    torch.manual_seed(cfg.train.seed)
    batches = RankSlice(Batches(tokens, cfg.train.batch_size * world, cfg.model.block_size, 5), rank, world)
    trainer = Trainer(cfg, batches, torch.device("cpu"), "float32", fused_optimizer=False, log=lambda *a: None,
                      dist=dist)
    real_all_reduce, calls = torch.distributed.all_reduce, []
    torch.distributed.all_reduce = lambda *a, **k: (calls.append(1), real_all_reduce(*a, **k))[1]
    try:
        losses = [trainer.step() for _ in range(20)]
    finally:
        torch.distributed.all_reduce = real_all_reduce
    plain = dist.full_weights(trainer.model, trainer._plain_model)
    val = trainer.val_loss(tokens[:2000], 7)
    single = validation_loss(plain, tokens[:2000], cfg, torch.device("cpu"), 7, "float32") if plain else val
    return losses + [val, single, len(calls)]


WORKER = """
import dataclasses, json, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from cllm.training import distributed
from test_distributed import _equivalence_run, _tiny_cfg
tokens = np.load(sys.argv[1])
dist = distributed.init("ddp", __import__("torch").device("cpu"))
result = {p: _equivalence_run(_tiny_cfg(), tokens, dist.rank, dist.world_size, dataclasses.replace(dist, parallel=p))
          for p in ("ddp", "fsdp")}
if dist.main:
    json.dump(result, open(sys.argv[2], "w"))
distributed.shutdown()
"""


def _tiny_cfg():
    return tiny_config("unused", batch_size=4, grad_accum=2, compile=False, vocab_size=40)


def test_two_ranks_match_one_process_on_the_same_sequences(tmp_path):
    import numpy as np

    tokens = np.random.default_rng(0).integers(0, 40, 5000).astype(np.int64)
    np.save(tmp_path / "tokens.npy", tokens)
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(tmp_path / "worker.py"), str(tmp_path / "tokens.npy"), str(tmp_path / "out.json"),
                           str(REPO / "tests")],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    cfg = _tiny_cfg()
    cfg.train.batch_size = 8  # one process, the same 8 sequences per micro-batch
    from cllm.training.distributed import SINGLE

    reference = _equivalence_run(cfg, tokens, 0, 1, SINGLE)[:20]
    for parallel in ("ddp", "fsdp"):
        assert len(got[parallel]) == 23
        *losses, val, single_val, all_reduces = got[parallel]
        assert abs(val - single_val) < 1e-6  # the distributed val loss is one process's on the same split
        diff = max(abs(a - b) for a, b in zip(losses, reference))
        assert diff < 1e-5, (parallel, diff, got[parallel][:3], reference[:3])
        if parallel == "ddp":
            assert all_reduces == 20  # the loss and the stop flag share one collective per step
    assert reference[-1] < reference[0] - 0.02  # it learns (random tokens: only their frequencies)


# -- 2. exact resume with 2 ranks; the checkpoint loads in one process ---------------------------------------

def test_two_rank_resume_is_exact_and_the_checkpoint_loads_in_one_process(tmp_path, corpus, capsys):
    straight = _cllm(_train_args(corpus, tmp_path / "a", "--nproc", "2", "--max-steps", "10"), tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert "global batch 8 x 1 x 2 = 16 sequences" in straight.stdout
    assert straight.stdout.count("done:") == 1  # rank 0 alone reports
    first = _cllm(_train_args(corpus, tmp_path / "b", "--nproc", "2", "--max-steps", "5"), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((tmp_path / "b" / "ckpt" / "trainer_state.json").read_text())
    assert len(state["rng_ranks"]) == 2 and state["rng_ranks"][0] != state["rng_ranks"][1]
    second = _cllm(_train_args(corpus, tmp_path / "b", "--nproc", "2", "--max-steps", "10", "--resume"), tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "re-seeded" not in second.stdout
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")  # bitwise: float32 on CPU
    assert cli_main(["sample", "--checkpoint", str(tmp_path / "b"), "--max-new-tokens", "5", "--seed", "1"]) == 0


# -- 3. two "machines" on localhost ------------------------------------------------------------------------

def test_two_launchers_rendezvous_on_localhost(tmp_path, corpus):
    endpoint = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, "-m", "cllm", *_train_args(
        corpus, tmp_path / "run", "--max-steps", "4", "--nnodes", "2", "--node-rank", str(i), "--rdzv-endpoint",
        endpoint)], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outputs]
    assert sum(o.count("done: 4 steps") for o, _ in outputs) == 1
    assert json.loads((tmp_path / "run" / "ckpt" / "trainer_state.json").read_text())["step"] == 4


# -- 4. faults --------------------------------------------------------------------------------------------

def _workers(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            env = dict(v.split("=", 1) for v in (entry / "environ").read_text().split("\0") if "=" in v)
        except (OSError, IndexError, ValueError):
            continue
        if "RANK" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


def _stop(proc: subprocess.Popen) -> None:
    """Kill a launcher and its workers (a failed test must not leave workers behind)."""
    for pid in _workers(proc.pid).values():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.wait()


def _start_long_run(tmp_path, corpus, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cllm", *_train_args(
        corpus, tmp_path / "run", "--nproc", "2", "--max-steps", "100000", "--save-interval", "20", *extra)],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")
def test_a_killed_rank_stops_the_job_with_one_clear_line(tmp_path, corpus):
    proc = _start_long_run(tmp_path, corpus)
    try:
        _wait_for(lambda: (tmp_path / "run" / "metrics.jsonl").exists() and len(_workers(proc.pid)) == 2)
        os.kill(_workers(proc.pid)[1], signal.SIGKILL)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert time.monotonic() - killed < 60
    assert proc.returncode not in (0, None)
    last = err.strip().splitlines()[-1]
    assert last.startswith("cllm: error: rank 1") and "SIGKILL" in last, err[-2000:]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")
def test_sigterm_to_the_launcher_saves_a_checkpoint_and_exits(tmp_path, corpus):
    proc = _start_long_run(tmp_path, corpus)
    try:
        _wait_for(lambda: (tmp_path / "run" / "metrics.jsonl").exists() and len(_workers(proc.pid)) == 2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted at step" in out
    state = json.loads((tmp_path / "run" / "ckpt" / "trainer_state.json").read_text())
    assert state["step"] > 0 and len(state["rng_ranks"]) == 2


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")
def test_elastic_restart_resumes_from_the_latest_checkpoint(tmp_path, corpus):
    proc = subprocess.Popen([sys.executable, "-m", "cllm", *_train_args(
        corpus, tmp_path / "run", "--nproc", "2", "--max-steps", "150", "--save-interval", "10",
        "--eval-interval", "1000", "--max-restarts", "1")], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (tmp_path / "run" / "ckpt" / "trainer_state.json").exists() and len(_workers(proc.pid)) == 2)
        os.kill(_workers(proc.pid)[1], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == 0, err[:2000] + " ... " + err[-3000:]
    assert "restart 1: resuming from the latest checkpoint" in out and "resuming at step" in out
    assert "done: 150 steps" in out


# -- 5. another world size on resume; bad input ---------------------------------------------------------------

def test_resume_with_another_number_of_processes(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert cli_main(_train_args(corpus, run, "--max-steps", "4")) == 0  # one process (in this one)
    two = _cllm(_train_args(corpus, run, "--resume", "--max-steps", "8", "--nproc", "2", "--parallel", "fsdp"), tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("written by 1 process(es), resumed by 2") == 1, two.stdout
    capsys.readouterr()
    assert cli_main(_train_args(corpus, run, "--resume", "--max-steps", "12", "--nproc", "1")) == 0
    assert "written by 2 process(es), resumed by 1" in capsys.readouterr().out
    assert sorted(_losses(run)) == list(range(1, 13))


def test_ranks_with_different_settings_stop_before_training(tmp_path, corpus):
    endpoint = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, "-m", "cllm", *_train_args(
        corpus, tmp_path / "run", "--max-steps", "4", "--nnodes", "2", "--node-rank", str(i), "--rdzv-endpoint",
        endpoint, "--lr", str(0.001 * (i + 1)))], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode != 0 for p in procs)
    assert any("ranks were launched with different settings: train.lr" in e for _, e in outputs), outputs
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_launch_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["train", "--nnodes", "2", "--out", str(tmp_path / "r")]) == 2
    assert "--nnodes > 1 needs --rdzv-endpoint" in capsys.readouterr().err
    assert cli_main(["train", "--nproc", "0", "--out", str(tmp_path / "r")]) == 2
    assert "nproc must be >= 1" in capsys.readouterr().err


def test_a_missing_rendezvous_is_one_line(tmp_path, corpus):
    env = dict(_env(), CLLM_RDZV_TIMEOUT="3")
    proc = subprocess.run([sys.executable, "-m", "cllm", *_train_args(
        corpus, tmp_path / "run", "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("cllm: error: the launch failed: no rendezvous at 127.0.0.1")


def test_ddp_does_not_broadcast_the_constant_buffers_at_every_forward(tmp_path):
    """RoPE tables are the same on every rank; DDP's default per-forward broadcast of them is a
    collective that makes the ranks wait for each other every micro-batch."""
    import torch.distributed as torch_dist
    from torch.nn.parallel import DistributedDataParallel

    from cllm.config import ModelConfig
    from cllm.model import GPT
    from cllm.training.distributed import Dist

    torch_dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'store'}")
    try:
        model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11))
        broadcasts = {}
        for name, wrapped in (("torch default", DistributedDataParallel(model)),
                              ("cllm", Dist(world_size=2).wrap(model, "float32", torch.device("cpu")))):
            calls, broadcast = [], wrapped._distributed_broadcast_coalesced
            wrapped._distributed_broadcast_coalesced = lambda *a, **k: (calls.append(a), broadcast(*a, **k))[1]
            wrapped(torch.zeros(2, 8, dtype=torch.long))
            broadcasts[name] = len(calls)
        assert broadcasts == {"torch default": 1, "cllm": 0}
    finally:
        torch_dist.destroy_process_group()
