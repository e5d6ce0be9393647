"""The matmul peak that MFU divides by: best of several shapes, and never a busy machine's figure silently."""

import json
import os
import subprocess
import sys

import pytest
import torch

from cllm import perf
from cllm.config import ModelConfig


def test_model_gemm_shapes_follow_the_model():
    cfg = ModelConfig(n_embd=64, n_head=4, vocab_size=100)
    assert perf.model_gemm_shapes(cfg, 256) == [(256, 64, 192), (256, 64, 64), (256, 64, 256), (256, 256, 64),
                                                (256, 64, 100)]
    swiglu = perf.model_gemm_shapes(ModelConfig(n_embd=96, n_head=4, vocab_size=10, mlp="swiglu"), 8)
    assert swiglu[2] == (8, 96, 2 * 256) and swiglu[3] == (8, 256, 96)


def test_the_peak_is_the_best_shape():
    shapes = [(8, 8, 8), (256, 256, 256)]
    peak = perf.measure_peak(torch.float32, torch.device("cpu"), shapes, reps=2)
    assert peak.shape in shapes and peak.flops > 0 and peak.spread >= 1.0
    # the tiny product is overhead-bound: the bigger one wins
    assert peak.shape == (256, 256, 256)


def test_measuring_the_peak_leaves_the_global_random_stream_alone(tmp_path, monkeypatch):
    # A seeded run's dropout masks must not depend on whether this machine's peak was cached yet.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    torch.manual_seed(3)
    state = torch.get_rng_state()
    perf.matmul_peak(torch.float32, torch.device("cpu"), ModelConfig(n_embd=16, n_head=2, vocab_size=10), 32, quick=True)
    assert torch.equal(torch.get_rng_state(), state)


def test_training_times_a_small_square_not_4096(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    seen = []
    monkeypatch.setattr(perf, "measure_peak", lambda dtype, device, shapes, reps=5: seen.append(shapes) or perf.Peak(1e9, shapes[0], 1.0))
    perf.matmul_peak(torch.float32, torch.device("cpu"), quick=True)
    perf.matmul_peak(torch.float32, torch.device("cpu"))
    assert seen == [perf.QUICK_CPU_GEMMS, perf.SQUARE_GEMMS]


def test_a_busy_measurement_warns_and_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    spreads = iter([2.0, 1.01])
    monkeypatch.setattr(perf, "measure_peak", lambda dtype, device, shapes, reps=5: perf.Peak(1e9, shapes[0], next(spreads)))
    warnings = []
    assert perf.matmul_peak(torch.float32, torch.device("cpu"), warn=warnings.append) == 1e9
    assert warnings and "busy" in warnings[0] and not (tmp_path / "cllm" / "matmul_peak.json").exists()
    perf.matmul_peak(torch.float32, torch.device("cpu"), warn=warnings.append)  # quiet now: cached
    cached = json.loads((tmp_path / "cllm" / "matmul_peak.json").read_text())
    assert [v["spread"] for v in cached.values()] == [1.01] and len(warnings) == 1
    monkeypatch.setattr(perf, "measure_peak", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-measured")))
    assert perf.matmul_peak(torch.float32, torch.device("cpu")) == 1e9  # from the cache


def test_the_compiled_step_profile_groups_inductor_kernels_by_phase():
    from cllm.config import Config, apply_dict, load_preset
    from cllm.training.profile import profile_compiled_step

    cfg = Config()
    apply_dict(cfg, load_preset("tiny"), "preset")
    cfg.model.vocab_size = 40
    cfg.train.compile = True
    cfg.train.dtype = "float32"
    table = profile_compiled_step(cfg.validate(), steps=2, warmup=2)
    wall = table.pop("wall")["step"]
    assert {"forward", "backward", "optimizer"} <= set(table)
    assert table["forward"]["GEMM"] > 0 and table["backward"]["GEMM"] > 0
    assert any(kind.startswith("fused ") and kind != "fused (unprofiled)" for kind in table["forward"])
    assert sum(sum(kinds.values()) for kinds in table.values()) <= 1.5 * wall


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_processes_reuse_freed_tensor_memory_instead_of_faulting_it_in_again():
    # 64 MB tensors are above glibc's largest mmap threshold: with its defaults each one is a fresh
    # mapping (16,384 page faults); after reuse_freed_memory they come back from the heap.
    code = (
        "import resource, sys, torch\n"
        "from cllm.runtime import reuse_freed_memory\n"
        "applied = reuse_freed_memory()\n"
        "for _ in range(6):  # glibc settles on reusable free blocks after a few rounds, as a training loop does\n"
        "    torch.ones(2**24).sum()\n"
        "start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(10):\n"
        "    torch.ones(2**24).sum()\n"
        "print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)\n"
    )
    results = {}
    for setting in ("", "system"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | {"CLLM_MALLOC": setting}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        applied, faults = out.stdout.split()
        results[setting] = (applied == "True", int(faults))
    assert results[""][0] and not results["system"][0]
    # glibc's defaults fault in all 10 x 16,384 pages; reused, at most a block or two is new
    assert results["system"][1] > 10 * 16_384 * 0.9 and results[""][1] < results["system"][1] / 4, results
