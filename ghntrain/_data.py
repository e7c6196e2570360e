"""Images for GHN training and evaluation, through trainable's cached decoder: a GHN learns
from, and is measured on, the images exactly as the trials decode and normalise them."""

from __future__ import annotations

import torch

from ghntrain._train import TrainImages
from trainable import PAD, DataConfig, load_splits


def load_images(data: str, classes: tuple[str | int, ...], split: str,
                per_class: int | None) -> TrainImages:
    """One split (``train`` or ``test``) of ``data`` (cifar10, cifar100 or an ImageFolder tree),
    ``per_class`` images of each of ``classes`` (empty: all; None: every image), on the CPU.
    The normalisation is always the training images', as trials normalise."""
    cfg = DataConfig(dataset=data, classes=classes, n_shots=per_class if split == "train" else 1,
                     val_per_class=1, test_per_class=per_class if split == "test" else 1)
    s = load_splits(cfg, torch.device("cpu"))
    names = list(s.classes)
    if split == "train":  # stored padded for the crop; the trainer pads its own copy
        return TrainImages(s.train_x[:, PAD:-PAD, PAD:-PAD].contiguous(), s.train_y, s.mean,
                           s.std, names)
    return TrainImages(s.test_x, s.test_y, s.mean, s.std, names)
