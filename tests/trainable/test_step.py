"""The train step (eager, compiled, compile failing, CUDA graphs skipped, the node compile cache),
fused optimisers and the GPU memory cap."""

import copy
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from ghn import CACHE_ENV, cache_dir
from trainable import TrialConfig, train
from trainable._data import Splits
from trainable._loop import limit_gpu_memory, make_optimizer
from trainable._step import TrainStep, compile_mode


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


def _splits():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 8, 8, 3), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    stat = torch.full((1, 3, 1, 1), 0.5)
    return Splits(x, y, x, y, x, y, stat, stat, 10)


def _cfg(mode):
    return TrialConfig(arch="resnet18", init="random", device="cpu", image_size=8, compile=mode)


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_compile_mode_per_setting_and_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    settings = ("off", "default", "reduce-overhead", "auto")
    # No CUDA graphs on CPU: reduce-overhead compiles as the default mode there.
    assert [compile_mode(s, cpu) for s in settings] == [None, "default", "default", None]
    assert [compile_mode(s, cuda) for s in settings] == [
        None, "default", "reduce-overhead", "reduce-overhead"]
    for bad in ("on", "yes", "max-autotune"):
        with pytest.raises(ValueError, match="compile: must be one of .*'reduce-overhead'"):
            TrialConfig(compile=bad)


@pytest.mark.slow  # torch.compile on CPU: 10-40 s of C++ compilation
def test_compiled_step_matches_eager_and_times_compilation_once():
    splits, model = _splits(), _tiny_model()
    twin = copy.deepcopy(model)
    eager = TrainStep(model, splits, _cfg("off"))
    compiled = TrainStep(twin, splits, _cfg("reduce-overhead"))
    assert compiled.mode == "default"  # on CPU
    for i in range(2):
        model.zero_grad(), twin.zero_grad()
        (loss, out), (closs, cout) = eager(splits.train_x, splits.train_y), compiled(
            splits.train_x, splits.train_y)
        assert closs.item() == pytest.approx(loss.item(), rel=1e-5)
        assert torch.allclose(cout, out, atol=1e-5)
        for g, cg in zip(_grads(model), _grads(twin)):
            assert torch.allclose(cg, g, atol=1e-5)  # the compiled backward ran
        if i == 0:
            assert compiled.take_compile_time() > 0 and eager.take_compile_time() == 0
    assert compiled.mode == "default" and compiled.take_compile_time() == 0  # compiled once


def test_failing_compile_warns_once_and_trains_eagerly(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    splits, model = _splits(), _tiny_model()
    twin = copy.deepcopy(model)
    eager, step = TrainStep(model, splits, _cfg("off")), TrainStep(twin, splits, _cfg("default"))
    with caplog.at_level(logging.WARNING, logger="trainable._step"):
        for _ in range(3):
            model.zero_grad(), twin.zero_grad()
            loss, _out = eager(splits.train_x, splits.train_y)
            floss, _out = step(splits.train_x, splits.train_y)
            assert floss.item() == loss.item()
            assert all(torch.equal(a, b) for a, b in zip(_grads(model), _grads(twin)))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "RuntimeError: no C++ compiler" in warnings[0], warnings
    assert step.mode is None and step.take_compile_time() == 0


@pytest.mark.slow  # two trials: 20-50 s on 2 shared cores
def test_trial_with_failing_compile_reports_what_eager_reports(tiny, monkeypatch):
    flat = tiny(**{"optim.epochs": 1})
    eager = train(TrialConfig.from_flat(flat))
    monkeypatch.setattr(torch, "compile", lambda *a, **k: 1 / 0)
    fallback = train(TrialConfig.from_flat({**flat, "compile": "default"}))
    for key in ("train/loss", "val/loss", "val/acc", "test/acc"):
        assert fallback[key] == eager[key], key
    assert fallback["compile_time_s"] == 0 == eager["compile_time_s"]


def test_skipped_cuda_graphs_warn_once_and_the_step_stays_compiled(monkeypatch, caplog):
    from torch._dynamo.utils import counters

    def compile_skipping_graphs(fn, mode):
        assert mode == "reduce-overhead"

        def run(*args):
            if not calls:  # torch decides at the first call, as inductor does
                counters["inductor"]["cudagraph_skips"] += 1
                threads.append(inductor.compile_threads)
            calls.append(1)
            return fn(*args)

        return run

    import torch._inductor.config as inductor

    calls, threads, own = [], [], torch.get_num_threads()
    monkeypatch.setattr(torch, "compile", compile_skipping_graphs)
    monkeypatch.setattr(inductor, "compile_threads", 16)  # torch's choice on a 16-CPU node
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    splits = _splits()
    step = TrainStep(_tiny_model(), splits, _cfg("reduce-overhead"))
    step.mode = "reduce-overhead"  # as on CUDA
    with caplog.at_level(logging.WARNING, logger="trainable._step"):
        for _ in range(3):
            step(splits.train_x, splits.train_y)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "skipped CUDA graphs" in warnings[0], warnings
    assert step.mode == "reduce-overhead" and calls == [1, 1, 1]
    assert threads == [own]  # compiled with the trial's own CPUs, not the node's
    # The first compile pointed torch's caches at the node cache.
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache_dir() / "torch-compile")


@pytest.mark.slow  # two CPU compiles in fresh processes: 10-40 s on 2 shared cores
def test_second_compile_in_a_fresh_process_hits_the_node_cache(session_cache):
    script = """
import torch
from torch._dynamo.utils import counters
from trainable._step import use_node_compile_cache
use_node_compile_cache()
torch.compile(lambda x: torch.relu(x).mul(2).sum())(torch.randn(64))
print(counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])
"""
    # As a Ray worker starts: torch's default directory in the environment, inherited. The node
    # cache is the session's, as the trials of a node share theirs: what torch keeps there
    # besides compiled graphs (its CPU feature probes, a precompiled header: ~9 s of CPU to
    # make) may be there already; this graph is not.
    env = {**os.environ, CACHE_ENV: str(session_cache),
           "TORCHINDUCTOR_CACHE_DIR": default_cache_dir(),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=env, timeout=240)
        assert done.returncode == 0, done.stderr
        runs.append([int(v) for v in done.stdout.split()])
    assert runs[0][0] == 0 and runs[0][1] > 0, runs
    assert runs[1][0] > 0 and runs[1][1] == 0, runs  # loaded what the first process compiled
    assert (session_cache / "torch-compile" / "fxgraph").is_dir()


def test_optimisers_are_fused_where_torch_can(monkeypatch, caplog):
    model = _tiny_model()
    for name in ("sgd", "adamw"):
        opt = make_optimizer(TrialConfig.from_flat({"optim.name": name}).optim, model)
        assert opt.param_groups[0]["fused"] is True, name

    class NoFusedSGD(torch.optim.SGD):
        def __init__(self, params, fused=None, **kw):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be on a supported "
                                   "device")
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, "SGD", NoFusedSGD)
    with caplog.at_level(logging.INFO, logger="trainable._loop"):
        opt = make_optimizer(TrialConfig.from_flat({"optim.name": "sgd"}).optim, model)
    assert isinstance(opt, NoFusedSGD) and not opt.param_groups[0]["fused"]
    assert opt.param_groups[0]["momentum"] == 0.9
    assert any("no fused kernel" in r.getMessage() for r in caplog.records)


def test_gpu_memory_is_capped_at_the_trial_share(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, device: calls.append((fraction, device.type)))
    limit_gpu_memory(torch.device("cuda"), 0.25)
    limit_gpu_memory(torch.device("cuda"), 1.0)  # a whole GPU: no cap
    limit_gpu_memory(torch.device("cpu"), 0.25)  # nothing to cap
    assert calls == [(0.25, "cuda")]
    with pytest.raises(ValueError, match="gpu_fraction"):
        limit_gpu_memory(torch.device("cuda"), 0.0)
