"""The train step (eager, compiled, compile failing), fused optimisers and the GPU memory cap."""

import copy
import logging

import pytest
import torch
from torch import nn

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
    assert [compile_mode(s, cpu) for s in ("off", "on", "auto")] == [None, "default", None]
    assert [compile_mode(s, cuda) for s in ("off", "on", "auto")] == [
        None, "reduce-overhead", "reduce-overhead"]
    with pytest.raises(ValueError, match="compile: must be one of"):
        TrialConfig(compile="yes")


@pytest.mark.slow  # torch.compile on CPU: 10-40 s of C++ compilation
def test_compiled_step_matches_eager_and_times_compilation_once():
    splits, model = _splits(), _tiny_model()
    twin = copy.deepcopy(model)
    eager, compiled = TrainStep(model, splits, _cfg("off")), TrainStep(twin, splits, _cfg("on"))
    assert compiled.mode == "default"
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
    eager, step = TrainStep(model, splits, _cfg("off")), TrainStep(twin, splits, _cfg("on"))
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
    fallback = train(TrialConfig.from_flat({**flat, "compile": "on"}))
    for key in ("train/loss", "val/loss", "val/acc", "test/acc"):
        assert fallback[key] == eager[key], key
    assert fallback["compile_time_s"] == 0 == eager["compile_time_s"]


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
