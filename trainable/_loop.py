"""The training loop: one function that reads top to bottom, and knows nothing of Ray or MLflow.

``fit`` calls ``report(metrics, state)`` once per epoch; ``state`` is a checkpoint dict on
checkpoint epochs and None otherwise. The caller decides where checkpoints go (a Ray Tune
checkpoint in ``_ray.py``, a plain file in ``train``).
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from contract import CONFIG_KEY, TAGS_KEY
from ghn import save_atomic

from ._config import OptimConfig, TrialConfig
from ._data import Splits, eval_batches, load_splits, steps_per_epoch, to_input, train_batches
from ._diagnostics import init_summary
from ._model import build_model
from ._provenance import provenance
from ._step import TrainStep, autocast

_logger = logging.getLogger(__name__)

STATE_FILE = "trial.pt"
# Images per eval forward: CPU caches like 500; a GPU evaluates 1,000 32x32 images of resnet50
# in bf16 in one launch-cheap pass (under 2 GB, within a quarter of an A10G).
EVAL_BATCH = {"cpu": 500, "cuda": 1000}

# Called after every epoch with its metrics and, when a checkpoint is due, the state to save.
OnEpoch = Callable[[dict[str, float], "dict[str, Any] | None"], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when present; the one place the device is chosen. ``cuda`` means
    CUDA or an error: a trial meant for a GPU never trains on the CPU, 50-100x slower."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise RuntimeError(
            f"device: 'cuda' was asked for, but CUDA does not work on {platform.node()} "
            f"(torch.cuda.is_available() is False; torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none'}; CUDA_VISIBLE_DEVICES={visible}). Fix the node's "
            "NVIDIA driver or install a CUDA build of torch, or train on CPU (device='cpu'; "
            "for a sweep, --gpus-per-trial 0).")
    return torch.device(name)


def train(
    cfg: TrialConfig, *, report: Callable[[dict[str, float]], None] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> dict[str, float]:
    """Run one trial without Ray (debugging, tests); returns the last epoch's metrics.

    With ``checkpoint_dir``, checkpoints go to ``<checkpoint_dir>/trial.pt`` and a second call
    with the same directory continues after the last checkpointed epoch.
    """
    path = Path(checkpoint_dir) / STATE_FILE if checkpoint_dir else None
    resume = torch.load(path, map_location="cpu", weights_only=True) if path and path.exists() \
        else None

    def on_epoch(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        if path is not None and state is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_atomic(state, path)
        if report is not None:
            report(metrics)

    return fit(cfg, report=on_epoch, resume=resume)


def fit(
    cfg: TrialConfig, *, report: OnEpoch, resume: dict[str, Any] | None = None,
    run_identity: dict[str, str] | None = None, gpu_fraction: float = 1.0,
) -> dict[str, float]:
    """Build data and model, then train ``cfg.optim.epochs`` epochs (the rest after ``resume``).

    ``gpu_fraction`` is the share of its GPU the trial was given (Ray's fractional GPUs): below 1,
    the trial's CUDA allocations are capped at that share, so trials packed on one card cannot
    take each other's memory.
    """
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    limit_gpu_memory(device, gpu_fraction)
    torch.backends.cudnn.benchmark = cuda  # fixed input shapes: let cuDNN pick the fastest kernels
    splits = load_splits(cfg.data, device, cfg.seed)
    model, tags = build_model(cfg, splits.num_classes, classes=splits.classes)
    tags["device"] = torch.cuda.get_device_name(device) if cuda else str(device)
    tags.update(provenance(device))
    model.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
    # A fresh trial's first report also carries the init diagnostics (on the device, cached per
    # node), string tags (GHN checkpoint identity, code, versions, device) and the resolved flat
    # config for the driver-side tracking; a resumed trial already sent them.
    first: dict[str, Any] = {} if resume else {
        **init_summary(model), TAGS_KEY: tags, CONFIG_KEY: cfg.to_flat()}
    opt = make_optimizer(cfg.optim, model)
    per_epoch = steps_per_epoch(len(splits.train_y), cfg.optim.batch_size)
    sched = make_schedule(cfg.optim, opt, per_epoch)
    step = TrainStep(model, splits, cfg)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    start, best_val = 1, -math.inf
    if resume is not None:
        start = _restore(resume, cfg, model, opt, sched, gen) + 1
        best_val = resume.get("best_val", -math.inf)
    metrics: dict[str, float] = {}
    for epoch in range(start, cfg.optim.epochs + 1):
        metrics = run_epoch(model, opt, sched, splits, cfg, gen, epoch, best_val, step)
        if metrics["val/acc"] > best_val:
            best_val = metrics["val/acc"]
        metrics.update(first if epoch == start else {})
        diverged = metrics["diverged"] > 0
        due = epoch == cfg.optim.epochs or epoch % cfg.checkpoint_every == 0
        state = _state(epoch, cfg, model, opt, sched, gen, run_identity, best_val) \
            if due and not diverged else None
        report(metrics, state)
        if diverged:
            _logger.warning("trial diverged at epoch %d (train/loss=%s); stopping", epoch,
                            metrics["train/loss"])
            break
    return metrics


def run_epoch(
    model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
    splits: Splits, cfg: TrialConfig, gen: torch.Generator, epoch: int,
    best_val: float = -math.inf, step: TrainStep | None = None,
) -> dict[str, float]:
    """Train one epoch, evaluate on validation and (per ``cfg.test_eval``, against the trial's
    ``best_val`` so far) on test, and name the numbers. Compilation (in the first epoch of a
    compiled trial) is timed as ``compile_time_s``, apart from ``epoch_time_s``."""
    step = step or TrainStep(model, splits, cfg)
    lr = opt.param_groups[0]["lr"]
    t0 = time.perf_counter()
    loss, acc, n = train_epoch(model, opt, sched, splits, cfg, gen, step)
    compile_s = step.take_compile_time()
    seconds = time.perf_counter() - t0 - compile_s  # train_epoch ends in .item(): synced
    val_loss, val_acc = evaluate(model, splits, splits.val_x, splits.val_y, cfg)
    metrics = {
        "epoch": float(epoch), "train/loss": loss, "train/acc": acc,
        "val/loss": val_loss, "val/acc": val_acc,
        "lr": lr, "epoch_time_s": seconds, "images_per_s": n / seconds,
        "diverged": float(not math.isfinite(loss)), "compile_time_s": compile_s,
    }
    if cfg.test_eval == "every_epoch" or val_acc > best_val or epoch == cfg.optim.epochs:
        metrics["test/acc"] = evaluate(model, splits, splits.test_x, splits.test_y, cfg)[1]
    return metrics


def train_epoch(
    model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
    splits: Splits, cfg: TrialConfig, gen: torch.Generator, step: TrainStep | None = None,
) -> tuple[float, float, int]:
    """Mean train loss, accuracy and image count; one host sync at the end, none per step.
    ``step`` (default: a new ``TrainStep`` of ``cfg``) is kept across epochs by ``fit``."""
    model.train()
    step = step or TrainStep(model, splits, cfg)
    device = splits.train_x.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for xb, yb in train_batches(splits, cfg.optim.batch_size, gen):
        opt.zero_grad(set_to_none=True)
        loss, out = step(xb, yb)
        if cfg.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        sched.step()
        loss_sum += loss.detach() * len(yb)
        correct += (out.argmax(1) == yb).sum()
        n += len(yb)
    return loss_sum.item() / n, correct.item() / n, n


@torch.inference_mode()
def evaluate(
    model: nn.Module, splits: Splits, x: torch.Tensor, y: torch.Tensor, cfg: TrialConfig
) -> tuple[float, float]:
    """Mean loss and accuracy on (x, y)."""
    model.eval()
    cuda = x.device.type == "cuda"
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for xb, yb, real in eval_batches(x, y, EVAL_BATCH.get(x.device.type, EVAL_BATCH["cpu"])):
        with autocast(x.device):
            out = model(to_input(xb, splits.mean, splits.std, cfg.image_size,
                                 channels_last=cuda)).float()
        # Every batch has one shape; the padding rows of the last one are computed, not counted.
        loss_sum += F.cross_entropy(out[:real], yb[:real], reduction="sum")
        correct += (out[:real].argmax(1) == yb[:real]).sum()
    return loss_sum.item() / len(y), correct.item() / len(y)


def limit_gpu_memory(device: torch.device, fraction: float) -> None:
    """Cap this process's CUDA allocations at ``fraction`` of the card (a fractional-GPU trial)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"gpu_fraction: must be in (0, 1], got {fraction!r}")
    if device.type == "cuda" and fraction < 1:
        torch.cuda.set_per_process_memory_fraction(fraction, device)


def make_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW, weight decay on every parameter (as in the paper's recipes).

    Fused (one kernel for all parameters instead of several per tensor) where torch has the
    kernel for the parameters' device (CUDA and CPU in torch 2.14), the multi-tensor one elsewhere.
    """
    params = list(model.parameters())
    if cfg.name == "sgd":
        cls, kw = torch.optim.SGD, {"momentum": cfg.momentum}
    else:
        cls, kw = torch.optim.AdamW, {}
    try:
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True, **kw)
    except RuntimeError as e:  # "`fused=True` requires ... supported devices"
        _logger.info("%s: no fused kernel here (%s); using the default", cls.__name__, e)
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)


def make_schedule(
    cfg: OptimConfig, opt: torch.optim.Optimizer, per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step linear warm-up, then cosine to zero at the last step (or constant)."""
    total = cfg.epochs * per_epoch
    warm = min(int(cfg.warmup_epochs * per_epoch), total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _state(
    epoch: int, cfg: TrialConfig, model: nn.Module, opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator,
    run_identity: dict[str, str] | None, best_val: float,
) -> dict[str, Any]:
    """Everything needed to continue at ``epoch + 1`` as if never stopped."""
    rng = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "epoch": epoch, "config": cfg.to_flat(), "run": run_identity or {},
        "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "rng": rng, "best_val": best_val,
    }


def _restore(
    state: dict[str, Any], cfg: TrialConfig, model: nn.Module, opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator,
) -> int:
    """Load a ``_state`` dict; returns its epoch."""
    changed = {k for k, v in cfg.to_flat().items() if state["config"].get(k) != v}
    if changed - {"device", "compile"}:  # where it runs and how, not what it computes
        raise ValueError(f"checkpoint was written with a different config: {sorted(changed)}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    gen.set_state(state["rng"]["data"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    _logger.info("resuming after epoch %d (run %s)", state["epoch"], state.get("run"))
    return int(state["epoch"])
