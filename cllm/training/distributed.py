"""Data-parallel training on torch.distributed: DDP or FSDP2, one process per device (or per share
of the CPU cores), started by torchrun (``torchrun --nproc-per-node N -m cllm train ...``) or by
``cllm train --nproc N``, which runs the same elastic launcher (``torch.distributed.run``) in-process.

Everything here is a no-op for one process: ``SINGLE`` stands for "not distributed", so the
trainer and the loop call the same methods either way and the single-process path does exactly
what it did before (same numerics, no communication).

What each rank does:
  * its own batches, drawn reproducibly by (seed, rank) (``batch_seed``); rank 0 draws what one
    process would;
  * forward and backward on them; gradients are averaged across ranks only on the last micro-batch
    of a step (DDP ``no_sync`` / FSDP2 ``set_requires_gradient_sync``);
  * the same optimizer step (DDP: replicated; FSDP2: each rank updates its shard);
  * the same validation batches (so the val loss equals one process's);
  * rank 0 alone logs, writes metrics and checkpoints (full, unsharded tensors, today's names).
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import json
import logging
import os
import random
import signal
import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CLLMError

# Set by torchrun (and by ``cllm train --nproc``, which runs torchrun's launcher) in every worker.
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def launched() -> bool:
    """True in a process started by torchrun / ``torch.distributed.run``."""
    return all(name in os.environ for name in _ENV)


def restart_count() -> int:
    """How often the elastic launcher has restarted this job's workers (``--max-restarts``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Dist:
    """This process's place in the job. ``SINGLE`` (world size 1) is the plain one-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    parallel: str = "ddp"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    # -- set-up ---------------------------------------------------------------------------------

    def threads(self, requested: int) -> int:
        """Intra-op threads: ``--threads``, else this machine's cores shared among its ranks (two
        ranks each running as many threads as there are cores were measured 40x slower)."""
        if requested or not self.enabled:
            return requested or os.cpu_count() or 1
        return max(1, cpu_cores() // self.local_world_size)

    def device(self, device: torch.device) -> torch.device:
        """One GPU per local rank; CPU ranks share the CPU."""
        if device.type == "cuda" and self.enabled:
            if self.local_rank >= torch.cuda.device_count():
                raise CLLMError(f"{self.local_world_size} processes on this machine but only "
                                f"{torch.cuda.device_count()} GPUs: use --nproc-per-node <= the GPU count")
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def batch_seed(self, seed: int):
        """The batch sampler's seed: ``seed`` on rank 0 (what one process draws), (seed, rank) elsewhere."""
        return seed if self.rank == 0 else [seed, self.rank]

    def seed_rank(self, seed: int, step: int = 0, batches=None) -> None:
        """Give this rank its own python/numpy/torch random streams (dropout) once the model, which
        every rank must build identically, exists; rank 0 of a fresh run keeps the one-process streams.
        With ``step`` (a resume by another number of ranks) the streams and ``batches`` are drawn
        afresh from (seed, rank, step)."""
        if self.rank == 0 and step == 0:
            return
        s = np.random.SeedSequence([seed, self.rank, step]).generate_state(3)
        random.seed(int(s[0]))
        np.random.seed(int(s[0]))
        torch.manual_seed(int(s[1]))
        if batches is not None:
            batches.set_state(np.random.PCG64([seed, self.rank, step, int(s[2])]).state)

    def describe(self, batch_size: int, grad_accum: int, block_size: int) -> str:
        return (f"{self.world_size} processes ({self.parallel}, {torch.distributed.get_backend()}): global batch "
                f"{batch_size} x {grad_accum} x {self.world_size} = {batch_size * grad_accum * self.world_size} "
                f"sequences of {block_size} tokens per step")

    # -- communication ----------------------------------------------------------------------------

    def mean_and_any(self, value: float, flag: bool = False) -> tuple[float, bool]:
        """The mean of ``value`` over all ranks (the loss of the whole global batch), and whether
        ``flag`` is true on any rank (a stop signal seen by one rank stops all at the same step).
        One collective for both: every all-reduce is a point where the ranks wait for each other."""
        if not self.enabled:
            return value, bool(flag)
        t = torch.tensor([value, 1.0 if flag else 0.0], dtype=torch.float64, device=_comm_device())
        torch.distributed.all_reduce(t)
        total, flags = t.tolist()
        return total / self.world_size, flags > 0

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def in_turn(self, fn):
        """``fn()`` on rank 0 first, then on each machine's local rank 0, then on the rest: the
        dataset is prepared (and cached) once, not by N processes writing the same files at once."""
        if not self.enabled:
            return fn()
        group = 0 if self.rank == 0 else 1 if self.local_rank == 0 else 2
        result = None
        for turn in range(3):
            if turn == group:
                result = fn()
            self.barrier()
        return result

    def check_same_config(self, config: dict) -> None:
        """Ranks launched with different settings would train different models: stop before training."""
        if not self.enabled:
            return
        configs = self.gather(json.dumps(config, sort_keys=True))
        mine = json.loads(configs[0])
        for rank, text in enumerate(configs[1:], 1):
            if text != configs[0]:
                other = json.loads(text)
                diffs = [f"{s}.{k} ({mine[s].get(k)!r} on rank 0, {other[s].get(k)!r} on rank {rank})"
                         for s in mine for k in mine[s] if mine[s].get(k) != other.get(s, {}).get(k)]
                raise CLLMError("ranks were launched with different settings: " + "; ".join(diffs))

    # -- the model ---------------------------------------------------------------------------------

    def wrap(self, model: torch.nn.Module, dtype: str, device: torch.device) -> torch.nn.Module:
        """The module to run forward/backward through. DDP: a wrapper (``model`` stays the plain
        module, same parameters). FSDP2: ``model`` itself, sharded in place (each block, then the
        root), parameter names unchanged; bf16 compute with float32 gradient reduction under bf16."""
        if not self.enabled:
            return model
        if self.parallel == "fsdp":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
                if dtype == "bfloat16" else MixedPrecisionPolicy()
            for block in model.blocks:
                fully_shard(block, mp_policy=mp)
            fully_shard(model, mp_policy=mp)
            return model
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cpu":  # one compiled graph: splitting it at DDP's buckets (for overlap) measured slower on CPU
            torch._dynamo.config.optimize_ddp = False
        # The model's buffers (RoPE and fixed position tables) are built identically on every rank
        # and never change, so DDP's default broadcast of them at every forward, a collective
        # that makes the ranks wait for each other every micro-batch, buys nothing (measured
        # +11 % tokens/s for 2 CPU ranks on small with grad_accum 4, docs/DISTRIBUTED.md).
        params = inspect.signature(DistributedDataParallel).parameters  # the flag's name since torch 2.13
        no_buffer_sync = {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers": False}
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       **no_buffer_sync)

    def grad_sync(self, wrapped: torch.nn.Module, sync: bool):
        """Context for one micro-batch's backward: gradients are reduced across ranks only when ``sync``."""
        if not self.enabled or sync:
            if self.enabled and self.parallel == "fsdp":
                wrapped.set_requires_gradient_sync(True)
            return contextlib.nullcontext()
        if self.parallel == "fsdp":
            wrapped.set_requires_gradient_sync(False)
            return contextlib.nullcontext()
        return wrapped.no_sync()

    # -- checkpoints -------------------------------------------------------------------------------

    @property
    def sharded(self) -> bool:
        return self.enabled and self.parallel == "fsdp"

    def full_weights(self, model: torch.nn.Module, make_plain) -> torch.nn.Module | None:
        """A plain (unsharded, CPU) copy of ``model`` on rank 0 for saving, None elsewhere. FSDP:
        every rank takes part in gathering the full tensors. ``make_plain()`` builds an empty model."""
        if not self.sharded:
            return model
        full = {name: _full(t) for name, t in model.state_dict().items()}
        if not self.main:
            return None
        with torch.random.fork_rng(devices=[]):  # building the copy must not move rank 0's RNG
            plain = make_plain()
        plain.load_state_dict({k: v.detach().cpu().float() if v.is_floating_point() else v.cpu()
                               for k, v in full.items()})
        return plain

    def full_optimizer_state(self, optimizer) -> dict:
        """The optimizer's state dict with full tensors (FSDP: gathered on every rank)."""
        state = optimizer.state_dict()
        return _map_tensors(state, _full) if self.sharded else state

    def load_weights(self, model: torch.nn.Module, checkpoint, make_plain) -> None:
        """Load a (full) checkpoint's weights; FSDP: each rank keeps its shard of every tensor."""
        if not self.sharded:
            checkpoint.load_weights(model)
            return
        from torch.distributed.tensor import DTensor, distribute_tensor

        with torch.random.fork_rng(devices=[]):
            plain = make_plain()
        checkpoint.load_weights(plain)
        full = plain.state_dict()
        sharded = {}
        for name, target in model.state_dict().items():
            value = full[name].to(target.device)
            if isinstance(target, DTensor):
                value = distribute_tensor(value, target.device_mesh, target.placements, src_data_rank=None)
            sharded[name] = value
        model.load_state_dict(sharded)

    def shard_optimizer_state(self, optimizer, state: dict) -> dict:
        """A full optimizer state dict (as saved) turned into this rank's shards (FSDP), else as is."""
        if not self.sharded:
            return state
        from torch.distributed.tensor import DTensor, distribute_tensor

        params = [p for group in optimizer.param_groups for p in group["params"]]
        saved = [i for group in state.get("param_groups", []) for i in group["params"]]
        if len(params) != len(saved):
            raise ValueError(f"{len(saved)} parameters in the saved optimizer state, {len(params)} in the model")
        for pid, p in zip(saved, params):
            if isinstance(p, DTensor) and pid in state["state"]:
                entry = state["state"][pid]
                for key, value in entry.items():
                    if torch.is_tensor(value) and value.shape == p.shape:
                        entry[key] = distribute_tensor(value.to(p.device_mesh.device_type), p.device_mesh,
                                                       p.placements, src_data_rank=None)
        return state


SINGLE = Dist()


def _comm_device() -> torch.device:
    """Where collective tensors live: NCCL reduces GPU tensors only, gloo CPU ones."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _full(t):
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _map_tensors(obj, fn):
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return fn(obj) if torch.is_tensor(obj) else obj


class FixedState:
    """Quacks like an optimizer for ``save_checkpoint``: a state dict computed beforehand."""

    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return self._state


class Discard:
    """Stands in for MetricsLog on ranks other than 0."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, record: dict) -> None:
        pass


# -- process group ---------------------------------------------------------------------------------

_current = SINGLE


def current() -> Dist:
    return _current


def init(parallel: str, device: torch.device, optimizer: str = "adamw", threads: int = 0) -> Dist:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); ``SINGLE`` when not
    launched by torchrun or with one process. Idempotent."""
    global _current
    if not launched() or int(os.environ["WORLD_SIZE"]) <= 1:
        return SINGLE
    if _current.enabled:
        return _current
    d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]),
             int(os.environ["LOCAL_WORLD_SIZE"]), parallel)
    if parallel == "fsdp" and optimizer == "muon":
        raise CLLMError("--parallel fsdp shards every matrix, which Muon must see whole: use --optimizer adamw "
                        "or --parallel ddp")
    if device.type == "cpu" and not threads and d.local_world_size > cpu_cores():
        raise CLLMError(f"{d.local_world_size} processes on {cpu_cores()} CPU cores: use at most one process per "
                        "core (--nproc / --nproc-per-node)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not torch.distributed.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("CLLM_DIST_TIMEOUT", "1800")))
        try:
            # The elastic agent's store outlives a restart, and in torch 2.13 a restarted job's gloo could
            # read the previous attempt's addresses from it and hang: keys are kept apart per attempt.
            store, rank, world = next(torch.distributed.rendezvous("env://", timeout=timeout))
            store = torch.distributed.PrefixStore(f"cllm/attempt_{restart_count()}", store)
            torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
        except Exception as e:  # the store or a peer cannot be reached
            raise CLLMError(f"rank {d.rank} cannot join the process group: {_first_line(e)}") from None
    _current = d
    return d


def shutdown() -> None:
    global _current
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _current = SINGLE


@contextlib.contextmanager
def peer_errors():
    """A collective that fails because another rank died becomes one line (and exit code 2), not a
    traceback per rank; the process group is left cleanly either way."""
    try:
        yield
    except CLLMError:
        raise
    except RuntimeError as e:  # DistError is one
        comm = isinstance(e, torch.distributed.DistError) or any(
            word in str(e).lower() for word in ("gloo", "nccl", "connection", "peer", "timed out", "broken pipe"))
        if not (_current.enabled and comm):
            raise
        raise CLLMError(f"rank {_current.rank}: lost contact with the other ranks ({_first_line(e)}); "
                        "another process probably died, see its output") from None
    finally:
        if _current.enabled:
            with contextlib.suppress(Exception):
                shutdown()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# -- the launcher ----------------------------------------------------------------------------------


def launch(argv: list[str], nproc: int, nnodes: int = 1, node_rank: int = 0, rdzv_endpoint: str = "",
           max_restarts: int = 0) -> int:
    """``cllm train --nproc N``: run torchrun's elastic launcher here with ``python -m cllm <argv>``
    as the worker (N per machine). Returns the exit code; a failed worker is one line on stderr."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if nproc < 1 or nnodes < 1:
        raise CLLMError(f"--nproc and --nnodes must be >= 1, got {nproc} and {nnodes}")
    if nnodes > 1 and not rdzv_endpoint:
        raise CLLMError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the same on every machine)")
    if not 0 <= node_rank < nnodes:
        raise CLLMError(f"--node-rank must be in [0, {nnodes}), got {node_rank}")
    args = ["--nproc-per-node", str(nproc), "--nnodes", str(nnodes), "--max-restarts", str(max_restarts)]
    if rdzv_endpoint:
        args += ["--node-rank", str(node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint,
                 "--rdzv-conf", f"join_timeout={os.environ.get('CLLM_RDZV_TIMEOUT', '300')},read_timeout=60"]
    else:
        args += ["--standalone"]
    args += ["-m", "cllm"]
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpu_cores() // nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # we say what failed, once
    try:
        parsed = torchrun.get_args_parser().parse_args(args)
        parsed.training_script_args = list(argv)  # set apart: torchrun's parser would read --nproc as its own
        torchrun.run(parsed)
    except ChildFailedError as e:
        # The cause, not its echo: a rank killed by a signal before the ranks that then lost contact
        # with it and exited with code 2 (workers leave fast, so both can be seen in one poll).
        rank, failure = min(e.failures.items(), key=lambda rf: (rf[1].exitcode >= 0, rf[1].timestamp, rf[0]))
        how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with code {failure.exitcode}"
        print(f"cllm: error: rank {rank} (pid {failure.pid}) {how}; the other ranks were stopped"
              + (f" after {max_restarts} restarts" if max_restarts else ""), file=sys.stderr)
        return 1
    except Exception as e:  # rendezvous failures come in several types
        if type(e).__name__ == "SignalException":
            sig = getattr(e, "sigval", signal.SIGTERM)
            print(f"cllm: stopped by {signal.Signals(sig).name}; rank 0 saved a checkpoint if training had "
                  "started (continue with --resume)", file=sys.stderr)
            return 128 + int(sig)
        where = f" at {rdzv_endpoint}" if rdzv_endpoint else ""
        raise CLLMError(f"the launch failed: no rendezvous{where} ({type(e).__name__}: {_first_line(e)}); with "
                        "--nnodes every machine must start within CLLM_RDZV_TIMEOUT seconds (default 300) and reach "
                        "--rdzv-endpoint" if "Rendezvous" in type(e).__name__ else
                        f"the launch failed: {type(e).__name__}: {_first_line(e)}") from None
    return 0
