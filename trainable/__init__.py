"""One trial: data on the device, GHN / random / pretrained init, post-processing, training loop.

    from trainable import get_recipe, train
    metrics = train(get_recipe("smoke", **{"data.dataset": "/path/to/cifar10-jpeg"}))

Under Ray Tune, use ``trainable.run_trial`` (a function trainable taking a flat dotted config), and
for a local storage path ``trainable.local_storage_filesystem()`` as ``RunConfig``'s
``storage_filesystem``: the trial's checkpoints are then linked into storage, not copied.
"""

from typing import Any

from trainable._config import (
    COMPILE_MODES,
    RECIPES,
    TEST_EVALS,
    DataConfig,
    OptimConfig,
    TrialConfig,
    get_recipe,
)
from trainable._data import (
    PAD,
    Splits,
    crop_flip,
    dataset_classes,
    load_splits,
    pad_for_crop,
    prepare_data,
    resolve_classes,
    to_input,
)
from trainable._loop import fit, train
from trainable._model import ghn_tags
from trainable._provenance import provenance

__all__ = [
    "COMPILE_MODES",
    "PAD",
    "RECIPES",
    "TEST_EVALS",
    "DataConfig",
    "OptimConfig",
    "Splits",
    "TrialConfig",
    "crop_flip",
    "dataset_classes",
    "fit",
    "get_recipe",
    "ghn_tags",
    "load_splits",
    "local_storage_filesystem",
    "pad_for_crop",
    "prepare_data",
    "provenance",
    "resolve_classes",
    "run_trial",
    "to_input",
    "train",
]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `import trainable` (and plain `train`) never needs Ray or pyarrow.
    if name == "run_trial":
        from trainable._ray import run_trial

        return run_trial
    if name == "local_storage_filesystem":
        from trainable._storage import local_storage_filesystem

        return local_storage_filesystem
    raise AttributeError(f"module 'trainable' has no attribute {name!r}")
