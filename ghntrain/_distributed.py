"""`python -m ghn train --num-workers N`: the same training, data-parallel through Ray Train.

Each worker runs the in-process trainer inside the process group TorchTrainer sets up (gloo on
CPU, NCCL with ``--use-gpu``); ``Trainer.step`` averages gradients across it, worker 0 logs,
writes the checkpoints and, with ``--tracking-uri``, the MLflow run. At the end the workers
compare their GHN parameters exactly and fail the run if they differ.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ghntrain._data import load_images
from ghntrain._tracking import training_callbacks
from ghntrain._train import TrainConfig, Trainer, read_checkpoint, train


def train_on_ray(loop_config: dict[str, Any], *, num_workers: int, use_gpu: bool) -> None:
    """Run ``_worker`` on ``num_workers`` Ray Train workers (Ray starts locally if needed, and
    stops again at the end: a caller's own Ray, or a cluster's at ``RAY_ADDRESS``, is left as
    it was).

    A Ray started here listens on 127.0.0.1 only, as a local sweep's (``sweeps/_loopback.py``,
    which this lower package cannot import): Ray reads the switch when it is imported.
    """
    local = not os.environ.get("RAY_ADDRESS")
    if local:  # too late if Ray was imported already (it then listens where it chose)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = Path(loop_config["out"]).resolve()
    trainer = TorchTrainer(
        _worker, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name=f"ghn-train-{out.stem}",
                             storage_path=str(out.parent / "ray_train")),
    )
    started_here = not ray.is_initialized()
    if started_here and local:  # a Ray of its own, never one `ray start` left (ray.init joins)
        ray.init(address="local", include_dashboard=False)
    try:
        trainer.fit()
    finally:
        if started_here and ray.is_initialized():
            ray.shutdown()


def _worker(config: dict[str, Any]) -> None:
    import ray.train.torch

    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in config["train_config"].items()})
    images = load_images(config["data"], tuple(config["classes"]), "train",
                         config["train_per_class"])
    trainer = Trainer(cfg, images, init=config["init"], device=ray.train.torch.get_device())
    out = Path(config["out"])
    if config["resume"]:
        trainer.restore(read_checkpoint(out))
    trainer.meta.setdefault("data", config["data"])
    on_log, on_ckpt, finish = training_callbacks(  # worker 0 logs for the run
        trainer, config["tracking_uri"] if trainer.rank == 0 else None, config["experiment"],
        run_name=out.stem, data=config["data"], init=config["init"])
    try:
        train(trainer, out, on_log=on_log, on_checkpoint=on_ckpt)
    finally:
        finish()
    check_identical(trainer.ghn)


def check_identical(module: torch.nn.Module) -> None:
    """Raise unless every worker of the process group holds exactly the same parameters."""
    flat = torch.cat([p.detach().flatten() for p in module.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, flat)
    differ = [r for r, t in enumerate(gathered) if not torch.equal(t, gathered[0])]
    if differ:
        raise RuntimeError(f"data-parallel GHN workers diverged: workers {differ} hold other "
                           "parameters than worker 0")
