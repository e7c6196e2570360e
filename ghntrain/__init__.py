"""Training GHN-2s and GHN-3s on sampled architectures, and measuring them, on top of ``ghn``
(the model, prediction, checkpoints) and ``trainable`` (the trials' data path).

    from ghntrain import TrainConfig, Trainer, load_images, train
    trainer = Trainer(TrainConfig(steps=100), load_images("cifar10", (), "train", 100))
    train(trainer, Path("ghn.pt"))

Data-parallel through Ray Train with ``train_on_ray``, tracked in MLflow with
``training_callbacks``; the command line is `python -m ghntrain train|evaluate` (also offered
by `python -m ghn`).
"""

from typing import Any

from ghntrain._archs import FAMILIES, ArchSampler, ArchSpec, build, sample_spec, torchvision_model
from ghntrain._data import load_images
from ghntrain._distributed import check_identical, train_on_ray
from ghntrain._evaluate import (
    ArchResult,
    accuracy,
    evaluate,
    format_table,
    held_out_archs,
    named_archs,
)
from ghntrain._tracking import log_evaluation, training_callbacks
from ghntrain._train import (
    TrainConfig,
    Trainer,
    TrainImages,
    ghn_checkpoint_config,
    prepare_arch,
    read_checkpoint,
    train,
)

__all__ = [
    "FAMILIES",
    "ArchResult",
    "ArchSampler",
    "ArchSpec",
    "TrainConfig",
    "TrainImages",
    "Trainer",
    "accuracy",
    "add_commands",
    "build",
    "check_identical",
    "evaluate",
    "format_table",
    "ghn_checkpoint_config",
    "held_out_archs",
    "load_images",
    "log_evaluation",
    "main",
    "named_archs",
    "prepare_arch",
    "read_checkpoint",
    "sample_spec",
    "torchvision_model",
    "train",
    "train_on_ray",
    "training_callbacks",
]


def __getattr__(name: str) -> Any:
    # The command line is imported on demand only: a Ray Train worker, which imports
    # ghntrain._distributed and so this package, loads library modules and no CLI.
    if name in ("add_commands", "main"):
        from ghntrain import _cli

        return getattr(_cli, name)
    raise AttributeError(f"module 'ghntrain' has no attribute {name!r}")
